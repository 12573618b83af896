"""Bi-Real's multi-stage procedure from the trainer and the CLI (methods.md §2.5, §2.6):
clip pre-training → binary net initialised from it → BN-only retraining with α folded into BN."""

import json

import pytest
import torch

from onebit import models
from onebit.cli.main import main as cli
from onebit.cli.train_cmd import parse_set
from onebit.train import TrainingError, load_checkpoint, load_for_eval
from onebit.train.trainer import initialise_from

TINY = ["--data", "mnist", "--batch-size", "50", "--val-size", "50", "--set", "model.width=4", "--no-progress"]


@pytest.fixture(scope="module")
def pipeline_run(make_tiny_mnist, tmp_path_factory):
    root = make_tiny_mnist(300, 60)
    out = tmp_path_factory.mktemp("pipeline") / "run"
    rc = cli(["train", "bireal-resnet18-cifar", "--pipeline", "--pretrain-epochs", "1", "--epochs", "1",
              "--data-root", str(root), "--out", str(out), *TINY])
    assert rc == 0
    return out


def _model_tensors(path):
    tensors, _ = load_checkpoint(path)
    return {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}


def test_pipeline_runs_every_stage_each_from_the_previous(pipeline_run):
    stages = ["pretrain", "binary", "bn-retrain"]
    recipes = {s: json.loads((pipeline_run / s / "recipe.json").read_text()) for s in stages}
    assert recipes["pretrain"]["model"] == "resnet18-cifar-float" and recipes["pretrain"]["init_from"] is None
    _, meta = load_for_eval(pipeline_run / "pretrain" / "best.safetensors")
    assert meta["model_config"]["activation"] == "htanh"  # the clip activation, not ReLU
    assert recipes["binary"]["init_from"] == str(pipeline_run / "pretrain" / "best.safetensors")
    assert recipes["binary"]["init"] == "real" and recipes["binary"]["epochs"] == 1
    assert recipes["bn-retrain"]["init_from"] == str(pipeline_run / "binary" / "best.safetensors")
    assert recipes["bn-retrain"]["init"] == "bn_retrain"
    for s in stages:
        assert (pipeline_run / s / "best.safetensors").is_file()


def test_init_from_real_copies_every_tensor_of_the_pretrained_twin(pipeline_run):
    src = _model_tensors(pipeline_run / "pretrain" / "best.safetensors")
    model = models.create("bireal-resnet18-cifar", num_classes=10, in_channels=1, width=4)
    copied = initialise_from(model, pipeline_run / "pretrain" / "best.safetensors", "real")
    sd = model.state_dict()
    assert sorted(copied) == sorted(sd) == sorted(src)
    for k in sd:
        assert torch.equal(sd[k], src[k]), k


def test_bn_retraining_changes_only_batchnorm(pipeline_run):
    before = _model_tensors(pipeline_run / "binary" / "best.safetensors")
    after = _model_tensors(pipeline_run / "bn-retrain" / "best.safetensors")
    model, _ = load_for_eval(pipeline_run / "bn-retrain" / "best.safetensors")
    bn = {n for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d | torch.nn.BatchNorm1d)}
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    assert changed, "BN retraining changed nothing"
    assert all(k.rsplit(".", 1)[0] in bn for k in changed), sorted(changed)
    assert model.onebit_config["weight"] == "identity_ste_sign"


def test_a_resumed_bn_retraining_still_changes_only_batchnorm(pipeline_run, make_tiny_mnist, tmp_path):
    """requires_grad is not in a checkpoint: the resumed stage must freeze the non-BN weights again."""
    from onebit.methods.recipe import Recipe
    from onebit.train import train

    r = Recipe.from_dict(json.loads((pipeline_run / "bn-retrain" / "recipe.json").read_text())).replace(epochs=2)
    kw = dict(progress=False, data_root=str(make_tiny_mnist(300, 60)))
    train(r, tmp_path / "run", stop_after=1, **kw)
    train(r, tmp_path / "run", resume=True, **kw)
    before = _model_tensors(pipeline_run / "binary" / "best.safetensors")
    after = _model_tensors(tmp_path / "run" / "last.safetensors")
    model, _ = load_for_eval(tmp_path / "run" / "last.safetensors")
    bn = {n for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d | torch.nn.BatchNorm1d)}
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    assert changed and all(k.rsplit(".", 1)[0] in bn for k in changed), sorted(changed)


def test_init_from_errors_are_clear(tmp_path, pipeline_run):
    model = models.create("bireal-resnet18-cifar", num_classes=10, in_channels=1, width=4)
    with pytest.raises(TrainingError, match="no checkpoint"):
        initialise_from(model, tmp_path / "missing.safetensors")
    with pytest.raises(TrainingError, match="unknown init mode"):
        initialise_from(model, pipeline_run / "pretrain" / "best.safetensors", "nonsense")
    wider = models.create("bireal-resnet18-cifar", num_classes=10, in_channels=1, width=8)
    with pytest.raises(ValueError, match="shape mismatch"):
        initialise_from(wider, pipeline_run / "pretrain" / "best.safetensors")


def test_cli_init_from_and_pipeline_errors(pipeline_run, make_tiny_mnist, tmp_path, capsys):
    root = str(make_tiny_mnist(300, 60))
    out = tmp_path / "init"
    assert cli(["train", "bireal-resnet18-cifar", "--init-from", str(pipeline_run / "pretrain" / "best.safetensors"),
                "--epochs", "1", "--data-root", root, "--out", str(out), *TINY]) == 0
    assert json.loads((out / "recipe.json").read_text())["init"] == "real"
    assert cli(["train", "bnn-mlp", "--pipeline", "--data-root", root]) == 2
    assert "no registered multi-stage procedure" in capsys.readouterr().err


def test_set_routes_recipe_fields_and_model_arguments():
    over, model_kw = parse_set(["lr=0.5", "lam=1e-3", "model.width=8", "milestones=[3, 6]", "activation=relu"])
    assert over == {"lr": 0.5, "milestones": [3, 6]}
    assert model_kw == {"lam": 1e-3, "width": 8, "activation": "relu"}
