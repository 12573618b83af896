"""The CLI on the wrong files: one clear line naming the problem (exit 2), and nothing of the user's
overwritten — a .onebit file where a checkpoint belongs and back, folders and files in each
other's place, corrupt run files, NaN weights, BWNH settings checked before minutes of hashing."""

import numpy as np
import pytest
import torch

from onebit import models
from onebit.cli.main import main as cli
from onebit.methods import get_recipe
from onebit.train.checkpoint import save_checkpoint
from onebit.train.trainer import CSV_FIELDS

pytest.importorskip("onebit.kernels")


def _checkpoint(path, *, nan: bool = False):
    """A bnn-mlp checkpoint for 28×28 MNIST-shaped images, as `onebit train` writes it."""
    torch.manual_seed(0)
    model = models.create("bnn-mlp", hidden=16, in_channels=1, image_size=28, num_classes=10)
    if nan:
        with torch.no_grad():
            next(model.parameters())[0, :3] = float("nan")
    meta = {"recipe": get_recipe("bnn-mlp").replace(data="mnist").to_dict(), "model_config": model.onebit_config,
            "data_info": {"name": "mnist", "num_classes": 10, "in_channels": 1, "image_size": 28},
            "epoch": 0, "best_val_acc": 0.1, "best_epoch": 0, "test_acc_at_best": 0.1}
    save_checkpoint(path, model, meta)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli-files")
    ckpt = _checkpoint(d / "best.safetensors")
    assert cli(["export", str(ckpt), "-o", str(d / "m.onebit")]) == 0
    return d, ckpt, d / "m.onebit"


def _run_folder(path, rows: list[str]):
    path.mkdir()
    (path / "metrics.csv").write_text(",".join(CSV_FIELDS) + "\n" + "".join(r + "\n" for r in rows))
    return path


ROW = "0,0.001,1.5,0.4,1.4,0.45,1.4,0.44,3.0,3.5"


def test_a_onebit_model_where_a_checkpoint_belongs_is_named(files, cli_error):
    _, _, onebit = files
    for args in (["eval", str(onebit)], ["export", str(onebit), "-o", "x.onebit"], ["summary", str(onebit)]):
        assert "is an exported .onebit model (for `onebit run`" in cli_error(args)


def test_a_checkpoint_where_a_onebit_model_belongs_is_named(files, cli_error):
    _, ckpt, _ = files
    err = cli_error(["run", str(ckpt), "--limit", "1"])
    assert "is a training checkpoint, not an exported .onebit model; export it first" in err


def test_run_input_that_is_a_folder_or_not_a_npy_file(files, tmp_path, cli_error):
    _, ckpt, onebit = files
    assert "is a folder; give a .npy file" in cli_error(["run", str(onebit), "--input", str(tmp_path)])
    assert "is not a .npy file" in cli_error(["run", str(onebit), "--input", str(ckpt)])
    npz = tmp_path / "x.npz"
    np.savez(npz, a=np.zeros(3), b=np.ones(3))
    assert "holds several arrays (.npz)" in cli_error(["run", str(onebit), "--input", str(npz)])


def test_run_input_with_a_data_set_is_a_conflict(files, tmp_path, cli_error):
    _, _, onebit = files
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((1, 1, 28, 28), np.float32))
    assert "with --input the engine runs on that array" in cli_error(
        ["run", str(onebit), "--input", str(x), "--data", "cifar10"])


def test_summary_of_a_checkpoint_takes_no_num_classes(files, cli_error):
    _, ckpt, _ = files
    assert "a checkpoint has its own classes" in cli_error(["summary", str(ckpt), "--num-classes", "5"])


def test_outputs_below_a_file_name_the_file(files, cli_error):
    d, ckpt, onebit = files
    err = cli_error(["train", "bnn-mlp", "--out", str(onebit / "run")])
    assert f"{onebit} is a file, not a folder" in err
    err = cli_error(["export", str(ckpt), "-o", str(onebit / "x.onebit")])
    assert f"{onebit} is a file, not a folder" in err
    assert not (d / "run").exists()


def test_an_output_the_user_may_not_write_is_one_line_naming_it(files, tmp_path, monkeypatch, cli_error):
    """A folder without write permission, a read-only or full disk: one error line with the user's
    path (not the temp file an atomic write goes through), exit 2."""
    import errno
    import tempfile

    from onebit import fileio

    d, ckpt, _ = files

    real = tempfile.mkstemp

    def refuse(*a, dir=None, **kw):  # only in the user's folder (export verifies in a temp folder first)
        if str(dir) == str(tmp_path):
            raise PermissionError(errno.EACCES, "Permission denied", f"{dir}/.tmp-name")
        return real(*a, dir=dir, **kw)

    with monkeypatch.context() as m:
        m.setattr(fileio.tempfile, "mkstemp", refuse)
        err = cli_error(["export", str(ckpt), "-o", str(tmp_path / "x.onebit")])
    assert err.strip() == f"onebit: error: Permission denied: {tmp_path / 'x.onebit'}"

    def read_only(self, *a, **kw):
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.setattr(type(tmp_path), "mkdir", read_only)
    err = cli_error(["train", "bnn-mlp", "--epochs", "1", "--out", str(tmp_path / "run"), "--no-progress"])
    assert err.strip() == f"onebit: error: Read-only file system: {tmp_path / 'run'}"


def test_an_os_error_that_is_no_user_error_still_shows_its_traceback(monkeypatch):
    """An I/O error is a bug or a broken disk, not a wrong path: it is not hidden behind one line."""
    import errno

    import typer

    app = typer.Typer()

    @app.command()
    def boom() -> None:
        raise OSError(errno.EIO, "Input/output error")

    @app.command()
    def denied() -> None:  # a permission error about no path of the user's (a socket, an affinity call)
        raise PermissionError(errno.EPERM, "Operation not permitted")

    @app.command()
    def other() -> None:
        pass

    monkeypatch.setattr("onebit.cli.main.app", app)
    with pytest.raises(OSError, match="Input/output"):
        cli(["boom"])
    with pytest.raises(PermissionError, match="Operation not permitted"):
        cli(["denied"])


def test_plot_never_replaces_a_users_file_without_force(tmp_path, cli_error):
    run = _run_folder(tmp_path / "run", [ROW])
    mine = tmp_path / "notes.pdf"
    mine.write_text("mine")
    assert "already exist(s); pass --force" in cli_error(["plot", str(run), "-o", str(mine)])
    assert mine.read_text() == "mine"
    companion = tmp_path / "fig-layers.png"  # a file the figure's companions would replace
    companion.write_text("mine too")
    assert "fig-layers.png already exist(s)" in cli_error(["plot", str(run), "-o", str(tmp_path / "fig.png")])
    assert companion.read_text() == "mine too" and not (tmp_path / "fig.png").exists()
    (tmp_path / "dir.png").mkdir()
    assert "is a folder; name a file" in cli_error(["plot", str(run), "-o", str(tmp_path / "dir.png")])
    assert cli(["plot", str(run), "-o", str(mine), "--force"]) == 0
    assert mine.read_bytes().startswith(b"%PDF")
    assert cli(["plot", str(run)]) == 0 and cli(["plot", str(run)]) == 0  # the default names are refreshed


@pytest.mark.parametrize("rows, msg", [
    (["0,abc,x,y,z,w,q,r,s,t"], "line 2: lr = 'abc' is not a number: the file is corrupt"),
    ([ROW, "1,0.001,1.5"], "line 3 does not have the header's 10 fields"),
    ([ROW + ",7"], "line 2 does not have the header's 10 fields"),
    ([",0.001,1.5,0.4,1.4,0.45,1.4,0.44,3.0,3.5"], "an epoch number is missing"),
])
def test_plot_refuses_a_corrupt_metrics_file(tmp_path, rows, msg, cli_error):
    run = _run_folder(tmp_path / "run", rows)
    assert msg in cli_error(["plot", str(run)])
    assert not (run / "curves.png").exists()


def test_plot_reads_a_run_being_written(tmp_path, cli_error):
    """An epoch row half-appended (no newline yet) is not an epoch: the others are plotted."""
    run = _run_folder(tmp_path / "run", [ROW])
    with open(run / "metrics.csv", "a") as f:
        f.write("1,0.0009,1.4")
    assert cli(["plot", str(run)]) == 0 and (run / "curves.png").is_file()
    (run / "metrics.csv").write_text("garbage header\n")
    assert "lacks the column(s) epoch" in cli_error(["plot", str(run)])


def test_empty_cells_are_missing_figures_not_errors(tmp_path):
    from onebit.analysis.plots import read_metrics

    run = _run_folder(tmp_path / "run", ["0,0.001,1.5,0.4,,,1.4,0.44,3.0,3.5"])  # no validation split
    m = read_metrics(run)
    assert m["epoch"] == [0.0] and np.isnan(m["val_acc"][0]) and m["test_acc"] == [0.44]


def test_nan_weights_are_refused_with_their_name(tmp_path, cli_error):
    bad = _checkpoint(tmp_path / "nan.safetensors", nan=True)
    err = cli_error(["eval", str(bad)])
    assert "1.weight holds 3 NaN/inf value(s)" in err and "corrupt or the training diverged" in err
    assert "NaN/inf" in cli_error(["export", str(bad), "-o", str(tmp_path / "x.onebit")])
    assert not (tmp_path / "x.onebit").exists()


def test_export_of_a_model_with_nan_weights_names_the_tensor(tmp_path):
    from onebit.deploy import DeployError, export

    model = models.create("bnn-mlp", hidden=16, image_size=12)
    with torch.no_grad():
        model[1].weight[0, 0] = float("inf")
    with pytest.raises(DeployError, match=r"model tensor 1\.weight holds 1 NaN/inf"):
        export(model.eval(), tmp_path / "x.onebit", torch.zeros(1, 1, 12, 12))


def test_data_with_a_missing_root_is_an_error(tmp_path, cli_error):
    assert "(--data-root) does not exist" in cli_error(["data", "--data-root", str(tmp_path / "nope")])


@pytest.mark.parametrize("opts, msg", [
    (["--threads", "0"], "threads must be an integer >= 1, got 0"),
    (["--per-image", "-1"], "per_image must be an integer >= 1, got -1"),
    (["--per-image", "0"], "per_image must be an integer >= 1, got 0"),
    (["--samples", "0"], "samples must be an integer >= 1, got 0"),
    (["--finetune-epochs", "-1"], "finetune_epochs must be an integer >= 0, got -1"),
    (["--iters", "-1"], "iters must be an integer >= 0"),
    (["--tol", "-0.1"], "tol must be a number >= 0, got -0.1"),
    (["--tol", "nan"], "tol must be a number >= 0, got nan"),
    (["--protocol", "c"], "unknown fine-tuning protocol 'c'"),
    (["--source", "nope"], "unknown source 'nope'"),
    (["--target", "nope"], "unknown target 'nope'"),
])
def test_bwnh_settings_are_checked_before_the_checkpoint_is_read(tmp_path, opts, msg, cli_error):
    out = tmp_path / "out"
    assert msg in cli_error(["bwnh", str(tmp_path / "not-read.safetensors"), "--out", str(out), *opts])
    assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA machine has the device")
def test_bwnh_on_a_missing_device(tmp_path, cli_error):
    assert "sees no CUDA GPU" in cli_error(["bwnh", str(tmp_path / "x.safetensors"), "--device", "cuda",
                                               "--out", str(tmp_path / "out")])


def test_bwnh_never_hashes_into_a_finished_run(tmp_path, cli_error):
    out = tmp_path / "out"
    out.mkdir()
    (out / "hashed.safetensors").write_bytes(b"an earlier run's")
    assert "already holds a BWNH run (hashed.safetensors)" in cli_error(
        ["bwnh", str(tmp_path / "x.safetensors"), "--out", str(out)])
    assert (out / "hashed.safetensors").read_bytes() == b"an earlier run's"


def test_bwnh_on_a_model_without_a_twin_names_the_option(files, tmp_path, cli_error):
    _, ckpt, _ = files
    err = cli_error(["bwnh", str(ckpt), "--out", str(tmp_path / "a")])
    assert "no BWNH twin is known for model 'bnn-mlp'" in err and "with --model" in err
    err = cli_error(["bwnh", str(ckpt), "--model", "vgg9-bwn", "--out", str(tmp_path / "b")])
    assert "vgg9-bwn is not a binary-weight twin of bnn-mlp" in err


def test_bwnh_checks_the_data_shape(files, tmp_path, cli_error):
    _, ckpt, _ = files
    err = cli_error(["bwnh", str(ckpt), "--model", "bnn-mlp", "--data", "cifar10", "--out", str(tmp_path / "o")])
    assert "data set cifar10 has images of shape (3, 32, 32)" in err and "takes (1, 28, 28)" in err


def test_plot_default_names_in_the_current_folder_are_not_replaced(tmp_path, monkeypatch, cli_error):
    """With several runs (or --layer) the default figure goes to the current folder, where a file
    of that name may be the user's: refused without --force, like -o."""
    a, b = _run_folder(tmp_path / "a", [ROW]), _run_folder(tmp_path / "b", [ROW])
    monkeypatch.chdir(tmp_path)
    (tmp_path / "curves.png").write_text("mine")
    assert "curves.png already exist(s); pass --force" in cli_error(["plot", str(a), str(b)])
    assert (tmp_path / "curves.png").read_text() == "mine"
    assert cli(["plot", str(a), str(b), "--force"]) == 0
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_plot_on_an_unreadable_metrics_file_is_one_line(tmp_path, cli_error):
    run = _run_folder(tmp_path / "run", [ROW])
    (run / "metrics.csv").write_text(",".join(CSV_FIELDS) + '\n0,"' + "x" * 200_000 + "\n")  # an unclosed quote
    assert "is not a readable CSV file" in cli_error(["plot", str(run)])
    (run / "metrics.csv").write_bytes(b"\xff\xfe\x00bad")
    assert f"{run / 'metrics.csv'} is not a readable CSV file" in cli_error(["plot", str(run)])


def test_data_root_with_a_tilde_is_expanded(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "d").mkdir()
    assert cli(["data", "--data-root", "~/d"]) == 0
    assert "mnist" in capsys.readouterr().out


def test_bwnh_settings_accept_numpy_integers(tmp_path):
    from onebit.methods.bwnh import bwnh_pipeline
    from onebit.train import CheckpointError

    with pytest.raises(CheckpointError, match="checkpoint not found"):  # past the settings, at the file
        bwnh_pipeline(tmp_path / "missing.safetensors", None, tmp_path / "out", samples=np.int64(64),
                      per_image=np.int32(4), tol=np.float32(1e-6))


def test_ctrl_c_says_interrupted_and_exits_130(monkeypatch, capsys):
    import typer

    app = typer.Typer()

    @app.command()
    def wait() -> None:
        raise KeyboardInterrupt

    @app.command()
    def other() -> None:
        pass

    monkeypatch.setattr("onebit.cli.main.app", app)
    assert cli(["wait"]) == 130
    assert "onebit: interrupted" in capsys.readouterr().err


def test_a_run_folder_where_a_checkpoint_belongs_gets_the_hint(files, tmp_path, cli_error):
    """summary and --init-from name the folder's checkpoint, as eval and export do."""
    d, ckpt, _ = files
    err = cli_error(["summary", str(d)])
    assert f"{d} is a folder, not a checkpoint file (did you mean {ckpt}?)" in err
    err = cli_error(["train", "bnn-mlp", "--init-from", str(d), "--epochs", "1", "--out", str(tmp_path / "r")])
    assert f"no checkpoint at {d} ({d} is a run folder; did you mean {ckpt}?)" in err
    err = cli_error(["train", "bnn-mlp", "--init-from", str(tmp_path), "--epochs", "1", "--out", str(tmp_path / "r")])
    assert err.strip().endswith(f"no checkpoint at {tmp_path} ({tmp_path} is a folder)")


def test_init_from_a_checkpoint_of_another_model_names_both(files, tmp_path, make_tiny_mnist, cli_error):
    """The checkpoint holds bnn-mlp, the run trains another model (or bnn-mlp of another width): the
    error says which model each side is, with the labels the right way round."""
    d, ckpt, _ = files
    args = ["--data", "mnist", "--data-root", str(make_tiny_mnist(300, 60)), "--val-size", "50",
            "--init-from", str(ckpt), "--epochs", "1", "--out", str(tmp_path / "r")]
    err = cli_error(["train", "bonn-wrn22", *args, "--set", "model.widths=[4,4,4,4]"])
    assert f"init_from: {ckpt} holds bnn-mlp, this run trains bonn-wrn22; " in err
    assert "missing in the checkpoint's model: " in err and "not in the trained model: " in err
    err = cli_error(["train", "bnn-mlp", *args, "--set", "model.hidden=32"])
    assert f"{ckpt} holds bnn-mlp of other settings; " in err
    assert "(trained) vs (16, 784) (checkpoint's)" in err


def test_export_reports_the_size_honestly_for_a_float_network(tmp_path, capsys):
    """A binary network packs ~32× smaller; a float one does not, and the line must not say it does."""
    torch.manual_seed(0)
    model = models.create("bnn-mlp-float", hidden=16, in_channels=1, image_size=28, num_classes=10)
    meta = {"recipe": get_recipe("bnn-mlp-float").replace(data="mnist").to_dict(), "model_config": model.onebit_config,
            "data_info": {"name": "mnist", "num_classes": 10, "in_channels": 1, "image_size": 28},
            "epoch": 0, "best_val_acc": 0.1, "best_epoch": 0, "test_acc_at_best": 0.1}
    save_checkpoint(tmp_path / "f.safetensors", model, meta)
    assert cli(["export", str(tmp_path / "f.safetensors"), "-o", str(tmp_path / "f.onebit")]) == 0
    line = capsys.readouterr().out
    assert "% against the fp32 state_dict" in line and "smaller" not in line


def test_plot_warns_about_a_damaged_companion_file_and_keeps_the_curves(tmp_path, capsys):
    """A garbage layers.csv or histograms.json costs its own figure (with a warning naming it), not
    the curves, and is never silently skipped."""
    run = _run_folder(tmp_path / "run", [ROW])
    (run / "layers.csv").write_text("garbage\n1\n")
    (run / "histograms.json").write_text("{bad")
    with pytest.warns(UserWarning) as warned:
        assert cli(["plot", str(run)]) == 0
    said = [str(w.message) for w in warned]
    assert any(f"no layers figure: {run / 'layers.csv'} is not an onebit layer-statistics file" in m for m in said)
    assert any(f"no histograms figure: {run / 'histograms.json'} is not an onebit histogram file" in m for m in said)
    assert (run / "curves.png").is_file() and not (run / "curves-layers.png").exists()
    assert f"wrote {run / 'curves.png'}" in capsys.readouterr().out



@pytest.mark.parametrize("doc", ['{"layers": {"a": [{"epoch": 0}]}}', '{"layers": ["a"]}',
                                 '{"layers": {"a": [{"epoch": 0, "lo": 1, "hi": 0, "counts": [1]}]}}'])
def test_plot_a_histogram_file_of_the_wrong_structure_is_a_warning(tmp_path, doc):
    run = _run_folder(tmp_path / "run", [ROW])
    (run / "histograms.json").write_text(doc)
    with pytest.warns(UserWarning, match="no histograms figure: .* is not an onebit histogram file"):
        assert cli(["plot", str(run)]) == 0
    assert (run / "curves.png").is_file() and not (run / "curves-histograms.png").exists()
