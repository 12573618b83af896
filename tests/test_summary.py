"""Accounting (methods.md §0.6 conventions) and the summary / export / run commands."""

import pytest
import torch

import onebit
from onebit import models
from onebit.cli.main import main as cli
from onebit.nn import BinaryConv2d, BinaryLinear


def test_bnn_convnet_accounting():
    s = onebit.summary(models.create("bnn-convnet"), (3, 32, 32))
    # binary weights 1 bit (all but the first conv's MACs are binary), BN weight+bias real
    assert s.params == sum(p.numel() for p in models.create("bnn-convnet").parameters())
    bin_w = 14_022_016
    assert s.memory_bits == bin_w + 32 * (s.params - bin_w)
    first = s.rows[0]
    assert first.input == "real" and first.weight == "binary" and first.float_macs == 128 * 32 * 32 * 27
    assert s.binary_macs == sum(r.binary_macs for r in s.rows) > 0
    assert s.ops == pytest.approx(s.float_macs + s.binary_macs / 64)
    assert s.compression == pytest.approx(32 * s.params / s.memory_bits)


def test_scales_count_32_bits_and_real_layers_count_float_macs():
    net = torch.nn.Sequential(BinaryConv2d(3, 8, 3, input_quantizer=None, weight_quantizer="identity"),
                              BinaryConv2d(8, 16, 3, scale="mean_abs"), torch.nn.Flatten(),
                              BinaryLinear(16 * 4 * 4, 10))
    s = onebit.summary(net, (3, 8, 8))
    r0, r1, r3 = s.rows
    assert r0.memory_bits == 32 * 8 * 27 and r0.float_macs == 8 * 36 * 27 and r0.binary_macs == 0
    assert r1.memory_bits == 16 * 72 + 32 * 16 and r1.binary_macs == 16 * 16 * 72
    assert r3.binary_macs == 256 * 10
    assert "compression" in str(s)


def test_cli_summary(capsys):
    assert cli(["summary", "bnn-mlp"]) == 0
    out = capsys.readouterr().out
    assert "36,831,252" in out and "compression" in out


def test_cli_plot_writes_png(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.csv").write_text(
        "epoch,lr,train_loss,train_acc,val_loss,val_acc,test_loss,test_acc,epoch_s,wall_s\n"
        "0,0.1,1.0,0.5,0.9,0.6,0.95,0.55,1,1\n1,0.05,0.8,0.7,0.7,0.7,0.75,0.68,1,2\n")
    assert cli(["plot", str(run), "-o", str(tmp_path / "c.png")]) == 0
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    assert cli(["plot", str(tmp_path / "nope")]) == 2


def test_cli_bench_rejects_unknown_inputs(capsys):
    assert cli(["bench", "--model", "nope"]) == 2
    assert "no end-to-end benchmark" in capsys.readouterr().err
    assert cli(["bench", "--batches", "one"]) == 2


@pytest.mark.parametrize("native", [False, True])
def test_bench_says_when_pytorch_bf16_is_no_fair_baseline(monkeypatch, native):
    """On a CPU without native bf16 (AVX2 only) PyTorch's bf16 is emulated and many times slower than
    its fp32: the end-to-end benchmark says so and records it."""
    from onebit.analysis.bench import end_to_end
    from onebit.train import trainer

    monkeypatch.setattr(trainer, "cpu_has_native_bf16", lambda: native)
    lines = []
    res = end_to_end(1, 1, (1,), ("bnn-mlp",), echo=lines.append)
    assert res["torch_bf16_native"] is native
    assert any("not a fair baseline" in line for line in lines) == (not native)


def test_bench_checks_the_timed_engine_output_against_the_model():
    """A fast-but-wrong path cannot enter a table: the timed output is compared with the PyTorch
    model, and a row records the error and the argmax agreement."""
    import numpy as np

    from onebit.analysis.bench import check_engine_output, end_to_end

    ref = np.array([[1.0, 2.0, 0.5], [0.2, -1.0, 3.0]])
    err, agree = check_engine_output(ref + 1e-6, ref, 0.05, "ok")
    assert err == pytest.approx(1e-6 / 3) and agree == 1.0
    with pytest.raises(RuntimeError, match=r"wrong: the timed output differs from the PyTorch model by 0.933 .*"
                                           r"argmax agreement 50 %"):
        check_engine_output(ref[:, ::-1].copy(), ref, 0.05, "wrong")  # the classes in reverse order
    row = end_to_end(1, 1, (2,), ("bnn-mlp",), echo=lambda *_: None)["results"][0]
    assert row["engine_max_rel_err"] < 1e-4 and row["engine_argmax_agreement"] == 1.0
    assert row["torch_fp32_layout"] == "flat"
