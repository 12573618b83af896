"""``onebit train MODEL``: train a registered model with its recipe (overridable from the CLI)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def train(
    model: str = typer.Argument(..., help="registered model name (see `onebit models`)"),
    data: Optional[str] = typer.Option(None, help="data set name (default: the recipe's)"),
    epochs: Optional[int] = typer.Option(None, help="number of epochs (default: the recipe's)"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="mini-batch size"),
    lr: Optional[float] = typer.Option(None, help="base learning rate"),
    lr_final: Optional[float] = typer.Option(None, "--lr-final", help="lr at the last epoch (exp/cosine)"),
    loss: Optional[str] = typer.Option(None, help="sqhinge or ce"),
    optimizer: Optional[str] = typer.Option(None, help="adam, adamax, shift_adamax or sgd"),
    recipe: Optional[str] = typer.Option(None, help="start from this registered recipe instead of MODEL's"),
    augment: Optional[bool] = typer.Option(None, "--augment/--no-augment", help="random crop + flip"),
    bf16: Optional[bool] = typer.Option(None, "--bf16/--fp32", help="bf16 autocast on the CPU"),
    val_size: Optional[float] = typer.Option(None, "--val-size", help="validation images carved from train"),
    limit: Optional[int] = typer.Option(None, help="use only the first N training images (smoke runs)"),
    seed: Optional[int] = typer.Option(None, help="random seed"),
    set_: list[str] = typer.Option([], "--set", help="extra recipe or model field, KEY=VALUE (repeatable)"),
    out: Optional[Path] = typer.Option(None, help="run folder (default: runs/<model>-<data>-s<seed>)"),
    resume: bool = typer.Option(False, "--resume", help="continue the run in --out"),
    threads: Optional[int] = typer.Option(None, help="CPU threads for PyTorch"),
    data_root: Optional[str] = typer.Option(None, "--data-root", help="folder holding the data set"),
    max_minutes: Optional[float] = typer.Option(None, "--max-minutes", help="stop after this wall-clock budget"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="progress bars"),
    ckpt_every_steps: int = typer.Option(0, "--ckpt-every-steps",
                                         help="also checkpoint every N optimizer steps (0: per epoch only)"),
    keep_ckpts: int = typer.Option(3, "--keep-ckpts", help="step checkpoints to keep"),
    tensorboard: bool = typer.Option(False, "--tensorboard", help="also log to TensorBoard (OUT/tb; needs the "
                                     "tensorboard package)"),
    nproc: int = typer.Option(1, "--nproc", help="data-parallel processes (DDP, gloo) on this machine; "
                              "--batch-size stays the global batch"),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda (a CUDA build of PyTorch and a GPU)"),
) -> None:
    """Train MODEL (e.g. `onebit train bnn-mlp --data mnist --epochs 20`)."""
    import json

    from ..methods import get_recipe
    from ..train import train as run_train
    from ..train.distributed import env_world, launch
    from ..train.trainer import check_options

    check_options(threads=threads, ckpt_every_steps=ckpt_every_steps, keep_ckpts=keep_ckpts)
    if nproc < 1:
        raise ValueError(f"--nproc must be >= 1, got {nproc}")
    if nproc > 1:
        from . import current_argv

        rc = launch(nproc, current_argv())
        if rc:
            raise typer.Exit(rc)
        return
    rank = env_world()[0]

    r = get_recipe(recipe or model)
    if recipe is None and r.model != model:
        r = r.replace(model=model)
    over = {k: v for k, v in dict(data=data, epochs=epochs, batch_size=batch_size, lr=lr, lr_final=lr_final,
                                   loss=loss, optimizer=optimizer, augment=augment, bf16=bf16,
                                   val_size=val_size, limit=limit, seed=seed).items() if v is not None}
    model_kwargs = dict(r.model_kwargs)
    for item in set_:
        if "=" not in item:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        try:
            val = json.loads(v)
        except json.JSONDecodeError:
            val = v
        if k.startswith("model."):
            model_kwargs[k[len("model."):]] = val
        else:
            over[k] = val
    r = r.replace(**over, model_kwargs=model_kwargs)
    out = out or Path("runs") / f"{r.model}-{r.data}-s{r.seed}"
    if rank == 0:
        typer.echo(f"training {r.model} on {r.data} for {r.epochs} epochs → {out}")
    res = run_train(r, out, resume=resume, threads=threads, progress=progress, data_root=data_root,
                    max_minutes=max_minutes, ckpt_every_steps=ckpt_every_steps, keep_ckpts=keep_ckpts,
                    tensorboard=tensorboard, device=device)
    if rank != 0:
        return
    best = "" if res.best_val_acc is None else f"best val {100 * res.best_val_acc:.2f}% at epoch {res.best_epoch + 1}, "
    typer.echo(f"done: {best}test accuracy there {100 * res.test_acc_at_best:.2f}% "
               f"(last epoch {100 * res.last_test_acc:.2f}%), {res.wall_s / 60:.1f} min → {out}")
