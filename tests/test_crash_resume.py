"""Crash-safe training: step checkpoints, SIGKILL mid-epoch, exact resume (issue 7)."""

import contextlib
import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from onebit.cli.main import main as cli
from onebit.data.loaders import BatchLoader
from onebit.train import TrainingError, load_checkpoint, train
from onebit.train.snapshots import RunLock, candidates, stopped_before_first_checkpoint

SRC = str(Path(__file__).resolve().parents[1] / "src")


@pytest.fixture
def tiny_mnist(make_tiny_mnist):
    """A learnable 10-class 'MNIST' of 300 + 60 images (tests/conftest.py)."""
    return make_tiny_mnist(300, 60)


def _args(data_root, out, *extra):
    # dropout on: the resumed run must also restore the RNG stream exactly
    return ["train", "bnn-mlp", "--data", "mnist", "--data-root", str(data_root), "--epochs", "3",
            "--batch-size", "25", "--val-size", "50", "--set", "model.hidden=32", "--set", "model.input_dropout=0.2",
            "--set", "model.dropout=0.3", "--out", str(out), "--no-progress", "--threads", "1", *extra]


def _rows(path, drop=("epoch_s", "wall_s")):
    return [{k: v for k, v in r.items() if k not in drop} for r in csv.DictReader(open(path))]


def _assert_same_run(a: Path, b: Path) -> None:
    ta, ma = load_checkpoint(a / "last.safetensors")
    tb, mb = load_checkpoint(b / "last.safetensors")
    assert ta.keys() == tb.keys()
    for k in ta:
        assert torch.equal(ta[k], tb[k]), k
    assert ma["epoch"] == mb["epoch"] == 2
    assert _rows(a / "metrics.csv") == _rows(b / "metrics.csv")
    assert (a / "layers.csv").read_text() == (b / "layers.csv").read_text()
    assert json.loads((a / "histograms.json").read_text()) == json.loads((b / "histograms.json").read_text())


# The killed process blocks when it reaches batch 7 of epoch 1 (global step 17): its newest step
# checkpoint is then e1-s5 (checkpoints every 3 global steps; 10 steps per epoch), so the resume
# redoes two steps of lost work.
_KILLED = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from onebit.data.loaders import BatchLoader
    marker = Path(sys.argv[1])
    orig = BatchLoader.__iter__
    def slow(self):
        for b, batch in enumerate(orig(self), start=self.start_batch):
            if self.shuffle and self.epoch == 1 and b == 7:
                marker.write_text("stuck")
                time.sleep(600)
            yield batch
    BatchLoader.__iter__ = slow
    from onebit.cli.main import main
    sys.exit(main(sys.argv[2:]))
""")


def test_sigkill_mid_epoch_then_resume_equals_uninterrupted(tiny_mnist, tmp_path, caplog):
    t0 = time.time()
    marker, killed, ref = tmp_path / "marker", tmp_path / "killed", tmp_path / "ref"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")]), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-c", _KILLED, str(marker),
                             *_args(tiny_mnist, killed, "--ckpt-every-steps", "3", "--keep-ckpts", "2")],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        while not marker.exists():
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            # a hang guard, generous for a loaded machine (a fresh interpreter imports torch first)
            assert time.time() - t0 < 300, "the training subprocess did not reach epoch 1"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
    # killed mid-epoch 1: epoch 0 finished, the newest checkpoint is the step checkpoint e1-s5
    steps = sorted(p.name for p in (killed / "steps").iterdir())
    assert steps == ["e00001-s00000002.safetensors", "e00001-s00000005.safetensors"]  # only the last 2 kept
    newest = candidates(killed)[0]
    assert (newest.kind, newest.epoch, newest.step) == ("step", 1, 5)
    assert [r["epoch"] for r in _rows(killed / "metrics.csv")] == ["0"]

    with caplog.at_level("INFO", logger="onebit"):
        assert cli(_args(tiny_mnist, killed, "--resume", "--ckpt-every-steps", "3", "--keep-ckpts", "2")) == 0
    resumed = [r.getMessage() for r in caplog.records if r.getMessage().startswith("resumed ")]
    assert resumed == [f"resumed {killed} at epoch 2, step 5 (from e00001-s00000005.safetensors)"]  # the newest
    assert cli(_args(tiny_mnist, ref)) == 0
    _assert_same_run(ref, killed)


class _Crash(Exception):
    pass


@contextlib.contextmanager
def _crash_at(epoch: int, batch: int):
    """Make training raise when it fetches ``batch`` of ``epoch`` (an in-process stand-in for a kill)."""
    orig = BatchLoader.__iter__

    def it(self):
        for b, item in enumerate(orig(self), start=self.start_batch):
            if self.shuffle and self.epoch == epoch and b == batch:
                raise _Crash
            yield item

    BatchLoader.__iter__ = it
    try:
        yield
    finally:
        BatchLoader.__iter__ = orig


def _recipe():
    from onebit.methods import Recipe

    return Recipe(model="bnn-mlp", data="mnist", model_kwargs={"hidden": 32, "input_dropout": 0.2, "dropout": 0.3},
                  epochs=2, batch_size=25, val_size=50, lr=3e-3, lr_schedule="exp", lr_final=3e-5,
                  glorot_lr_scale=True, optimizer="shift_adamax")


def test_damaged_newest_checkpoint_falls_back_and_stale_temp_files_go(tiny_mnist, tmp_path, caplog):
    r = _recipe()
    train(r, tmp_path / "ref", data_root=str(tiny_mnist), progress=False)
    run = tmp_path / "run"
    with _crash_at(1, 8), pytest.raises(_Crash):
        train(r, run, data_root=str(tiny_mnist), progress=False, ckpt_every_steps=2, keep_ckpts=3)
    steps = sorted((run / "steps").iterdir())
    assert [p.name[:13] for p in steps] == ["e00001-s00000", "e00001-s00000", "e00001-s00000"]
    data = steps[-1].read_bytes()
    steps[-1].write_bytes(data[: len(data) // 3])  # the newest file is damaged (e.g. a disk error)
    (run / ".last.safetensors.abc.tmp").write_bytes(b"half a file")  # what a kill during a write leaves
    with pytest.raises(TrainingError, match="already holds a run"):
        train(r, run, data_root=str(tiny_mnist), progress=False)
    with caplog.at_level("INFO", logger="onebit"):
        train(r, run, data_root=str(tiny_mnist), progress=False, resume=True, ckpt_every_steps=2, keep_ckpts=3)
    msgs = [r.getMessage() for r in caplog.records]
    assert any(m.startswith(f"cannot resume from {steps[-1]}") and "trying an older checkpoint" in m for m in msgs)
    assert [m for m in msgs if m.startswith("resumed ")][-1].endswith(f"(from {steps[-2].name})")  # the next newest
    assert not (run / ".last.safetensors.abc.tmp").exists()
    ta, _ = load_checkpoint(tmp_path / "ref" / "last.safetensors")
    tb, _ = load_checkpoint(run / "last.safetensors")
    for k in ta:
        assert torch.equal(ta[k], tb[k]), k
    assert _rows(tmp_path / "ref" / "metrics.csv") == _rows(run / "metrics.csv")


def test_epoch_end_resume_keeps_the_layer_statistics_exact(tiny_mnist, tmp_path):
    r = _recipe()
    train(r, tmp_path / "ref", data_root=str(tiny_mnist), progress=False)
    train(r, tmp_path / "run", data_root=str(tiny_mnist), progress=False, stop_after=1)
    train(r, tmp_path / "run", data_root=str(tiny_mnist), progress=False, resume=True)
    for name in ("layers.csv", "histograms.json"):
        assert (tmp_path / "ref" / name).read_text() == (tmp_path / "run" / name).read_text(), name


def test_resume_refuses_when_no_checkpoint_is_readable(tiny_mnist, tmp_path):
    run = tmp_path / "run"
    with _crash_at(0, 5), pytest.raises(_Crash):
        train(_recipe(), run, data_root=str(tiny_mnist), progress=False, ckpt_every_steps=2)
    for p in (run / "steps").iterdir():
        p.write_bytes(b"\0" * 16)
    with pytest.raises(TrainingError, match="no checkpoint"):
        train(_recipe(), run, data_root=str(tiny_mnist), progress=False, resume=True)


@pytest.mark.parametrize("bad, msg", [({"ckpt_every_steps": -1}, "ckpt_every_steps"),
                                      ({"keep_ckpts": 0}, "keep_ckpts"), ({"threads": 0}, "threads")])
def test_run_options_are_checked(tmp_path, bad, msg):
    with pytest.raises(TrainingError, match=msg):
        train(_recipe(), tmp_path / "x", **bad)


def test_a_run_stopped_before_its_first_checkpoint_does_not_block_its_folder(tiny_mnist, tmp_path, monkeypatch,
                                                                             caplog, capsys, cli_error):
    """Ctrl-C in the first epoch leaves recipe.json and the CSV headers, no result: the same command
    starts the run again there, and --resume says so instead of only "no checkpoint"."""
    out = tmp_path / "run"
    orig = BatchLoader.__iter__

    def interrupted(self):
        yield next(orig(self))
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(BatchLoader, "__iter__", interrupted)
        assert cli(_args(tiny_mnist, out)) == 130
    assert capsys.readouterr().err.endswith("onebit: interrupted\n")
    assert sorted(p.name for p in out.iterdir()) == [".onebit-run.lock", "layers.csv", "metrics.csv", "recipe.json"]
    err = cli_error(_args(tiny_mnist, out, "--resume"))
    assert "stopped before its first checkpoint; the same command without --resume starts it again" in err
    # a run still in its first epoch looks the same, but holds the folder's lock: not taken over
    live = RunLock(out)
    live.acquire()
    try:
        err = cli_error(_args(tiny_mnist, out))
        assert f"{out} is in use by another running `onebit train`" in err
    finally:
        live.release()
    assert (out / "metrics.csv").read_text().count("\n") == 1  # untouched
    with caplog.at_level("INFO", logger="onebit"):
        assert cli(_args(tiny_mnist, out)) == 0
    assert any("holds a run stopped before its first checkpoint" in r.getMessage() for r in caplog.records)
    assert [r["epoch"] for r in _rows(out / "metrics.csv")] == ["0", "1", "2"]
    # a folder with a result (an epoch's row, or a checkpoint) still refuses a fresh run
    err = cli_error(_args(tiny_mnist, out))
    assert "already holds a run" in err and "nothing was overwritten" in err
    (out / "last.safetensors").unlink()
    (out / "best.safetensors").unlink()
    err = cli_error(_args(tiny_mnist, out))
    assert "already holds a run (metrics.csv, recipe.json, layers.csv, histograms.json)" in err


def test_resuming_a_finished_run_says_there_is_nothing_left(tiny_mnist, tmp_path, caplog):
    args = [a if a != "3" else "1" for a in _args(tiny_mnist, tmp_path / "r")]  # a 1-epoch run
    assert cli(args) == 0
    with caplog.at_level("INFO", logger="onebit"):
        assert cli([*args, "--resume"]) == 0
    said = [r.getMessage() for r in caplog.records]
    assert f"{tmp_path / 'r'} has finished all 1 epochs: nothing left to train (a longer run is a new run; " \
           "--init-from its checkpoint)" in said
    assert not any(m.startswith("resumed ") for m in said)
    assert [r["epoch"] for r in _rows(tmp_path / "r" / "metrics.csv")] == ["0"]


def test_only_a_folder_with_exactly_a_run_start_counts_as_stopped_before_its_first_checkpoint(tmp_path):
    (tmp_path / "recipe.json").write_text('{"model": "bnn-mlp"}')
    (tmp_path / "metrics.csv").write_text("epoch,lr\n")
    assert stopped_before_first_checkpoint(tmp_path)
    (tmp_path / "layers.csv").write_text("epoch,layer\n0,a\n")  # a row of results
    assert not stopped_before_first_checkpoint(tmp_path)
    (tmp_path / "layers.csv").unlink()
    (tmp_path / "histograms.json").write_text("{}")
    assert not stopped_before_first_checkpoint(tmp_path)
    (tmp_path / "histograms.json").unlink()
    (tmp_path / "recipe.json").write_text("a user's notes")  # not a recipe
    assert not stopped_before_first_checkpoint(tmp_path)
    (tmp_path / "recipe.json").write_text('{"model": "bnn-mlp"}')
    (tmp_path / "metrics.csv").unlink()  # a lone recipe.json is no run start
    assert not stopped_before_first_checkpoint(tmp_path)


def test_a_second_run_into_a_folder_in_use_is_refused(tiny_mnist, tmp_path, cli_error):
    """The folder's lock refuses a --resume (or a fresh run) while another process trains there."""
    out = tmp_path / "r"
    args = [a if a != "3" else "1" for a in _args(tiny_mnist, out)]
    assert cli(args) == 0
    live = RunLock(out)
    live.acquire()
    try:
        assert f"{out} is in use by another running `onebit train`" in cli_error([*args, "--resume"])
    finally:
        live.release()
    assert cli([*args, "--resume"]) == 0  # released: the lock is free again
