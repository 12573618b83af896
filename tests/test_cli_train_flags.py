"""CLI flags reach what they drive: `onebit train`'s recipe overrides and run options, `export
--no-verify`, `summary --num-classes`, `train --init-from/--init`, `data --data-root` — each checked
by its effect (the run folder's files, a spy on the code the flag switches), not by the exit code."""

import csv
import importlib.util
import json

import pytest
import torch

from onebit.cli.main import main as cli
from onebit.train import load_checkpoint, load_for_eval


@pytest.fixture(scope="module")
def tiny_mnist(make_tiny_mnist):
    return make_tiny_mnist(300, 60)


def _train_args(root, out, *extra):
    """A small, fast `onebit train bnn-mlp` on the tiny MNIST (300 images, hidden 16)."""
    return ["train", "bnn-mlp", "--data", "mnist", "--data-root", str(root), "--batch-size", "50",
            "--val-size", "50", "--set", "model.hidden=16", "--out", str(out), "--no-progress", *extra]


@pytest.fixture(scope="module")
def trained(tiny_mnist, tmp_path_factory):
    """A 1-epoch bnn-mlp run folder (its best.safetensors is the source checkpoint of the tests)."""
    out = tmp_path_factory.mktemp("cli-flags") / "src"
    assert cli(_train_args(tiny_mnist, out, "--epochs", "1", "--seed", "3")) == 0
    return out


def test_train_flags_reach_the_recipe_and_the_run(tiny_mnist, tmp_path, monkeypatch, caplog):
    """--lr --lr-final --loss --optimizer --seed --augment land in recipe.json (and in the loss, the
    loaders and the optimizer built from it); --max-minutes M --fit-schedule hand M to the fitting,
    which shortens 5 epochs to 3 and stretches the exp schedule from lr to lr_final over those 3;
    --tensorboard logs to OUT/tb, or warns that the package is missing."""
    import onebit.data.loaders
    import onebit.losses
    from onebit.train import trainer

    seen = {}
    real_get, real_loaders, real_fit = onebit.losses.get, onebit.data.loaders.make_loaders, trainer._Run._fit_to_budget

    def get(name):
        seen["loss"] = name
        return real_get(name)

    def make_loaders(*a, **kw):
        seen["loaders"] = kw
        return real_loaders(*a, **kw)

    def fit(self, _epoch_s, minutes):  # the real pace varies: 2000 s per epoch → 100 min fit 3 epochs
        seen["budget_min"] = minutes
        return real_fit(self, 2000.0, minutes)

    monkeypatch.setattr(onebit.losses, "get", get)
    monkeypatch.setattr(onebit.data.loaders, "make_loaders", make_loaders)
    monkeypatch.setattr(trainer._Run, "_fit_to_budget", fit)

    out = tmp_path / "run"
    with caplog.at_level("INFO", logger="onebit"):
        assert cli(_train_args(tiny_mnist, out, "--epochs", "5", "--lr", "0.002", "--lr-final", "0.0002",
                               "--loss", "ce", "--optimizer", "sgd", "--seed", "7", "--augment",
                               "--max-minutes", "100", "--fit-schedule", "--tensorboard")) == 0

    r = json.loads((out / "recipe.json").read_text())
    # every value differs from bnn-mlp's registered recipe (lr 3e-3 → 3e-7, sqhinge, adam, seed 0, no augment)
    assert (r["lr"], r["lr_final"], r["loss"], r["optimizer"], r["seed"], r["augment"]) == \
        (0.002, 0.0002, "ce", "sgd", 7, True)
    assert seen["loss"] == "ce"
    assert seen["loaders"]["augment"] is True and seen["loaders"]["seed"] == 7
    groups = load_checkpoint(out / "last.safetensors")[1]["optimizer"]["param_groups"]
    assert all("nesterov" in g and g["momentum"] == 0.9 for g in groups)  # SGD's, not Adam's (betas)

    # --max-minutes 100 reached the fitting (less epoch 0's one-off time, none without --compile)
    assert seen["budget_min"] == pytest.approx(100, abs=1e-6)
    assert r["epochs"] == 3  # --fit-schedule: 5 epochs shortened to the 3 that fit
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert [int(x["epoch"]) for x in rows] == [0, 1, 2]
    want = [0.002 * 0.1 ** (e / 3) for e in range(3)]  # exp: lr·(lr_final/lr)^(e/epochs), epochs the fitted 3
    assert [float(x["lr"]) for x in rows] == pytest.approx(want, rel=1e-4)

    missing = "--tensorboard: the tensorboard package is not installed"
    if importlib.util.find_spec("tensorboard") is None:
        assert missing in caplog.text and not (out / "tb").exists()
    else:
        assert missing not in caplog.text
        assert any(p.name.startswith("events.out.tfevents") for p in (out / "tb").rglob("*"))


def test_export_no_verify_skips_the_check_and_writes(trained, tmp_path, monkeypatch, capsys):
    """The exporter's engine-vs-PyTorch check runs by default (a failing one refuses the file) and
    not at all with --no-verify (the file is written, and loads on the engine)."""
    pytest.importorskip("onebit.kernels")
    from onebit.deploy import DeployError, Engine, exporter

    calls = []

    def failing_verify(*a, **kw):
        calls.append(1)
        raise DeployError("spy: verification ran and refused the graph")

    monkeypatch.setattr(exporter, "_verify", failing_verify)
    ckpt = trained / "best.safetensors"
    capsys.readouterr()
    assert cli(["export", str(ckpt), "-o", str(tmp_path / "a.onebit")]) == 2
    assert "spy: verification ran" in capsys.readouterr().err
    assert calls == [1] and not (tmp_path / "a.onebit").exists()

    assert cli(["export", str(ckpt), "-o", str(tmp_path / "b.onebit"), "--no-verify"]) == 0
    assert calls == [1]  # not called again
    assert "wrote" in capsys.readouterr().out
    assert Engine(tmp_path / "b.onebit", threads=1).input_shape == (1, 28, 28)


def _classifier_line(out: str) -> list[str]:
    """The last BinaryLinear row of `onebit summary bnn-mlp` (the classifier)."""
    return [l.split() for l in out.splitlines() if "BinaryLinear" in l][-1]


def test_summary_num_classes_resizes_the_classifier(capsys):
    assert cli(["summary", "bnn-mlp"]) == 0
    default = _classifier_line(capsys.readouterr().out)
    assert cli(["summary", "bnn-mlp", "--num-classes", "7"]) == 0
    seven = _classifier_line(capsys.readouterr().out)
    # params column: hidden × classes; bnn-mlp's data set (fashion-mnist) has 10 classes
    params = lambda row: int(row[4].replace(",", ""))
    assert params(default) % 10 == 0 and params(seven) == params(default) // 10 * 7


def test_summary_input_shape_builds_a_registered_model_for_it(capsys):
    """`--input-shape 1,32,32` sizes bnn-mlp's first layer for 1024 inputs (28×28 gives 784), and a
    ResNet's first conv for 1 channel; a checkpoint keeps its own shapes (its weights fix them)."""
    first = lambda out: [l.split() for l in out.splitlines() if "BinaryLinear" in l][0]
    params = lambda row: int(row[4].replace(",", ""))
    assert cli(["summary", "bnn-mlp"]) == 0
    hidden = params(first(capsys.readouterr().out)) // 784
    assert cli(["summary", "bnn-mlp", "--input-shape", "1,32,32"]) == 0
    assert params(first(capsys.readouterr().out)) == 32 * 32 * hidden
    assert cli(["summary", "binary-resnet18-cifar", "--input-shape", "1,32,32"]) == 0
    conv1 = [l.split() for l in capsys.readouterr().out.splitlines() if l.split()[:1] == ["conv1"]][0]
    assert params(conv1) == 1 * 9 * 64, conv1


def test_summary_num_classes_is_refused_for_a_checkpoint(trained, cli_error):
    assert "a checkpoint has its own classes" in cli_error(
        ["summary", str(trained / "best.safetensors"), "--num-classes", "7"])


def test_train_init_from_real_copies_the_checkpoints_weights(trained, tiny_mnist, tmp_path, caplog):
    """--init-from CKPT --init real starts from CKPT's tensors: with a learning rate of 1e-30 the one
    epoch leaves the parameters where the initialisation put them (BN statistics still move, so only
    parameters are compared); another seed and no --init-from give other weights."""
    src, _ = load_for_eval(trained / "best.safetensors")
    tiny_lr = ["--epochs", "1", "--seed", "5", "--lr", "1e-30", "--lr-final", "1e-31"]
    with caplog.at_level("INFO", logger="onebit"):
        assert cli(_train_args(tiny_mnist, tmp_path / "init", *tiny_lr, "--init-from",
                               str(trained / "best.safetensors"), "--init", "real")) == 0
    assert f"from {trained / 'best.safetensors'} (real)" in caplog.text
    assert json.loads((tmp_path / "init" / "recipe.json").read_text())["init_from"] == str(trained / "best.safetensors")
    assert cli(_train_args(tiny_mnist, tmp_path / "scratch", *tiny_lr)) == 0  # the control: no --init-from
    init, _ = load_for_eval(tmp_path / "init" / "last.safetensors")
    scratch, _ = load_for_eval(tmp_path / "scratch" / "last.safetensors")
    names = [n for n, _ in src.named_parameters()]
    assert names and names == [n for n, _ in init.named_parameters()]
    src_p, init_p, scratch_p = (dict(m.named_parameters()) for m in (src, init, scratch))
    for n in names:
        assert torch.allclose(init_p[n], src_p[n], rtol=0, atol=1e-20), n
    assert any(not torch.allclose(scratch_p[n], src_p[n]) for n in names if "weight" in n)
    assert not (tmp_path / "scratch" / "tb").exists()  # no --tensorboard: no TensorBoard folder


def test_data_root_is_the_folder_shown_for_mnist(tiny_mnist, capsys):
    assert cli(["data", "--data-root", str(tiny_mnist)]) == 0
    rows = dict(l.split(None, 1) for l in capsys.readouterr().out.splitlines())
    assert rows["mnist"].strip() == str(tiny_mnist)


def _stopped_after_one_epoch(root, out):
    """A 2-epoch run with non-default settings, stopped cleanly after its first epoch."""
    assert cli(_train_args(root, out, "--epochs", "2", "--seed", "5", "--lr", "0.002", "--limit", "200",
                           "--set", "model.dropout=0.1", "--max-minutes", "1e-6")) == 0
    assert load_checkpoint(out / "last.safetensors")[1]["epoch"] == 0
    return json.loads((out / "recipe.json").read_text())


def test_resume_continues_with_the_runs_saved_settings(tiny_mnist, tmp_path):
    """`onebit train MODEL --resume --out OUT` takes the run's recipe.json: none of the options the
    run started with (data, epochs, seed, lr, limit, model arguments) need repeating."""
    out = tmp_path / "run"
    saved = _stopped_after_one_epoch(tiny_mnist, out)
    assert cli(["train", "bnn-mlp", "--resume", "--out", str(out), "--data-root", str(tiny_mnist),
                "--no-progress"]) == 0
    assert load_checkpoint(out / "last.safetensors")[1]["epoch"] == 1
    assert [r["epoch"] for r in csv.DictReader(open(out / "metrics.csv"))] == ["0", "1"]
    assert json.loads((out / "recipe.json").read_text()) == saved
    # the same options given again agree with the run, so they are accepted too
    out2 = tmp_path / "run2"
    _stopped_after_one_epoch(tiny_mnist, out2)
    assert cli(_train_args(tiny_mnist, out2, "--epochs", "2", "--seed", "5", "--lr", "0.002", "--limit", "200",
                           "--set", "model.dropout=0.1", "--resume")) == 0
    assert load_checkpoint(out2 / "last.safetensors")[1]["epoch"] == 1


def test_resume_refuses_an_option_that_differs_from_the_run(tiny_mnist, tmp_path, cli_error):
    out = tmp_path / "run"
    _stopped_after_one_epoch(tiny_mnist, out)
    base = ["--resume", "--out", str(out), "--data-root", str(tiny_mnist), "--no-progress"]
    assert "lr: saved 0.002, requested 0.01" in cli_error(["train", "bnn-mlp", "--lr", "0.01", *base])
    err = cli_error(["train", "bnn-mlp-2048", *base])
    assert "trains bnn-mlp, not bnn-mlp-2048" in err
    (out / "recipe.json").write_text("{not json")
    assert "recipe.json is not a readable recipe" in cli_error(["train", "bnn-mlp", *base])
    assert load_checkpoint(out / "last.safetensors")[1]["epoch"] == 0  # nothing ran


def test_eval_limit_scores_the_first_n_test_images(trained, tiny_mnist, capsys):
    """`onebit eval --limit N` scores the first N test images: the count says N, and the accuracy is
    that of the model on exactly those images."""
    import re

    import numpy as np

    from onebit.data import load_arrays

    ckpt = trained / "best.safetensors"
    assert cli(["eval", str(ckpt), "--data-root", str(tiny_mnist), "--limit", "7", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    m = re.search(r"accuracy ([0-9.]+)% .* (\d+) images", out)
    assert m and int(m.group(2)) == 7, out
    model, _ = load_for_eval(ckpt)
    x, y = load_arrays("mnist", tiny_mnist)["test"]
    xf = torch.from_numpy(x[:7].astype(np.float32) / 127.5 - 1)
    with torch.no_grad():
        want = 100 * float((model(xf).argmax(1).numpy() == y[:7]).mean())
    assert float(m.group(1)) == pytest.approx(round(want, 2), abs=1e-9)
    assert cli(["eval", str(ckpt), "--data-root", str(tiny_mnist), "--limit", "0"]) == 2
