"""The CLI refuses bad inputs with one clear line (exit 2): dtype, shape, NaN/Inf, threads, sizes."""

import numpy as np
import pytest
import torch

from onebit import models
from onebit.cli.main import main as cli
from onebit.data.formats import write_idx
from onebit.deploy import Engine, export

pytest.importorskip("onebit.kernels")


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """A bnn-mlp exported for 12×12 single-channel images (not MNIST's 28×28)."""
    torch.manual_seed(0)
    p = tmp_path_factory.mktemp("cli-inputs") / "m.onebit"
    export(models.create("bnn-mlp", hidden=32, image_size=12).eval(), p, torch.randn(1, 1, 12, 12),
           preprocess={"normalize": "pm1", "data": "mnist"})
    return p


@pytest.fixture(scope="module")
def tiny_mnist(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-mnist-cli")
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 20), ("t10k", 10)):
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 255, (n, 28, 28)).astype(np.uint8))
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, n).astype(np.uint8))
    return root


def _npy(tmp_path, name, arr, **kw):
    p = tmp_path / name
    np.save(p, arr, **kw)
    return p


@pytest.mark.parametrize("arr, msg", [
    (np.zeros((2, 1, 12, 12), np.complex64), "real numbers, got dtype complex64"),
    (np.zeros((2, 1, 12, 12), bool), "real numbers, got dtype bool"),
    (np.array([["a"]]), "real numbers, got dtype <U1"),
    (np.zeros((2, 1, 28, 28), np.float32), r"shape \(2, 1, 28, 28\); this model takes \(N, 1, 12, 12\)"),
    (np.zeros((1, 12, 12), np.float32), "this model takes"),
    (np.zeros((0, 1, 12, 12), np.float32), "empty batch"),
    (np.full((2, 1, 12, 12), np.nan, np.float32), "NaN or Inf"),
    (np.full((2, 1, 12, 12), np.inf, np.float64), "NaN or Inf"),
])
def test_run_input_array_is_checked(model_file, tmp_path, arr, msg, cli_error):
    import re

    err = cli_error(["run", str(model_file), "--input", str(_npy(tmp_path, "x.npy", arr))])
    assert re.search(msg, err), err


def test_run_input_files_that_are_not_arrays(model_file, tmp_path, cli_error):
    obj = _npy(tmp_path, "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    assert "holds Python objects" in cli_error(["run", str(model_file), "--input", str(obj)])
    junk = tmp_path / "junk.npy"
    junk.write_bytes(b"\x93NUMPY garbage")
    assert "not a readable .npy" in cli_error(["run", str(model_file), "--input", str(junk)])
    assert "not found" in cli_error(["run", str(model_file), "--input", str(tmp_path / "none.npy")])


@pytest.mark.parametrize("opts, msg", [
    (["--threads", "0"], "threads must be an integer from 1 to 256, got 0"),
    (["--threads", "-2"], "threads must be an integer from 1 to 256"),
    (["--threads", "1000"], "threads must be an integer from 1 to 256, got 1000"),
    (["--calib", "5"], "--calib sets the calibration images of --int8; add --int8"),
    (["--batch-size", "0"], "--batch-size must be >= 1"),
    (["--limit", "-1"], "--limit must be >= 1"),
    (["--output", "y.npy"], "--output needs --input"),
])
def test_run_options_are_checked(model_file, opts, msg, cli_error):
    assert msg in cli_error(["run", str(model_file), *opts])


def test_run_on_a_data_set_of_another_shape(model_file, tiny_mnist, cli_error):
    err = cli_error(["run", str(model_file), "--data-root", str(tiny_mnist)])
    assert "data set mnist has images of shape (1, 28, 28)" in err and "(1, 12, 12)" in err


def test_run_input_predicts_and_saves_logits(model_file, tmp_path, capsys):
    x = np.random.default_rng(0).standard_normal((5, 1, 12, 12)).astype(np.float32)
    out = tmp_path / "logits.npy"
    assert cli(["run", str(model_file), "--input", str(_npy(tmp_path, "x.npy", x)), "--output", str(out),
                "--threads", "1", "--batch-size", "2"]) == 0
    want = Engine(model_file, threads=1).run(x)
    assert np.array_equal(np.load(out), want)
    assert f"classes {' '.join(map(str, want.argmax(1)))}" in capsys.readouterr().out
    x8 = np.random.default_rng(1).integers(0, 256, (3, 1, 12, 12)).astype(np.uint8)  # raw pixels (pm1 model)
    assert cli(["run", str(model_file), "--input", str(_npy(tmp_path, "x8.npy", x8))]) == 0


@pytest.mark.parametrize("args, msg", [
    (["train", "bnn-mlp", "--threads", "0"], "threads must be an integer >= 1"),
    (["train", "bnn-mlp", "--ckpt-every-steps", "-5"], "ckpt_every_steps must be an integer >= 0"),
    (["train", "bnn-mlp", "--keep-ckpts", "0"], "keep_ckpts must be an integer >= 1"),
    (["train", "bnn-mlp", "--nproc", "-1"], "--nproc must be >= 1"),
    (["eval", "x.safetensors", "--threads", "0"], "--threads must be >= 1"),
    (["bench", "--threads", "0"], "--threads must be from 1 to 256, got 0"),
    (["bench", "--threads", "1000"], "--threads must be from 1 to 256, got 1000"),
    (["bench", "--repeats", "0"], "--repeats must be >= 1"),
    (["bench", "--batches", "0,8"], "--batches must be from 1 to 1024"),
    (["bench", "--batches", "100000000"], "--batches must be from 1 to 1024"),
    (["bench", "--layers", "--model", "bireal-resnet18"], "--layers times its own fixed shapes; --model applies only"),
    (["bench", "--layers", "--batches", "8", "--bf16"], "--batches, --bf16 apply only to the end-to-end"),
])
def test_other_commands_check_their_numbers(args, msg, cli_error):
    assert msg in cli_error(args)


def test_run_output_never_overwrites_without_force_nor_its_own_inputs(model_file, tmp_path, cli_error):
    x = _npy(tmp_path, "x.npy", np.zeros((2, 1, 12, 12), np.float32))
    keep = tmp_path / "precious.txt"
    keep.write_text("mine")
    assert "exists; pass --force" in cli_error(["run", str(model_file), "--input", str(x), "--output", str(keep)])
    assert keep.read_text() == "mine"
    model_bytes = model_file.read_bytes()
    for own in (model_file, x):  # even with --force: the model and the array being read
        err = cli_error(["run", str(model_file), "--input", str(x), "--output", str(own), "--force"])
        assert "this command's own input" in err
    assert model_file.read_bytes() == model_bytes
    assert "is a folder" in cli_error(["run", str(model_file), "--input", str(x), "--output", str(tmp_path)])
    assert cli(["run", str(model_file), "--input", str(x), "--output", str(keep), "--force"]) == 0
    assert np.load(keep).shape == (2, 10)


def test_export_refuses_to_write_over_its_checkpoint(tmp_path, cli_error):
    ckpt = tmp_path / "c.safetensors"
    ckpt.write_bytes(b"not even read")
    assert "own input" in cli_error(["export", str(ckpt), "-o", str(ckpt), "--force"])
    assert ckpt.read_bytes() == b"not even read"
    assert "is a folder" in cli_error(["export", str(ckpt), "-o", str(tmp_path), "--force"])


def test_run_warns_on_float_pixels_for_a_pm1_model(model_file, tmp_path):
    x01 = _npy(tmp_path, "x01.npy", np.random.default_rng(0).random((2, 1, 12, 12)).astype(np.float32))
    with pytest.warns(UserWarning, match=r"looks like pixels scaled to \[0, 1\]"):
        assert cli(["run", str(model_file), "--input", str(x01)]) == 0
    x255 = _npy(tmp_path, "x255.npy", np.full((2, 1, 12, 12), 200.0, np.float32))
    with pytest.warns(UserWarning, match="looks like pixels 0..255"):
        assert cli(["run", str(model_file), "--input", str(x255)]) == 0
    pm1 = _npy(tmp_path, "pm1.npy", np.random.default_rng(0).uniform(-1, 1, (2, 1, 12, 12)).astype(np.float32))
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cli(["run", str(model_file), "--input", str(pm1)]) == 0


@pytest.mark.parametrize("args, msg", [
    (["train", "bnn-mlp", "--epochs", "0"], "recipe field epochs must be >= 1, got 0"),
    (["train", "bnn-mlp", "--set", "epochs=1.5"], "recipe field epochs must be an integer, got 1.5"),
    (["train", "bnn-mlp", "--set", "augment=maybe"], "recipe field augment must be true or false, got 'maybe'"),
    (["train", "bnn-mlp", "--set", "lr=abc"], "recipe field lr must be a finite number, got 'abc'"),
    (["train", "bnn-mlp", "--lr", "nan"], "recipe field lr must be a finite number, got nan"),
    (["train", "bnn-mlp", "--set", "seed=abc"], "recipe field seed must be an integer, got 'abc'"),
    (["train", "bnn-mlp", "--init", "bogus"], "recipe field init must be one of real, bn_retrain"),
    (["train", "bnn-mlp", "--set", "momentum=1.5"], "recipe field momentum must be in [0, 1)"),
    (["train", "bnn-mlp", "--epochs", "1", "--set", "epochs=2"], "epochs is given twice"),
    (["train", "bnn-mlp", "--data", "mnist", "--set", "data=cifar10"], "data is given twice"),
    (["train", "bnn-mlp", "--recipe", "bnn-convnet"], "--recipe bnn-convnet trains bnn-convnet, not bnn-mlp"),
    (["train", "bnn-mlp", "--recipe", "nosuch"], "unknown recipe 'nosuch'; registered recipes:"),
    (["train", "bnn-mlp", "--set", "bogus=1"], "model bnn-mlp takes no argument(s) ['bogus']"),
    (["train", "bnn-mlp", "--pretrain-epochs", "2"], "add --pipeline"),
    (["train", "bireal-resnet18-cifar", "--pipeline", "--pretrain-epochs", "-1"], "--pretrain-epochs must be >= 1"),
    (["train", "bnn-mlp", "--set", "model.hidden=-5"], "cannot build model bnn-mlp with hidden=-5: "),
    (["train", "bnn-mlp", "--set", "model.hidden=0"], "cannot build model bnn-mlp with hidden=0: BinaryLinear out_features must be a positive integer, got 0"),
    (["train", "bnn-mlp", "--set", "model.hidden=abc"], "cannot build model bnn-mlp with hidden='abc': hidden must be an integer"),
    (["train", "bnn-mlp", "--set", "model.hidden=16.0"], "with hidden=16.0: hidden must be an integer"),
    (["train", "bnn-mlp", "--set", "model.binary=no"], "with binary='no': binary must be true or false"),
    (["train", "bnn-mlp", "--set", "model.binary=2"], "with binary=2: binary must be true or false"),
    (["train", "bnn-mlp", "--set", "model.dropout=true"], "with dropout=True: dropout must be a number"),
    (["train", "bnn-convnet", "--set", "model.widths=[8,16]"], "widths must be 3 positive ints"),
    (["train", "bnn-convnet", "--set", "model.widths=[8,8,16,16,32,32]"], "widths must be 3 positive ints"),
    (["train", "bnn-mlp", "--set", "model.dropout=2"], "with dropout=2: input_dropout must be in [0, 1)"),
    (["train", "bnn-mlp", "--set", "model.num_classes=3"], "num_classes come from the data set"),
    (["train", "bnn-mlp", "--init", "bn_retrain"], "add --init-from CHECKPOINT"),
    (["train", "bnn-mlp", "--set", "init=bn_retrain"], "add --init-from CHECKPOINT"),
    (["summary", "bnn-mlp", "--num-classes", "0"], "--num-classes must be from 1 to 1000000"),
    (["summary", "bnn-mlp", "--input-shape", "1,28"], "must be three positive integers"),
    (["summary", "bnn-mlp", "--input-shape", "1,28,30"], "input shape (1, 28, 30) does not fit bnn-mlp"),
])
def test_settings_are_checked_before_anything_runs(tmp_path, args, msg, cli_error):
    assert msg in cli_error([*args, "--out", str(tmp_path / "run")] if args[0] == "train" else args)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("args", [["train"], ["train", "bnn-mlp", "--bogus"], ["frobnicate"],
                                  ["summary", "bnn-mlp", "--num-classes", "abc"]])
def test_usage_errors_are_one_message_and_exit_2(capsys, args):
    assert cli(args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "Error" in err


def test_a_failing_command_exit_code_is_returned(monkeypatch):
    import typer

    from onebit.cli import main as main_mod

    def boom(*_a, **_k):
        raise typer.Exit(3)

    monkeypatch.setattr(main_mod, "app", lambda **_k: boom())
    assert main_mod.main(["train", "bnn-mlp"]) == 3
    # standalone_mode=False: click returns a command's typer.Exit code instead of raising it
    monkeypatch.setattr(main_mod, "app", lambda **_k: 5)
    assert main_mod.main(["train", "bnn-mlp"]) == 5


def test_summary_defaults_to_the_models_own_classes(capsys):
    assert cli(["summary", "bireal-resnet18"]) == 0
    out = capsys.readouterr().out
    assert "memory 33.64 Mbit" in out and "compression 11.12×" in out  # 1000 ImageNet classes (methods.md §0.6)



def test_paths_that_are_folders_or_missing_are_named(tmp_path, cli_error):
    run = tmp_path / "run"
    run.mkdir()
    (run / "best.safetensors").write_bytes(b"x")
    err = cli_error(["eval", str(run)])
    assert "is a folder, not a checkpoint file" in err and str(run / "best.safetensors") in err
    assert "checkpoint not found: missing.safetensors" in cli_error(["summary", "missing.safetensors"])
    afile = tmp_path / "afile"
    afile.write_text("mine")
    assert "is a file; --out names the folder" in cli_error(["train", "bnn-mlp", "--out", str(afile)])
    assert afile.read_text() == "mine"


def test_train_without_a_validation_split_says_so(tiny_mnist, tmp_path, capsys):
    assert cli(["train", "bnn-mlp", "--data-root", str(tiny_mnist), "--epochs", "1", "--val-size", "0",
                "--set", "model.hidden=8", "--batch-size", "10", "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "done: test accuracy" in out and "after the last epoch" in out and "best val" not in out
