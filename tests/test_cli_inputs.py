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


def _err(capsys, args) -> str:
    rc = cli(args)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.count("\n") == 1 and err.startswith("onebit: error: "), err  # one clear line, no traceback
    return err


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
def test_run_input_array_is_checked(model_file, tmp_path, capsys, arr, msg):
    import re

    err = _err(capsys, ["run", str(model_file), "--input", str(_npy(tmp_path, "x.npy", arr))])
    assert re.search(msg, err), err


def test_run_input_files_that_are_not_arrays(model_file, tmp_path, capsys):
    obj = _npy(tmp_path, "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    assert "holds Python objects" in _err(capsys, ["run", str(model_file), "--input", str(obj)])
    junk = tmp_path / "junk.npy"
    junk.write_bytes(b"\x93NUMPY garbage")
    assert "not a readable .npy" in _err(capsys, ["run", str(model_file), "--input", str(junk)])
    assert "not found" in _err(capsys, ["run", str(model_file), "--input", str(tmp_path / "none.npy")])


@pytest.mark.parametrize("opts, msg", [
    (["--threads", "0"], "threads must be a positive integer, got 0"),
    (["--threads", "-2"], "threads must be a positive integer"),
    (["--batch-size", "0"], "--batch-size must be >= 1"),
    (["--limit", "-1"], "--limit must be >= 1"),
    (["--output", "y.npy"], "--output needs --input"),
])
def test_run_options_are_checked(model_file, capsys, opts, msg):
    assert msg in _err(capsys, ["run", str(model_file), *opts])


def test_run_on_a_data_set_of_another_shape(model_file, tiny_mnist, capsys):
    err = _err(capsys, ["run", str(model_file), "--data-root", str(tiny_mnist)])
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
    (["bench", "--threads", "0"], "--threads and --repeats must be >= 1"),
    (["bench", "--batches", "0,8"], "--batches must be positive"),
])
def test_other_commands_check_their_numbers(capsys, args, msg):
    assert msg in _err(capsys, args)
