"""Data-parallel training on 2 CPU processes (torchrun, gloo) equals one process with the same global batch."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from onebit.cli.main import main as cli
from onebit.train import load_checkpoint
from onebit.train.distributed import strip_nproc

HERE = Path(__file__).resolve().parent
SRC = str(HERE.parent / "src")

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")


def _env():
    # PYTHONFAULTHANDLER: a rank that aborts prints the Python stack it died in
    return dict(os.environ, PYTHONPATH=os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")]), OMP_NUM_THREADS="1",
                PYTHONFAULTHANDLER="1")


@pytest.fixture
def tiny_mnist(make_tiny_mnist):
    """A learnable 10-class 'MNIST' of 300 + 60 images (tests/conftest.py)."""
    return make_tiny_mnist(300, 60)


def test_ddp_two_processes_match_one_process(tiny_mnist, tmp_path):
    """`onebit train --nproc 2` vs one process, global batch 50 (25 per rank).

    BatchNorm uses the global batch's statistics (sync BN on the CPU), so the only differences are
    float summation orders: weights agree to ~1e-4 (latent weights; a sign that flips on such a
    difference would show as a larger gap, and is what the tolerance allows for), losses to 1e-4,
    accuracies to one image. Dropout is off: its masks come from per-rank RNG streams.
    """
    args = ["train", "bnn-mlp", "--data", "mnist", "--data-root", str(tiny_mnist), "--epochs", "2",
            "--batch-size", "50", "--val-size", "50", "--set", "model.hidden=32", "--set", "model.dropout=0",
            "--set", "model.input_dropout=0", "--no-progress", "--threads", "1"]
    two, one = tmp_path / "two", tmp_path / "one"
    p = subprocess.run([sys.executable, "-m", "onebit.cli.main", *args, "--out", str(two), "--nproc", "2"],
                       env=_env(), capture_output=True, text=True, timeout=600)  # a loaded machine, not a hang
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.count("done:") == 1  # rank 0 alone reports
    assert cli([*args, "--out", str(one)]) == 0

    ra, rb = (list(csv.DictReader(open(d / "metrics.csv"))) for d in (one, two))
    assert [r["epoch"] for r in rb] == ["0", "1"]
    for a, b in zip(ra, rb):
        assert a["lr"] == b["lr"]
        for k in ("train_loss", "val_loss", "test_loss"):
            assert abs(float(a[k]) - float(b[k])) <= 1e-4 * max(1.0, abs(float(a[k]))), (k, a[k], b[k])
        assert abs(float(a["train_acc"]) - float(b["train_acc"])) <= 1 / 250 + 1e-9
        for k in ("val_acc", "test_acc"):
            assert abs(float(a[k]) - float(b[k])) <= 1 / 50 + 1e-9, (k, a[k], b[k])
    ta, _ = load_checkpoint(one / "last.safetensors")
    tb, mb = load_checkpoint(two / "last.safetensors")
    assert mb["world_size"] == 2 and "rng.torch.rank1" in tb  # rank 1's RNG travels in rank 0's file
    for k, v in ta.items():
        if k.startswith("model.") and v.is_floating_point():
            assert float((v - tb[k]).abs().max()) <= 1e-3, k
    assert sorted(x.name for x in two.iterdir()) == sorted(x.name for x in one.iterdir())


def test_sync_bn_bonn_centers_shift_adamax_and_divergence_check(tmp_path):
    """Global-batch BN (PyTorch and shift-based, forward, backward, running stats), BONN's center
    update and losses, shift-AdaMax and clipping under DDP equal one process; the per-epoch
    consistency check catches a rank that diverged (tests/dist_worker.py)."""
    ok = tmp_path / "ok"
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                        str(HERE / "dist_worker.py"), str(ok)], env=_env(), capture_output=True, text=True,
                       timeout=600)  # a loaded machine, not a hang
    assert p.returncode == 0, (p.stdout + p.stderr)[-4000:]
    assert ok.read_text() == "OK"


def test_nproc_argument_handling(monkeypatch):
    assert strip_nproc(["train", "m", "--nproc", "2", "--epochs", "1", "--nproc=3"]) == ["train", "m", "--epochs", "1"]
    assert cli(["train", "bnn-mlp", "--nproc", "0"]) == 2
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert cli(["train", "bnn-mlp", "--nproc", "2"]) == 2  # already inside torchrun


def test_teardown_meets_at_a_barrier_only_after_a_finished_run(monkeypatch):
    """A finished run's ranks shut the group down together (a rank leaving early could abort its
    peer's gloo threads at exit); after an error no barrier, since the others may never come."""
    from onebit.train import distributed as distrib

    calls = []
    monkeypatch.setattr(distrib.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(distrib.dist, "barrier", lambda: calls.append("barrier"))
    monkeypatch.setattr(distrib.dist, "destroy_process_group", lambda: calls.append("destroy"))
    distrib.teardown(distrib.Dist(0, 2, owns_group=True), finished=True)
    assert calls == ["barrier", "destroy"]
    calls.clear()
    distrib.teardown(distrib.Dist(0, 2, owns_group=True), finished=False)
    assert calls == ["destroy"]
    calls.clear()
    distrib.teardown(distrib.Dist(0, 2, owns_group=False), finished=True)  # a group the caller made
    assert calls == []


def test_trainer_tells_teardown_whether_the_run_finished(tiny_mnist, tmp_path, monkeypatch):
    from onebit.train import trainer

    seen = []
    real = trainer.distrib.teardown
    monkeypatch.setattr(trainer.distrib, "teardown", lambda d, finished=False: (seen.append(finished), real(d)))
    args = ["train", "bnn-mlp", "--data", "mnist", "--data-root", str(tiny_mnist), "--epochs", "1",
            "--set", "model.hidden=16", "--val-size", "50", "--no-progress"]
    assert cli([*args, "--out", str(tmp_path / "a")]) == 0
    assert cli([*args, "--out", str(tmp_path / "a")]) == 2  # the folder holds a run: an error
    assert seen == [True, False]


def test_a_torchrun_worker_ends_without_the_exit_teardown(monkeypatch):
    """After the group is destroyed a worker leaves by os._exit (gloo could abort a finished rank
    in the interpreter's exit teardown); one process, or a group still open, exits the usual way."""
    from onebit.train import distributed as distrib

    ended = []
    monkeypatch.setattr(distrib.os, "_exit", lambda code: ended.append(code))
    monkeypatch.setattr(distrib.logging, "shutdown", lambda: None)  # the test process keeps its logging
    monkeypatch.setattr(distrib.dist, "is_initialized", lambda: False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    distrib.end_worker_process(0)
    assert ended == []
    monkeypatch.setenv("WORLD_SIZE", "2")
    for rc, code in ((0, 0), (2, 2), (None, 0), ("x", 1)):
        distrib.end_worker_process(rc)
        assert ended.pop() == code
    monkeypatch.setattr(distrib.dist, "is_initialized", lambda: True)
    distrib.end_worker_process(0)
    assert ended == []
    monkeypatch.setenv("WORLD_SIZE", "two")
    monkeypatch.setattr(distrib.dist, "is_initialized", lambda: False)
    distrib.end_worker_process(0)
    assert ended == []


def test_the_console_entry_point_ends_a_torchrun_worker_early(monkeypatch):
    """`onebit …` and `python -m onebit.cli.main …` exit with main's code; under torchrun
    (WORLD_SIZE set) through end_worker_process (so `torchrun --no-python onebit train` is covered)."""
    from onebit.cli import main as cli_main
    from onebit.train import distributed as distrib

    ended = []
    monkeypatch.setattr(distrib, "end_worker_process", lambda rc: ended.append(rc))
    monkeypatch.setattr(sys, "argv", ["onebit", "models"])
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(SystemExit) as e:
        cli_main.console()
    assert e.value.code == 0 and ended == []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(sys, "argv", ["onebit", "no-such-command"])
    with pytest.raises(SystemExit) as e:
        cli_main.console()
    assert e.value.code == 2 and ended == [2]


@pytest.mark.parametrize("extra, msg", [
    (["--batch-size", "25", "--nproc", "2"], "batch_size 25 (the global batch) must be divisible by the 2 processes"),
    (["--loss", "foo", "--nproc", "2"], "unknown loss 'foo'"),
    (["--optimizer", "foo", "--nproc", "2"], "unknown optimizer 'foo'"),
    (["--set", "model.binary=no", "--nproc", "2"], "binary must be true or false"),
    (["--resume", "--nproc", "2"], "--resume: no checkpoint in"),
])
def test_nproc_checks_the_run_once_before_starting_workers(tiny_mnist, tmp_path, monkeypatch, extra, msg, cli_error):
    """A bad setting under --nproc is one error line from the launching process, not one per
    worker followed by torchrun's traceback."""
    from onebit.train import distributed as distrib

    launched = []
    monkeypatch.setattr(distrib, "launch", lambda n, argv: launched.append((n, argv)) or 0)
    args = ["train", "bnn-mlp", "--data", "mnist", "--data-root", str(tiny_mnist), "--epochs", "1",
            "--out", str(tmp_path / "r")]
    assert msg in cli_error([*args, *extra])
    assert launched == [] and not (tmp_path / "r").exists()
    assert cli([*args, "--nproc", "2"]) == 0  # good settings: the workers are started
    assert [n for n, _ in launched] == [2]
