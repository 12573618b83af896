"""``onebit bwnh CHECKPOINT``: hash a trained float network into a binary-weight network (BWNH), then fine-tune."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def bwnh(
    checkpoint: Path = typer.Argument(..., help="a float checkpoint (`onebit train vgg9-float` → best.safetensors)"),
    data: Optional[str] = typer.Option(None, help="data set (default: the one the checkpoint was trained on)"),
    samples: Optional[int] = typer.Option(None, help="sampled input columns per layer, M (default 16384)"),
    source: Optional[str] = typer.Option(None, help="where layer inputs come from: binarized (default) or float"),
    target: Optional[str] = typer.Option(None, help="outputs to match: float (default; compensates earlier "
                                                    "layers) or own (XᵀW on the sampled inputs)"),
    iters: Optional[int] = typer.Option(None, help="outer A/B iterations per layer (default 10)"),
    dcc_sweeps: Optional[int] = typer.Option(None, "--dcc-sweeps", help="DCC sweeps per B-step (default 2)"),
    tol: Optional[float] = typer.Option(None, help="stop a layer's A/B iterations once an iteration lowers its "
                                              "objective by <= tol times its start value (default 1e-5; 0: run "
                                              "all --iters)"),
    per_image: Optional[int] = typer.Option(None, "--per-image", help="conv patches per image (default M/256)"),
    protocol: str = typer.Option("b", help="fine-tuning: a (codes fixed, BN/real layers train) or b (STE on "
                                           "latent weights from B·A)"),
    finetune_epochs: Optional[int] = typer.Option(None, "--finetune-epochs",
                                                  help="fine-tuning epochs (0: none; default: the recipe's)"),
    model: Optional[str] = typer.Option(None, help="binary-weight model to hash into (default: the float's twin)"),
    bf16: Optional[bool] = typer.Option(None, "--bf16/--fp32", help="fine-tune under bf16 autocast (default: as "
                                        "the float run was trained)"),
    channels_last: Optional[bool] = typer.Option(None, "--channels-last/--no-channels-last",
                                                 help="fine-tune in NHWC (default: as the float run was trained)"),
    set_: list[str] = typer.Option([], "--set", help="fine-tuning recipe field or model argument, KEY=VALUE "
                                   "(e.g. lr=3e-4; repeatable)"),
    out: Optional[Path] = typer.Option(None, help="output folder (default: runs/bwnh-<checkpoint folder>)"),
    batch_size: int = typer.Option(256, "--batch-size", help="batch size for sampling and evaluation"),
    device: Optional[str] = typer.Option(None, help="device for hashing and evaluation (fine-tuning runs on the CPU)"),
    data_root: Optional[str] = typer.Option(None, "--data-root", help="folder holding the data set"),
    threads: Optional[int] = typer.Option(None, help="CPU threads for PyTorch"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="progress bars"),
) -> None:
    """Hash the float network in CHECKPOINT layer by layer (BWNH, AAAI 2018), compare with BWN, fine-tune."""
    from ..methods import bwnh as method
    from .train_cmd import parse_set

    kw = {k: v for k, v in dict(samples=samples, source=source, target=target, iters=iters,
                                 dcc_sweeps=dcc_sweeps, tol=tol).items() if v is not None}
    extra, model_extra = parse_set(set_)
    ft_over = {k: v for k, v in dict(bf16=bf16, channels_last=channels_last).items() if v is not None}
    ft_over.update(extra)
    if model_extra:
        ft_over["model_kwargs"] = model_extra
    out = out or Path("runs") / f"bwnh-{checkpoint.resolve().parent.name}"
    typer.echo(f"BWNH: hashing {checkpoint} → {out}")
    rep = method.bwnh_pipeline(checkpoint, data, out, per_image=per_image, protocol=protocol,
                               finetune_epochs=finetune_epochs, model=model, data_root=data_root,
                               batch_size=batch_size, device=device, progress=progress, threads=threads,
                               finetune_overrides=ft_over, **kw)
    typer.echo(f"source={rep['source']} target={rep['target']} M={rep['samples']} → {rep['bwnh_model']}")
    typer.echo(f"{'layer':>8} {'kind':>4} {'d':>6} {'c':>5} {'M':>6} {'BWN rel.err':>11} {'BWNH rel.err':>12} "
               f"{'iters':>5} {'bits changed':>12}")
    for r in rep["layers"]:
        typer.echo(f"{r['name']:>8} {r['kind']:>4} {r['d']:>6} {r['c']:>5} {r['samples']:>6} "
                   f"{r['relative_bwn']:>11.4f} {r['relative']:>12.4f} {r['iterations']:>5} {r['bits_changed']:>12}")
    acc = rep["accuracy"]
    typer.echo("test accuracy before fine-tuning: " + ", ".join(
        f"{name} {100 * acc[key]['test']:.2f}%" for key, name in
        (("float", "float"), ("bwn", "BWN α·sign(W)"), ("bwnh", "BWNH"))))
    ft = rep.get("finetune")
    if ft:
        best = "" if ft["best_val_acc"] is None else f"best val {100 * ft['best_val_acc']:.2f}%, "
        typer.echo(f"fine-tuning (protocol {rep['protocol']}, {ft['epochs']} epochs): {best}test accuracy there "
                   f"{100 * ft['test_acc_at_best']:.2f}% (last {100 * ft['last_test_acc']:.2f}%) → {ft['out_dir']}")
    typer.echo(f"report → {out / 'report.json'}, hashed weights → {out / 'hashed.safetensors'}")
