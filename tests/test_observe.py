"""Observability: per-layer flip ratio / saturation / histograms, layers.csv, TensorBoard, plots (issue 7)."""

import csv
import json
import logging
from pathlib import Path

import pytest
import torch

from onebit.cli.main import main as cli
from onebit.methods import Recipe
from onebit.nn import BinaryLinear
from onebit.train import train
from onebit.train.observe import LayerStats, binary_layers


@pytest.fixture
def tiny_mnist(make_tiny_mnist):
    """A learnable 10-class 'MNIST' of 200 + 40 images (tests/conftest.py)."""
    return make_tiny_mnist(200, 40)


def _recipe(**kw):
    return Recipe(**{**dict(model="bnn-mlp", data="mnist", model_kwargs={"hidden": 24}, epochs=2, batch_size=25,
                            val_size=40, lr=3e-3, lr_schedule="exp", lr_final=3e-5, glorot_lr_scale=True), **kw})


def test_flip_ratio_and_saturation_are_exact():
    net = torch.nn.Sequential(BinaryLinear(4, 5), torch.nn.Linear(5, 2), BinaryLinear(2, 2, weight_quantizer=None))
    assert [n for n, _ in binary_layers(net)] == ["0"]  # real-weight layers are not binary layers
    w = net[0].weight
    with torch.no_grad():
        w.copy_(torch.linspace(-1, 1, 20).reshape(5, 4))  # 10 negative, 10 positive; |w| = 1 twice
    stats = LayerStats(net)
    with torch.no_grad():
        w[0, :3] *= -1   # 3 sign changes
        w[4, 3] = 0.0    # +1 stays +1 (sign(0) = +1)
    rows, hists = stats.epoch_end(0)
    (r,) = rows
    assert r["layer"] == "0" and r["numel"] == 20
    assert r["flip_ratio"] == pytest.approx(3 / 20)
    assert r["saturated"] == pytest.approx(1 / 20)  # w[0,0] became +1, w[4,3] (was 1) is now 0
    assert sum(hists["0"]["counts"]) == 20 and hists["0"]["lo"] == -1.0
    rows, _ = stats.epoch_end(1)  # nothing changed since the last epoch
    assert rows[0]["flip_ratio"] == 0.0


def test_training_writes_layer_stats_histograms_and_plots(tiny_mnist, tmp_path, capsys):
    out = tmp_path / "run"
    train(_recipe(), out, data_root=str(tiny_mnist), progress=False)
    rows = list(csv.DictReader(open(out / "layers.csv")))
    layers = sorted({r["layer"] for r in rows})
    assert len(rows) == 2 * len(layers) == 8  # 4 binary layers (bnn-mlp: 3 hidden + output)
    for r in rows:
        assert 0 <= float(r["flip_ratio"]) <= 1 and 0 <= float(r["saturated"]) <= 1
        assert 0 < float(r["mean_abs"]) <= 1
    assert any(float(r["flip_ratio"]) > 0 for r in rows if r["epoch"] == "0")  # training flips signs
    hist = json.loads((out / "histograms.json").read_text())
    assert sorted(hist["layers"]) == layers
    for entries in hist["layers"].values():
        assert [e["epoch"] for e in entries] == [0, 1]
        assert len(entries[0]["counts"]) == hist["bins"]
    assert cli(["plot", str(out)]) == 0
    for name in ("curves.png", "curves-layers.png", "curves-histograms.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG", name
    assert "curves-histograms.png" in capsys.readouterr().out
    svg = tmp_path / "figs" / "c.svg"  # the companions follow the format the user asked for
    svg.parent.mkdir()
    assert cli(["plot", str(out), "-o", str(svg)]) == 0
    assert sorted(p.name for p in svg.parent.iterdir()) == ["c-histograms.svg", "c-layers.svg", "c.svg"]
    assert all(b"<svg" in p.read_bytes()[:400] for p in svg.parent.iterdir())


def test_tensorboard_flag_without_the_package_warns_and_trains(tiny_mnist, tmp_path, monkeypatch, caplog):
    import builtins

    real_import = builtins.__import__

    def no_tb(name, *a, **kw):
        if name.startswith("torch.utils.tensorboard") or name.startswith("tensorboard"):
            raise ImportError("No module named 'tensorboard'")
        return real_import(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_tb)
    with caplog.at_level(logging.WARNING, logger="onebit.train"):
        res = train(_recipe(epochs=1), tmp_path / "run", data_root=str(tiny_mnist), progress=False, tensorboard=True)
    assert res.epochs_run == 1
    assert "tensorboard package is not installed" in caplog.text
    assert not (tmp_path / "run" / "tb").exists()


def test_tensorboard_event_files(tiny_mnist, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    train(_recipe(), out, data_root=str(tiny_mnist), progress=False, tensorboard=True)
    acc = EventAccumulator(str(out / "tb"))
    acc.Reload()
    tags = acc.Tags()
    for tag in ("loss/train", "acc/val", "acc/test", "lr", "flip_ratio/1", "saturated/1", "loss/train_step"):
        assert tag in tags["scalars"], (tag, tags["scalars"])
    assert "weights/1" in tags["histograms"]
    assert [e.step for e in acc.Scalars("acc/test")] == [0, 1]


def _fake_run(path, layer, epochs):
    """A run folder whose histograms.json holds ``epochs`` = [(epoch, counts), ...] for one layer."""
    path.mkdir(parents=True)
    entries = [{"epoch": e, "lo": -1.0, "hi": 1.0, "counts": [int(v) for v in c]} for e, c in epochs]
    (path / "histograms.json").write_text(json.dumps({"bins": len(epochs[0][1]), "layers": {layer: entries}}))
    return path


def test_valley_ratio_tells_one_mode_from_two():
    import numpy as np

    from onebit.analysis.plots import valley_ratio

    x = np.linspace(-1, 1, 40)
    gauss = 1000 * np.exp(-x ** 2 / 0.1)
    bimodal = 1000 * (np.exp(-(x - 0.6) ** 2 / 0.01) + np.exp(-(x + 0.6) ** 2 / 0.01))
    assert valley_ratio({"counts": gauss.round()}) > 0.95
    assert valley_ratio({"counts": bimodal.round()}) < 0.05
    assert valley_ratio({"counts": [0] * 40}) != valley_ratio({"counts": [0] * 40})  # nan: no weights


def test_cli_plots_the_kernel_distribution_of_a_layer_for_several_runs(tmp_path, capsys):
    import numpy as np

    x = np.linspace(-1, 1, 40)
    g = (1000 * np.exp(-x ** 2 / 0.1)).round().astype(int)
    b = (1000 * (np.exp(-(x - 0.6) ** 2 / 0.01) + np.exp(-(x + 0.6) ** 2 / 0.01))).round().astype(int)
    bonn = _fake_run(tmp_path / "bonn", "l.conv", [(0, g), (1, b)])
    base = _fake_run(tmp_path / "base", "l.conv", [(0, g), (1, g)])
    out = tmp_path / "k.png"
    assert cli(["plot", str(bonn), str(base), "--layer", "l.conv", "--label", "BONN", "--label", "plain",
                "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert out.read_bytes()[:4] == b"\x89PNG"
    assert "BONN: valley/peak by epoch 1:1.00 2:0.00" in text and "plain: valley/peak by epoch 1:1.00 2:1.00" in text
    assert cli(["plot", str(bonn), "--layer", "nope"]) == 2
    assert "its binary layers: l.conv" in capsys.readouterr().err


def test_plots_replace_a_file_whole_and_refuse_an_unknown_format_without_touching_it(tmp_path, capsys):
    import numpy as np

    g = (1000 * np.exp(-np.linspace(-1, 1, 40) ** 2 / 0.1)).round().astype(int)
    run = _fake_run(tmp_path / "run", "l.conv", [(0, g), (1, g)])
    out = tmp_path / "figs" / "k.png"
    out.parent.mkdir()
    out.write_bytes(b"an older figure")
    assert cli(["plot", str(run), "--layer", "l.conv", "-o", str(out)]) == 2  # not without --force
    assert "pass --force" in capsys.readouterr().err and out.read_bytes() == b"an older figure"
    assert cli(["plot", str(run), "--layer", "l.conv", "-o", str(out), "--force"]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in out.parent.iterdir()) == ["k.png"]  # no temp file left behind
    svg = out.with_suffix(".svg")
    assert cli(["plot", str(run), "--layer", "l.conv", "-o", str(svg)]) == 0
    assert b"<svg" in svg.read_bytes()[:400]
    bad = out.with_suffix(".xyz")
    bad.write_bytes(b"keep me")
    assert cli(["plot", str(run), "--layer", "l.conv", "-o", str(bad), "--force"]) != 0
    assert "xyz" in capsys.readouterr().err
    assert bad.read_bytes() == b"keep me"
    assert sorted(p.name for p in out.parent.iterdir()) == ["k.png", "k.svg", "k.xyz"]


def test_plot_names_missing_metrics_columns_and_draws_a_single_epoch(tmp_path, capsys, monkeypatch):
    from onebit.analysis import plots
    from onebit.cli.main import main as cli

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "metrics.csv").write_text("step,loss\n1,0.5\n")
    assert cli(["plot", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "lacks the column(s) epoch, lr, train_loss" in err and err.count("\n") == 1
    one = tmp_path / "one"
    one.mkdir()
    (one / "metrics.csv").write_text("epoch,lr,train_loss,train_acc,val_loss,val_acc,test_loss,test_acc\n"
                                     "0,0.001,1.5,0.4,1.4,0.45,1.45,0.44\n")
    assert plots.plot_curves([one], tmp_path / "c.png").stat().st_size > 0
    drawn = []  # the figure's lines, caught where the PNG would be written
    monkeypatch.setattr(plots, "_save", lambda fig, out: drawn.extend(l for ax in fig.axes for l in ax.get_lines())
                        or Path(out))
    plots.plot_curves([one], tmp_path / "d.png")
    assert drawn and all(l.get_marker() == "o" for l in drawn)  # a 1-point line alone is invisible
    assert [l.get_label() for l in drawn[:3]] == ["one train", "one val", "one test"]  # val loss drawn too
