"""The training step: deferred host reads (the NaN check) and ``--compile``.

A compiled step must compute what the eager step computes (same network, same losses, rounding
aside), checkpoints must hold the plain model, and ``--fit-schedule`` must leave compile time out
of the pace it fits the run to.
"""

import copy
import csv

import pytest
import torch

from onebit import models
from onebit.cli.main import main as cli
from onebit.methods import Recipe
from onebit.methods.bonn import hook_for
from onebit.train import TrainingError, load_checkpoint, load_for_eval, train
from onebit.train import trainer
from onebit.train.trainer import StepModule, steady_pace


@pytest.fixture
def tiny_mnist(make_tiny_mnist):
    return make_tiny_mnist(300, 60)


def _recipe(**kw):
    # no dropout: the compiled and eager steps then draw no random numbers and must agree
    base = dict(model="bnn-mlp", data="mnist", model_kwargs={"hidden": 32, "dropout": 0.0, "input_dropout": 0.0},
                epochs=2, batch_size=25, val_size=50, lr=3e-3, lr_schedule="exp", lr_final=3e-5,
                glorot_lr_scale=True)
    base.update(kw)
    return Recipe(**base)


def _mlp():
    torch.manual_seed(0)
    return models.create("bnn-mlp", in_channels=1, image_size=28, hidden=32, dropout=0.0, input_dropout=0.0)


def _step(module, x, y):
    out, extra = module(x, y, False)
    loss = torch.nn.functional.cross_entropy(out, y) + (0 if extra is None else extra)
    loss.backward()
    return out.detach(), loss.detach()


@pytest.mark.slow
def test_compiled_step_equals_the_eager_step():
    eager = _mlp().train()
    comp = copy.deepcopy(eager)
    x, y = torch.randn(9, 1, 28, 28), torch.randint(0, 10, (9,))
    out_e, loss_e = _step(StepModule(eager, None, False), x, y)
    out_c, loss_c = _step(torch.compile(StepModule(comp, None, False)), x, y)
    torch.testing.assert_close(out_c, out_e, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(loss_c, loss_e, rtol=1e-5, atol=1e-6)
    for (name, pe), pc in zip(eager.named_parameters(), comp.parameters()):
        torch.testing.assert_close(pc.grad, pe.grad, rtol=1e-4, atol=1e-6, msg=name)
    for (name, be), bc in zip(eager.named_buffers(), comp.buffers()):  # BN running statistics
        torch.testing.assert_close(bc, be, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.slow
def test_compiled_run_learns_and_checkpoints_the_plain_model(tiny_mnist, tmp_path):
    train(_recipe(epochs=4), tmp_path / "e", data_root=str(tiny_mnist), progress=False)
    res = train(_recipe(epochs=4), tmp_path / "c", data_root=str(tiny_mnist), progress=False, compile=True)
    assert res.epochs_run == 4
    acc = {k: float(list(csv.DictReader(open(tmp_path / k / "metrics.csv")))[-1]["test_acc"]) for k in "ec"}
    assert acc["c"] > 0.5 and acc["e"] > 0.5  # chance is 0.1
    te, _ = load_checkpoint(tmp_path / "e" / "last.safetensors")
    tc, _ = load_checkpoint(tmp_path / "c" / "last.safetensors")
    assert te.keys() == tc.keys()  # no "_orig_mod." prefixes: the plain model was saved
    assert all(te[k].shape == tc[k].shape for k in te)
    load_for_eval(tmp_path / "c" / "best.safetensors")


class _TinyBonn(torch.nn.Module):
    """One BONN conv and a classifier with a feature prior: BONN's hook and both losses, small enough
    to compile in seconds."""

    def __init__(self):
        super().__init__()
        from onebit.losses.bayes import BayesConfig, FeaturePrior
        from onebit.nn.bonn import BonnConv2d

        self.conv = BonnConv2d(3, 6, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(6)
        self.fc = torch.nn.Linear(6, 10)
        self.fc.prior = FeaturePrior(10, 6)
        self.bayes = BayesConfig(lam=1e-4, nu=1e-2, theta=1e-2)

    def forward(self, x):
        return self.fc(self.bn(self.conv(x)).mean((2, 3)))


@pytest.mark.slow
def test_compiled_bonn_step_equals_the_eager_step():
    torch.manual_seed(0)
    eager = _TinyBonn().train()
    with torch.no_grad():  # move μ, σ off their stationary point, where their gradients are rounding
        eager.conv.prior.set(mu=torch.rand(6) * 0.3 + 0.05, sigma=torch.rand(6) * 0.3 + 0.05)
    comp = copy.deepcopy(eager)
    he, hc = hook_for(eager), hook_for(comp)
    x, y = torch.randn(7, 3, 8, 8), torch.randint(0, 10, (7,))
    for model, hook, step in ((eager, he, StepModule(eager, he, False)),
                              (comp, hc, torch.compile(StepModule(comp, hc, False)))):
        out, extra = step(x, y, True)
        (torch.nn.functional.cross_entropy(out, y) + extra).backward()
        hook.after_step(y)  # the features the compiled forward captured reach the center update
        model.out = out.detach()
    torch.testing.assert_close(comp.out, eager.out, rtol=1e-5, atol=1e-6)
    for k in ("kernel", "feature"):
        torch.testing.assert_close(hc.last[k], he.last[k], rtol=1e-5, atol=1e-8)
    for (name, pe), pc in zip(eager.named_parameters(), comp.parameters()):
        torch.testing.assert_close(pc.grad, pe.grad, rtol=1e-4, atol=1e-7, msg=name)
    assert eager.fc.prior.centers.abs().sum() > 0
    torch.testing.assert_close(comp.fc.prior.centers, eager.fc.prior.centers, rtol=1e-5, atol=1e-7)


def test_steady_pace_leaves_the_compiling_steps_out():
    # 10 steps in 40 s, of which 2 compiled in 31 s: the other 8 took 9 s → 1.125 s a step;
    # the two compiling steps count 2.25 s in the pace, the other 28.75 s are spent once
    pace, once = steady_pace(elapsed=45.0, train_s=40.0, warm_s=31.0, warm_steps=2, steps=10)
    assert once == pytest.approx(31.0 - 2 * 1.125)
    assert pace == pytest.approx(45.0 - once)
    assert steady_pace(elapsed=45.0, train_s=40.0, warm_s=0.0, warm_steps=0, steps=10) == (45.0, 0.0)


def test_fit_schedule_with_compile_fits_on_the_steady_pace(tiny_mnist, tmp_path, monkeypatch):
    seen = []
    real = trainer._Run._fit_to_budget
    monkeypatch.setattr(trainer._Run, "_fit_to_budget", lambda self, s, m: (seen.append((s, m)), real(self, s, m)))
    pace = {}
    real_pace = trainer.steady_pace

    def spy(**kw):
        pace.update(kw)
        return real_pace(**kw)

    monkeypatch.setattr(trainer, "steady_pace", spy)
    monkeypatch.setattr(torch, "compile", lambda m: m)  # the bookkeeping, without the compiler's time
    train(_recipe(epochs=2), tmp_path / "r", data_root=str(tiny_mnist), progress=False, compile=True,
          max_minutes=100, fit_schedule=True)
    # one batch shape in epoch 0 (250 = 10 × 25): exactly one step was counted as compiling
    assert pace["warm_steps"] == 1 and pace["steps"] == 10 and pace["warm_s"] > 0
    (s, m), = seen
    assert s <= pace["elapsed"] and m <= 100


def test_a_nan_loss_stops_the_run_naming_the_steps(tiny_mnist, tmp_path, monkeypatch):
    from onebit import losses

    ce = losses.get("ce")
    calls = []

    def poisoned(out, y):
        calls.append(1)
        return ce(out, y) * (float("nan") if len(calls) > 2 else 1.0)

    monkeypatch.setattr(trainer.losses, "get", lambda name: poisoned)
    with pytest.raises(TrainingError, match=r"loss became nan at epoch 1, steps 1–9"):
        train(_recipe(loss="ce"), tmp_path / "r", data_root=str(tiny_mnist), progress=False)
    assert not (tmp_path / "r" / "last.safetensors").exists()  # nothing written for the failed epoch


def test_compile_is_one_process_and_a_cli_flag(tiny_mnist, tmp_path, monkeypatch):
    called = {}
    monkeypatch.setattr(torch, "compile", lambda m: called.setdefault("m", m))
    rc = cli(["train", "bnn-mlp", "--data", "mnist", "--data-root", str(tiny_mnist), "--epochs", "1",
              "--set", "model.hidden=16", "--val-size", "50", "--compile", "--no-progress", "--out", str(tmp_path / "r")])
    assert rc in (0, None) and isinstance(called["m"], StepModule)
    monkeypatch.setattr(trainer.distrib, "setup", lambda: type("D", (), dict(active=True, rank=0, world_size=2,
                                                                              main=True))())
    monkeypatch.setattr(trainer.distrib, "teardown", lambda d, **kw: None)
    with pytest.raises(TrainingError, match="--compile runs in one process"):
        train(_recipe(), tmp_path / "d", data_root=str(tiny_mnist), progress=False, compile=True)


def test_bonn_feature_loss_flag_overrides_the_epoch_rule():
    model = models.create("bonn-wrn22", theta=1e-2, widths=(8, 8, 16, 32))
    hook = hook_for(model)
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    model(x)
    hook.extra_loss(y, epoch=5, feature_loss=False)
    assert float(hook.last["feature"]) == 0.0 and float(hook.last["kernel"]) != 0
    hook.extra_loss(y, epoch=0, feature_loss=True)
    assert float(hook.last["feature"]) != 0
    assert isinstance(hook.last["kernel"], torch.Tensor) and not hook.last["kernel"].requires_grad
