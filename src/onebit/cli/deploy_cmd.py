"""``onebit export`` and ``onebit run``: checkpoint → ``.onebit`` file → accuracy on the engine."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import numpy as np
import typer


def export_(
    checkpoint: Path = typer.Argument(..., help="a checkpoint written by `onebit train`"),
    output: Path = typer.Option(..., "-o", "--output", help="the .onebit file to write"),
    force: bool = typer.Option(False, "--force", help="overwrite an existing output file"),
    no_verify: bool = typer.Option(False, "--no-verify", help="skip the check that the engine reproduces the "
                                   "model on random inputs before the file is written"),
) -> None:
    """Export a trained checkpoint to a bit-packed .onebit file."""
    import torch

    from ..deploy import export
    from ..train import load_for_eval

    check_output(output, force, inputs=[checkpoint])
    model, meta = load_for_eval(checkpoint)
    info = meta.get("data_info") or {}
    cfg = meta.get("model_config") or {}  # checkpoints without data_info (e.g. BWNH's hashed one)
    c = info.get("in_channels", cfg.get("in_channels", 1))
    s = info.get("image_size", cfg.get("image_size", 28))
    rep = export(model, output, torch.zeros(1, c, s, s), verify=not no_verify, overwrite=force,
                 preprocess={"normalize": meta["recipe"].get("normalize", "pm1"), "data": meta["recipe"]["data"]})
    fp32 = sum(t.numel() * 4 for t in model.state_dict().values())
    ratio = fp32 / rep["bytes"]
    size = (f"{ratio:.1f}× smaller than" if ratio >= 1.05 else  # a float network packs nothing: say so
            f"{100 * (rep['bytes'] / fp32 - 1):+.1f}% against")
    typer.echo(f"wrote {output}: {rep['bytes']:,} bytes ({size} the fp32 state_dict of {fp32:,} bytes), "
               f"{rep['ops']} ops")


def run(
    model_file: Path = typer.Argument(..., help="a .onebit file"),
    data: Optional[str] = typer.Option(None, help="data set to score (default: the one it was trained on)"),
    data_root: Optional[str] = typer.Option(None, "--data-root", help="folder holding the data set"),
    threads: Optional[int] = typer.Option(None, help="kernel threads (default: all cores)"),
    batch_size: int = typer.Option(256, "--batch-size", help="images per engine call"),
    limit: Optional[int] = typer.Option(None, help="score only the first N test images (an image folder: N "
                                        "evenly spaced ones, so every class stays in)"),
    input_: Optional[Path] = typer.Option(None, "--input", help="run on this .npy array instead of a data set, "
                                          "(N, C, H, W): uint8 pixels 0..255 (models trained with the 'pm1' "
                                          "preprocessing), or float32 already preprocessed as in training "
                                          "('pm1': x/127.5 - 1, in [-1, 1]; 'meanstd': per-channel standardised); "
                                          "prints the predicted classes"),
    output: Optional[Path] = typer.Option(None, "--output", help="with --input: save the logits to this .npy file"),
    force: bool = typer.Option(False, "--force", help="with --output: overwrite an existing file"),
    int8: bool = typer.Option(False, "--int8", help="run binary-weight layers (real activations) as 8-bit × ±1 "
                              "(AMX-INT8 where available), calibrated on training images"),
    calib: Optional[int] = typer.Option(None, "--calib", help="training images used to calibrate --int8 "
                                        "(default 512)"),
    float_precision: str = typer.Option("fp32", "--float-precision", help="real-valued convs: fp32, bf16x3 "
                                        "(three bf16 products on AMX-BF16: ≈ 2^-16 per product, faster) or bf16 "
                                        "(one bf16 product on AMX-BF16 or AVX512_BF16: ≈ 2^-8, fastest)"),
) -> None:
    """Test accuracy of a .onebit model on the engine (no PyTorch), or predictions for --input."""
    from ..deploy import Engine

    if batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch_size}")
    if limit is not None and limit < 1:
        raise ValueError(f"--limit must be >= 1, got {limit}")
    if output is not None and input_ is None:
        raise ValueError("--output needs --input (it saves the logits of that array)")
    if int8 and input_ is not None:
        raise ValueError("--int8 calibrates on the model's training images: score a data set, not --input")
    if calib is not None and not int8:
        raise ValueError("--calib sets the calibration images of --int8; add --int8")
    calib = 512 if calib is None else calib
    if calib < 1:
        raise ValueError(f"--calib must be >= 1, got {calib}")
    if input_ is not None and (data is not None or data_root is not None):
        raise ValueError("--data/--data-root choose a data set to score; with --input the engine runs on that "
                         "array instead: drop one")
    if output is not None:
        check_output(output, force, inputs=[model_file, input_])
    engine = Engine(model_file, threads=threads, float_precision=float_precision)
    if input_ is not None:
        _predict(engine, input_, output, batch_size, limit)
        return
    from ..data import info, load_arrays

    pre = engine.graph.get("preprocess") or {}
    name = data or pre.get("data")
    if not name:
        raise ValueError("the model file does not say which data set it was trained on; pass --data")
    if info(name).name == "imagefolder":  # decoded a batch at a time, never all in memory
        from ..data.arrays import decode_images, image_folder_split

        size = engine.input_shape[-1]
        test_samples, _ = image_folder_split("test", data_root, limit)
        batches = (decode_images(test_samples[i:i + batch_size], size)
                   for i in range(0, len(test_samples), batch_size))
        n_test, x_shape = len(test_samples), (3, size, size)

        def calib_images() -> np.ndarray:
            return decode_images(image_folder_split("train", data_root, calib)[0], size)[0]
    else:
        arrays = load_arrays(name, data_root)
        x, y = arrays["test"]
        if limit:
            x, y = x[:limit], y[:limit]
        batches = ((x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, len(x), batch_size))
        n_test, x_shape = len(x), tuple(x.shape[1:])

        def calib_images() -> np.ndarray:
            return arrays["train"][0][:calib]
    norm = pre.get("normalize")
    if norm is None:  # a file written by export() without preprocess: the BNN default, said aloud
        import warnings

        warnings.warn(f"{model_file} records no preprocessing; assuming 'pm1' (x/127.5 - 1, the BNN default) "
                      "for the data set's pixels: `onebit export` records the training recipe's", stacklevel=2)
    if x_shape != engine.input_shape:
        raise ValueError(f"data set {name} has images of shape {x_shape}; {model_file} takes "
                         f"{engine.input_shape}")

    def prepare(xb: np.ndarray) -> np.ndarray:
        """The model's preprocessing (stored in the file) of uint8 images, in NumPy."""
        if norm == "pm1":
            return xb  # raw uint8: the engine applies x/127.5 - 1 (bit-plane first layer, exact)
        if norm is None:  # the engine takes uint8 only where the file records pm1: convert here
            return (xb.astype(np.float64) / 127.5 - 1).astype(np.float32)
        xf = xb.astype(np.float32) / np.float32(255)
        if norm == "unit":
            return xf
        if norm != "meanstd":
            raise ValueError(f"unknown preprocessing {norm!r} in {model_file}")
        ds = info(name)
        return (xf - np.asarray(ds.mean, np.float32).reshape(1, -1, 1, 1)) / np.asarray(ds.std, np.float32).reshape(1, -1, 1, 1)

    if int8:
        train_x = calib_images()
        scales = engine.quantize_int8(prepare(train_x))
        typer.echo(f"int8: {len(scales)} binary-weight layers calibrated on {len(train_x)} training images")
    correct, t0, t_engine = 0, time.perf_counter(), 0.0
    for xb, yb in batches:
        xp = prepare(xb)
        t1 = time.perf_counter()
        correct += int((engine.run(xp).argmax(1) == yb).sum())
        t_engine += time.perf_counter() - t1
    dt = time.perf_counter() - t0
    n = n_test
    threads_s = f"{engine.threads} thread{'' if engine.threads == 1 else 's'}{', int8' if int8 else ''}"
    typer.echo(f"{model_file} on {name} test: accuracy {100 * correct / n:.2f}% "
               f"(error {100 * (1 - correct / n):.2f}%), {n} images in {dt:.2f} s "
               f"(engine {1e3 * t_engine / n:.3f} ms/image, {threads_s})")


def check_output(output: Path, force: bool, inputs: list) -> None:
    """Refuse to write ``output`` over a folder, over one of the command's own ``inputs`` (even with
    ``--force``: the model or array being read), or over an existing file without ``--force``."""
    if output.is_dir():
        raise ValueError(f"{output} is a folder; give a file name for the output")
    if not output.exists():
        return
    if any(src is not None and Path(src).exists() and output.samefile(src) for src in inputs):
        raise FileExistsError(f"{output} is this command's own input; write the output elsewhere")
    if not force:
        raise FileExistsError(f"{output} exists; pass --force to overwrite it")


def warn_unpreprocessed(x, normalize: str, path: Path) -> None:
    """Warn when a float input looks like raw [0, 1] or [0, 255] pixels for a 'pm1' model (which
    expects x/127.5 - 1 in [-1, 1]): the engine would run, and silently mispredict."""
    import warnings

    import numpy as np

    if normalize != "pm1" or x.dtype == np.uint8 or x.size == 0:
        return
    lo, hi = float(x.min()), float(x.max())
    if lo >= 0 and hi > 1.0 + 1e-6:
        what = "pixels 0..255"
    elif lo >= 0 and hi <= 1.0 + 1e-6 and hi > 0:
        what = "pixels scaled to [0, 1]"
    else:
        return
    warnings.warn(f"{path}: float input in [{lo:g}, {hi:g}] looks like {what}; this model was trained on "
                  "x/127.5 - 1 in [-1, 1] ('pm1'): give uint8 pixels, or the floats preprocessed that way",
                  stacklevel=2)


def load_input(path: Path):
    """A user's input array from a ``.npy`` file (never unpickled), with clear errors."""
    import numpy as np

    if path.is_dir():
        raise IsADirectoryError(f"--input {path} is a folder; give a .npy file")
    if not path.is_file():
        raise FileNotFoundError(f"input file not found: {path}")
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
    except OSError as e:
        raise ValueError(f"cannot read {path} ({e})") from None
    if magic[:2] == b"PK":
        raise ValueError(f"{path} holds several arrays (.npz); give one .npy array")
    if magic != b"\x93NUMPY":
        raise ValueError(f"{path} is not a .npy file (written by numpy.save); give a numeric .npy array "
                         "(float32 (N, C, H, W), or uint8 pixels)")
    try:
        x = np.load(path, allow_pickle=False)
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise ValueError(f"{path} holds Python objects; give a numeric .npy array "
                             "(float32 (N, C, H, W), or uint8 pixels)") from None
        raise ValueError(f"{path} is not a readable .npy array ({e})") from None
    except (OSError, EOFError) as e:
        raise ValueError(f"{path} is not a readable .npy array ({e})") from None
    if not isinstance(x, np.ndarray):
        raise ValueError(f"{path} holds several arrays (.npz); give one .npy array")
    return x


def _predict(engine, path: Path, output: Optional[Path], batch_size: int, limit: Optional[int]) -> None:
    import numpy as np

    x = load_input(path)
    if limit:
        x = x[:limit]
    engine.check_input(x)  # the whole array at once: dtype, shape, NaN/Inf, with the reason
    warn_unpreprocessed(x, (engine.graph.get("preprocess") or {}).get("normalize", "pm1"), path)
    logits = np.concatenate([engine.run(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])
    if output is not None:
        from ..fileio import atomic_write_bytes
        import io

        buf = io.BytesIO()
        np.save(buf, logits, allow_pickle=False)
        atomic_write_bytes(output, buf.getvalue())
    pred = logits.argmax(1)
    shown = " ".join(map(str, pred[:20].tolist())) + (" …" if len(pred) > 20 else "")
    typer.echo(f"{path}: {len(pred)} inputs → classes {shown}" + (f" (logits → {output})" if output else ""))
