"""The trainer, checkpoints and the CLI on a tiny data set written by the test."""

import csv
import json

import pytest
import torch

from onebit.cli.main import main as cli
from onebit.methods import Recipe, get_recipe
from onebit.train import CheckpointError, TrainingError, load_checkpoint, load_for_eval, train


@pytest.fixture
def tiny_mnist(make_tiny_mnist):
    """A learnable 10-class 'MNIST' of 300 + 60 images (tests/conftest.py)."""
    return make_tiny_mnist(300, 60)


def _recipe(**kw):
    base = dict(model="bnn-mlp", data="mnist", model_kwargs={"hidden": 32}, epochs=2, batch_size=25,
                val_size=50, lr=3e-3, lr_schedule="exp", lr_final=3e-5, glorot_lr_scale=True)
    base.update(kw)
    return Recipe(**base)


@pytest.mark.parametrize("field, value, msg", [("epochs", -5, "epochs must be >= 1"),
                                              ("lr", float("nan"), "lr must be a finite number"),
                                              ("optimizer", "adamw", "unknown optimizer 'adamw'")])
def test_a_recipe_changed_after_it_was_built_is_checked_again(tiny_mnist, tmp_path, field, value, msg):
    """Recipe fields are plain attributes: train() validates again, before anything is written
    (before, epochs=-5 wrote a run with a recipe.json no later load accepts, and lr=nan failed in torch)."""
    r = _recipe()
    setattr(r, field, value)
    with pytest.raises((ValueError, TrainingError), match=msg):
        train(r, tmp_path / "run", data_root=str(tiny_mnist), progress=False)
    assert not (tmp_path / "run").exists()
    with pytest.raises(TypeError, match="train\\(\\) takes a Recipe .* got str"):
        train("bnn-mlp", tmp_path / "run", progress=False)


def test_milestones_set_as_a_list_train(tiny_mnist, tmp_path):
    """recipe.json holds milestones as a list; setting the field so is what a user does."""
    r = _recipe(epochs=1, lr_schedule="step", milestones=(1,))
    r.milestones = [1]
    assert train(r, tmp_path / "run", data_root=str(tiny_mnist), progress=False).epochs_run == 1
    assert r.milestones == (1,)


def test_train_writes_checkpoints_metrics_and_learns(tiny_mnist, tmp_path):
    res = train(_recipe(epochs=4), tmp_path / "run", data_root=str(tiny_mnist), progress=False)
    out = tmp_path / "run"
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3]
    assert float(rows[-1]["test_acc"]) > 0.5  # the bands are easy; chance is 0.1
    assert json.loads((out / "recipe.json").read_text())["model"] == "bnn-mlp"
    tensors, meta = load_checkpoint(out / "last.safetensors")
    assert meta["epoch"] == 3 and any(k.startswith("optim.") for k in tensors)
    model, meta_b = load_for_eval(out / "best.safetensors")
    assert meta_b["epoch"] == res.best_epoch
    # latent binary weights stayed clipped
    assert max(float(m.weight.detach().abs().max()) for m in model if hasattr(m, "clip_weights") and m.clip_weights) <= 1


def _run_interrupted_and_not(r, root, tmp_path):
    """Train ``r`` once straight through (``a``) and once stopped after epoch 1 then resumed (``b``);
    assert both end with identical checkpoints."""
    train(r, tmp_path / "a", data_root=str(root), progress=False)
    train(r, tmp_path / "b", data_root=str(root), progress=False, stop_after=1)
    train(r, tmp_path / "b", data_root=str(root), progress=False, resume=True)
    ta, _ = load_checkpoint(tmp_path / "a" / "last.safetensors")
    tb, _ = load_checkpoint(tmp_path / "b" / "last.safetensors")
    assert ta.keys() == tb.keys()
    for k in ta:
        assert torch.equal(ta[k], tb[k]), k


def test_interrupted_then_resumed_equals_uninterrupted(tiny_mnist, tmp_path):
    r = _recipe(epochs=3, model_kwargs={"hidden": 32, "input_dropout": 0.2, "dropout": 0.5})
    _run_interrupted_and_not(r, tiny_mnist, tmp_path)
    rows_a = list(csv.DictReader(open(tmp_path / "a" / "metrics.csv")))
    rows_b = list(csv.DictReader(open(tmp_path / "b" / "metrics.csv")))
    drop = {"epoch_s", "wall_s"}
    assert [{k: v for k, v in r.items() if k not in drop} for r in rows_a] == \
           [{k: v for k, v in r.items() if k not in drop} for r in rows_b]


def test_refuses_to_overwrite_and_checks_resume(tiny_mnist, tmp_path):
    r = _recipe(epochs=1)
    train(r, tmp_path / "run", data_root=str(tiny_mnist), progress=False)
    before = (tmp_path / "run" / "last.safetensors").read_bytes()
    with pytest.raises(TrainingError, match="already holds a run"):
        train(r, tmp_path / "run", data_root=str(tiny_mnist), progress=False)
    assert (tmp_path / "run" / "last.safetensors").read_bytes() == before
    with pytest.raises(TrainingError, match=r"recipe .* differs .*\(lr: saved 0.003, requested 1.0\)"):
        train(r.replace(lr=1.0), tmp_path / "run", data_root=str(tiny_mnist), progress=False, resume=True)
    with pytest.raises(TrainingError, match="no checkpoint"):
        train(r, tmp_path / "empty", data_root=str(tiny_mnist), progress=False, resume=True)


def test_refuses_a_folder_with_any_run_file_left(tiny_mnist, tmp_path):
    """A user who deleted last.safetensors to save space still keeps best.safetensors and the logs."""
    r = _recipe(epochs=1)
    train(r, tmp_path / "run", data_root=str(tiny_mnist), progress=False)
    (tmp_path / "run" / "last.safetensors").unlink()
    kept = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir() if p.is_file()}
    assert "best.safetensors" in kept and "metrics.csv" in kept
    with pytest.raises(TrainingError, match=r"already holds a run \(best.safetensors, metrics.csv.*choose another --out"):
        train(r, tmp_path / "run", data_root=str(tiny_mnist), progress=False)
    assert {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir() if p.is_file()} == kept


@pytest.mark.parametrize("opt", ["adamax", "shift_adamax", "sgd"])
def test_other_optimizers_and_shift_bn_train(tiny_mnist, tmp_path, opt):
    r = _recipe(epochs=1, optimizer=opt, model_kwargs={"hidden": 16, "bn": "shift"}, lr_schedule="shift")
    res = train(r, tmp_path / opt, data_root=str(tiny_mnist), progress=False)
    assert res.epochs_run == 1


def test_bf16_autocast_trains(tiny_mnist, tmp_path):
    res = train(_recipe(epochs=1, bf16=True), tmp_path / "bf16", data_root=str(tiny_mnist), progress=False)
    assert 0 <= res.last_test_acc <= 1


@pytest.mark.parametrize("native", [False, True])
def test_bf16_on_a_cpu_without_native_bf16_warns(tiny_mnist, tmp_path, monkeypatch, caplog, native):
    """AVX2-only CPUs have no fast bf16 kernels in PyTorch: a bf16 run there says so (and still runs)."""
    from onebit.train import trainer

    monkeypatch.setattr(trainer, "cpu_has_native_bf16", lambda: native)
    with caplog.at_level("WARNING", logger="onebit.train"):
        train(_recipe(epochs=1, bf16=True), tmp_path / "bf16", data_root=str(tiny_mnist), progress=False)
    warned = [r.getMessage() for r in caplog.records if "--fp32" in r.getMessage()]
    assert bool(warned) == (not native)
    # fp32 runs and GPU runs never warn
    assert not trainer.warn_if_slow_bf16(False, "cpu") and not trainer.warn_if_slow_bf16(True, "cuda")


def test_native_bf16_check_agrees_with_the_cpu_capability():
    from onebit.train.trainer import cpu_has_native_bf16

    cap = torch.backends.cpu.get_cpu_capability()  # "AVX2", "AVX512", "DEFAULT", ...
    if cap in ("AVX2", "DEFAULT", "NO AVX"):
        assert cpu_has_native_bf16() is False
    elif cap == "AVX512":
        assert cpu_has_native_bf16() is True
    else:
        assert isinstance(cpu_has_native_bf16(), bool)


def test_corrupt_checkpoints_give_clear_errors(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_checkpoint(bad)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.safetensors")
    from safetensors.torch import save_file

    save_file({"a": torch.zeros(2)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(CheckpointError, match="not an onebit checkpoint"):
        load_checkpoint(tmp_path / "foreign.safetensors")


def test_truncated_checkpoint(tiny_mnist, tmp_path):
    train(_recipe(epochs=1), tmp_path / "run", data_root=str(tiny_mnist), progress=False)
    data = (tmp_path / "run" / "last.safetensors").read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError):
        load_checkpoint(cut)


def test_a_changed_bit_in_a_checkpoint_is_detected(tmp_path):
    """The header's SHA-256 of the state and the tensors: one flipped weight bit is a CheckpointError
    naming the file (before, the damaged weights loaded silently); an older checkpoint without the
    checksum still loads."""
    import hashlib

    from safetensors.torch import save as st_save

    from onebit.train.checkpoint import CHECKSUM_KEY, read_header, save_checkpoint

    model = torch.nn.Linear(5, 3)
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, model, {"epoch": 0})
    raw = path.read_bytes()
    header = read_header(raw)
    md = header["__metadata__"]
    n = int.from_bytes(raw[:8], "little")
    assert md[CHECKSUM_KEY] == hashlib.sha256(md["onebit"].encode() + raw[8 + n:]).hexdigest()
    tensors, _ = load_checkpoint(path)
    assert torch.equal(tensors["model.weight"], model.weight.detach())
    off = header["model.weight"]["data_offsets"][0]
    bad = bytearray(raw)
    bad[8 + n + off] ^= 1  # the lowest bit of the first weight: a plausible, silently wrong value
    (tmp_path / "bad.safetensors").write_bytes(bytes(bad))
    with pytest.raises(CheckpointError, match="bad.safetensors is damaged"):
        load_checkpoint(tmp_path / "bad.safetensors")
    old = st_save(dict(tensors), metadata={"onebit": md["onebit"]})  # as written before the checksum
    (tmp_path / "old.safetensors").write_bytes(old)
    assert torch.equal(load_checkpoint(tmp_path / "old.safetensors")[0]["model.weight"], model.weight.detach())


def test_recipes_are_data():
    r = get_recipe("bnn-mlp")
    assert r.loss == "sqhinge" and r.batch_size == 100 and r.glorot_lr_scale
    assert Recipe.from_dict(json.loads(r.to_json())) == r
    with pytest.raises(KeyError, match="unknown recipe field"):
        r.replace(learning_rate=1)
    with pytest.raises(KeyError, match="unknown model"):
        get_recipe("nope")


def test_bnn_recipes_are_the_reference_codes():
    """methods.md §1.10: the Torch7 MLP uses the (unrounded) Glorot scale with shift-AdaMax; the
    SVHN ConvNet has the Theano recipe (not the generic fallback)."""
    for name in ("bnn-mlp-shift", "bnn-mlp-exact"):
        r = get_recipe(name)
        assert r.glorot_lr_scale and not r.glorot_pow2 and r.lr == 2.0 ** -6, name
    r = get_recipe("bnn-convnet-svhn")
    assert (r.model, r.data, r.loss, r.optimizer, r.lr, r.lr_schedule, r.lr_final, r.epochs, r.batch_size,
            r.glorot_lr_scale) == ("bnn-convnet-svhn", "svhn", "sqhinge", "adam", 1e-3, "exp", 1e-6, 200, 50, True)


@pytest.mark.parametrize("nesterov, momentum", [(True, 0.9), (False, 0.9), (True, 0.0)])
def test_sgd_momentum_kind_is_a_recipe_field(nesterov, momentum):
    from onebit import models
    from onebit.train.trainer import build_optimizer

    r = Recipe(model="bnn-mlp", data="mnist", optimizer="sgd", momentum=momentum, nesterov=nesterov)
    opt = build_optimizer(r, models.create("bnn-mlp", hidden=8))
    assert all(g["nesterov"] is (nesterov and momentum > 0) and g["momentum"] == momentum for g in opt.param_groups)
    assert Recipe.from_dict({"model": "bnn-mlp", "data": "mnist"}).nesterov is True  # older recipe files


def test_cli_train_eval_models_data(tiny_mnist, tmp_path, capsys):
    out = tmp_path / "cli"
    rc = cli(["train", "bnn-mlp", "--data", "mnist", "--data-root", str(tiny_mnist), "--epochs", "1",
              "--batch-size", "50", "--val-size", "50", "--set", "model.hidden=16", "--out", str(out),
              "--no-progress"])
    assert rc == 0
    assert "done:" in capsys.readouterr().out
    rc = cli(["eval", str(out / "best.safetensors"), "--data-root", str(tiny_mnist)])
    assert rc == 0 and "test: accuracy" in capsys.readouterr().out
    assert cli(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:2] == ["name", "family"] and any(l.startswith("bnn-convnet ") for l in lines[1:])
    assert cli(["data", "--data-root", str(tiny_mnist)]) == 0
    mnist = [l for l in capsys.readouterr().out.splitlines() if l.split()[:1] == ["mnist"]]
    assert len(mnist) == 1 and str(tiny_mnist) in mnist[0]  # found in the --data-root given


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert cli(["train", "no-such-model"]) == 2
    assert "unknown model 'no-such-model'" in capsys.readouterr().err
    assert cli(["eval", str(tmp_path / "nope.safetensors")]) == 2
    assert "not found" in capsys.readouterr().err
    assert cli(["train", "bnn-mlp", "--data", "no-such-data"]) == 2
    assert "no-such-data" in capsys.readouterr().err


def test_cli_export_then_run_reproduces_accuracy(tiny_mnist, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli(["train", "bnn-mlp", "--data", "mnist", "--data-root", str(tiny_mnist), "--epochs", "2",
                "--batch-size", "25", "--val-size", "50", "--set", "model.hidden=48", "--out", str(out),
                "--no-progress"]) == 0
    capsys.readouterr()
    assert cli(["eval", str(out / "best.safetensors"), "--data-root", str(tiny_mnist)]) == 0
    torch_line = capsys.readouterr().out
    assert cli(["export", str(out / "best.safetensors"), "-o", str(tmp_path / "m.onebit")]) == 0
    assert cli(["export", str(out / "best.safetensors"), "-o", str(tmp_path / "m.onebit")]) == 2  # no overwrite
    capsys.readouterr()
    assert cli(["run", str(tmp_path / "m.onebit"), "--data-root", str(tiny_mnist)]) == 0
    engine_line = capsys.readouterr().out
    acc = lambda s: s.split("accuracy ")[1].split("%")[0]
    assert acc(engine_line) == acc(torch_line)


def test_device_option_is_checked_before_any_work(tiny_mnist, tmp_path):
    from onebit.train.trainer import TrainingError, resolve_device

    assert resolve_device(None) == torch.device("cpu")
    with pytest.raises(TrainingError, match="not supported|unknown device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(TrainingError, match="no CUDA GPU"):
            train(_recipe(epochs=1), tmp_path / "run", data_root=str(tiny_mnist), progress=False, device="cuda")
        assert not (tmp_path / "run").exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
def test_cuda_training_matches_metrics_shape_and_checkpoints_load_on_cpu(tiny_mnist, tmp_path):
    from onebit.train import load_for_eval

    res = train(_recipe(epochs=2), tmp_path / "run", data_root=str(tiny_mnist), progress=False, device="cuda")
    assert res.epochs_run == 2
    model, meta = load_for_eval(tmp_path / "run" / "best.safetensors")
    assert next(model.parameters()).device.type == "cpu"


def _conv_recipe(**kw):
    return _recipe(model="bireal-resnet18-cifar", model_kwargs={"width": 4}, loss="ce", optimizer="adam",
                   glorot_lr_scale=False, **kw)


def test_channels_last_trains_nhwc_and_resumes_exactly(tiny_mnist, tmp_path):
    from onebit.train import distributed as distrib
    from onebit.train.trainer import _Run

    r = _conv_recipe(epochs=2, channels_last=True)
    run = _Run(r, tmp_path / "probe", distrib.setup(), progress=False, data_root=str(tiny_mnist),
               ckpt_every_steps=0, keep_ckpts=1, tensorboard=False)
    convs = [m for m in run.model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    assert not convs[1].weight.is_contiguous()  # really NHWC (the stem has C_in = 1, the next conv 4)
    _run_interrupted_and_not(r, tiny_mnist, tmp_path)
    # the checkpoint holds plain contiguous tensors: a default-format model loads it
    model, _ = load_for_eval(tmp_path / "a" / "best.safetensors")
    assert all(m.weight.is_contiguous() for m in model.modules() if isinstance(m, torch.nn.Conv2d))


def test_channels_last_is_a_recipe_field_and_a_cli_flag(tiny_mnist, tmp_path):
    assert Recipe.from_dict({"model": "bnn-mlp", "data": "mnist"}).channels_last is False  # old recipe.json files
    assert cli(["train", "bireal-resnet18-cifar", "--data", "mnist", "--data-root", str(tiny_mnist), "--epochs", "1",
         "--limit", "100", "--val-size", "20", "--set", "model.width=4", "--channels-last", "--no-progress", "--out", str(tmp_path / "r")]) == 0
    assert json.loads((tmp_path / "r" / "recipe.json").read_text())["channels_last"] is True


def test_restored_optimizer_moments_take_the_channels_last_strides(tmp_path):
    """Checkpoints hold contiguous copies; on resume into a channels-last model each moment gets its
    parameter's strides (the values unchanged), so the optimizer never mixes layouts."""
    from onebit.train import save_checkpoint
    from onebit.train.checkpoint import restore

    conv = torch.nn.Conv2d(4, 6, 3)
    opt = torch.optim.Adam(conv.parameters())
    conv(torch.randn(2, 4, 5, 5)).sum().backward()
    opt.step()
    save_checkpoint(tmp_path / "c.safetensors", conv, {}, optimizer=opt)
    conv2 = torch.nn.Conv2d(4, 6, 3).to(memory_format=torch.channels_last)
    opt2 = torch.optim.Adam(conv2.parameters())
    tensors, meta = load_checkpoint(tmp_path / "c.safetensors")
    restore(tensors, meta, conv2, optimizer=opt2)
    st, ref = opt2.state[conv2.weight], opt.state[conv.weight]
    assert not conv2.weight.is_contiguous()
    for k in ("exp_avg", "exp_avg_sq"):
        assert st[k].stride() == conv2.weight.stride(), k
        assert torch.equal(st[k], ref[k]), k
    assert float(st["step"]) == 1.0


def _fake_pace(monkeypatch, epoch_s):
    """Make ``--fit-schedule`` see ``epoch_s`` seconds per epoch whatever the real pace."""
    from onebit.train import trainer

    real = trainer._Run._fit_to_budget
    monkeypatch.setattr(trainer._Run, "_fit_to_budget", lambda self, _s, m: real(self, epoch_s, m))


def test_fit_schedule_shortens_the_run_and_anneals_over_the_fitted_epochs(tiny_mnist, tmp_path, monkeypatch):
    _fake_pace(monkeypatch, 2000.0)  # 100 min / 2000 s → 3 epochs fit
    r = _recipe(epochs=8, lr_schedule="cosine", lr_final=0.0)
    res = train(r, tmp_path / "run", data_root=str(tiny_mnist), progress=False, max_minutes=100, fit_schedule=True)
    rows = list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))
    assert res.epochs_run == 3 and [int(x["epoch"]) for x in rows] == [0, 1, 2]
    # cosine over 3 epochs, not over 8: lr_e = lr · ½(1 + cos(πe/3))
    import math
    want = [3e-3 * 0.5 * (1 + math.cos(math.pi * e / 3)) for e in range(3)]
    assert [float(x["lr"]) for x in rows] == pytest.approx(want, rel=1e-4)
    assert json.loads((tmp_path / "run" / "recipe.json").read_text())["epochs"] == 3
    assert load_checkpoint(tmp_path / "run" / "last.safetensors")[1]["recipe"]["epochs"] == 3


def test_fit_schedule_keeps_a_run_that_fits_and_scales_step_milestones(tiny_mnist, tmp_path, monkeypatch):
    _fake_pace(monkeypatch, 1.0)  # everything fits: unchanged
    r = _recipe(epochs=3, lr_schedule="step", milestones=(2,))
    res = train(r, tmp_path / "a", data_root=str(tiny_mnist), progress=False, max_minutes=100, fit_schedule=True)
    assert res.epochs_run == 3
    monkeypatch.undo()
    _fake_pace(monkeypatch, 3000.0)  # 2 of 4 epochs fit: the milestone at 2 moves to 1
    r = _recipe(epochs=4, lr_schedule="step", milestones=(2,))
    train(r, tmp_path / "b", data_root=str(tiny_mnist), progress=False, max_minutes=100, fit_schedule=True)
    rows = list(csv.DictReader(open(tmp_path / "b" / "metrics.csv")))
    assert [float(x["lr"]) for x in rows] == pytest.approx([3e-3, 3e-4])
    assert json.loads((tmp_path / "b" / "recipe.json").read_text())["milestones"] == [1]


def test_fit_schedule_run_resumes_into_the_fitted_length(tiny_mnist, tmp_path, monkeypatch):
    _fake_pace(monkeypatch, 2000.0)
    r = _recipe(epochs=8, lr_schedule="cosine", lr_final=0.0)
    kw = dict(data_root=str(tiny_mnist), progress=False, max_minutes=100, fit_schedule=True)
    train(r, tmp_path / "a", **kw)
    train(r, tmp_path / "b", stop_after=2, **kw)
    res = train(r, tmp_path / "b", resume=True, **kw)
    assert res.epochs_run == 1
    ta, _ = load_checkpoint(tmp_path / "a" / "last.safetensors")
    tb, _ = load_checkpoint(tmp_path / "b" / "last.safetensors")
    assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)
    with pytest.raises(TrainingError, match="differs"):  # without --fit-schedule the recipes differ
        train(r, tmp_path / "b", data_root=str(tiny_mnist), progress=False, resume=True)


def test_a_spent_time_budget_stops_the_run_and_names_the_last_epoch(tiny_mnist, tmp_path, caplog):
    r = _recipe(epochs=3)
    with caplog.at_level("INFO", logger="onebit"):
        res = train(r, tmp_path / "run", data_root=str(tiny_mnist), progress=False, max_minutes=1e-9)
    assert res.epochs_run == 1
    assert "reached after epoch 1 of 3; --resume continues the run" in caplog.text
    res = train(r, tmp_path / "run", data_root=str(tiny_mnist), progress=False, resume=True)
    assert res.epochs_run == 2 and len(list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))) == 3


def test_fit_schedule_needs_a_budget(tiny_mnist, tmp_path):
    with pytest.raises(TrainingError, match="max_minutes"):
        train(_recipe(), tmp_path / "run", data_root=str(tiny_mnist), progress=False, fit_schedule=True)
    with pytest.raises(TrainingError, match="positive"):
        train(_recipe(), tmp_path / "run", data_root=str(tiny_mnist), progress=False, max_minutes=-1)
    assert not (tmp_path / "run").exists()


def test_eval_refuses_a_data_set_of_another_shape(tiny_mnist, tmp_path, capsys):
    from onebit.cli.main import main as cli

    train(_recipe(epochs=1), tmp_path / "run", data_root=str(tiny_mnist), progress=False)
    capsys.readouterr()
    assert cli(["eval", str(tmp_path / "run" / "best.safetensors"), "--data", "cifar10"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("onebit: error: data set cifar10 has images of shape (3, 32, 32)") and "takes (1, 28, 28)" in err


def test_a_cuda_generator_state_is_saved_and_restored(monkeypatch, tmp_path):
    """With CUDA in use the GPU's generator (dropout, stochastic sign on the GPU) is part of the
    checkpoint too; simulated here with a fake CUDA generator (this suite runs on CPUs)."""
    from onebit.train.checkpoint import load_checkpoint, save_checkpoint, set_rng_state

    state = {"gpu": torch.arange(16, dtype=torch.uint8)}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda: state["gpu"].clone())
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda t: state.update(gpu=t.clone()))
    save_checkpoint(tmp_path / "c.safetensors", torch.nn.Linear(2, 2), {"epoch": 0})
    state["gpu"] = torch.zeros(16, dtype=torch.uint8)  # the generator moves on
    tensors, meta = load_checkpoint(tmp_path / "c.safetensors")
    assert torch.equal(tensors["rng.cuda"], torch.arange(16, dtype=torch.uint8))
    set_rng_state(tensors, meta)
    assert torch.equal(state["gpu"], torch.arange(16, dtype=torch.uint8))
    tensors["rng.cuda"] = torch.zeros(2, 2)
    with pytest.raises(CheckpointError, match="rng.cuda must be a uint8 vector"):
        set_rng_state(tensors, meta)


def test_resume_of_a_run_older_than_a_recipe_field_says_how_to_continue_it(tiny_mnist, tmp_path):
    """A run saved before a recipe field existed ran with that field's default; a registered recipe
    that now sets it differently must not silently change the run, and the error gives the --set."""
    import safetensors.torch as st

    r = _recipe(epochs=2, optimizer="sgd", lr=0.01)
    train(r, tmp_path / "run", data_root=str(tiny_mnist), progress=False, stop_after=1)
    last = tmp_path / "run" / "last.safetensors"
    tensors, meta = load_checkpoint(last)
    del meta["recipe"]["nesterov"]  # the same run, as saved before 'nesterov' existed
    last.write_bytes(st.save(tensors, metadata={"onebit": json.dumps(meta)}))
    with pytest.raises(TrainingError) as e:
        train(r.replace(nesterov=False), tmp_path / "run", data_root=str(tiny_mnist), progress=False, resume=True)
    msg = str(e.value)
    assert "nesterov: saved True, requested False" in msg and "the run predates nesterov" in msg
    assert "--set nesterov=true" in msg
    res = train(r, tmp_path / "run", data_root=str(tiny_mnist), progress=False, resume=True)  # as it ran
    assert res.epochs_run == 1
