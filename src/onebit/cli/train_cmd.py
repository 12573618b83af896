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
    lr_final: Optional[float] = typer.Option(None, "--lr-final", help="exp/cosine: the lr the schedule decays to, reached at the end of the last epoch (which trains one decay step above it)"),
    loss: Optional[str] = typer.Option(None, help="sqhinge or ce"),
    optimizer: Optional[str] = typer.Option(None, help="adam, adamax, shift_adamax or sgd"),
    recipe: Optional[str] = typer.Option(None, help="start from this registered recipe instead of MODEL's"),
    augment: Optional[bool] = typer.Option(None, "--augment/--no-augment", help="random crop + flip"),
    bf16: Optional[bool] = typer.Option(None, "--bf16/--fp32", help="bf16 autocast on the CPU (fast with AVX512 or newer; on an AVX2-only CPU many times slower than fp32: a warning says so)"),
    channels_last: Optional[bool] = typer.Option(None, "--channels-last/--no-channels-last",
                                                 help="train the convs in NHWC (channels-last) memory format: "
                                                 "same network, faster steps on the CPU"),
    val_size: Optional[float] = typer.Option(None, "--val-size", help="validation images carved from train"),
    limit: Optional[int] = typer.Option(None, help="use only the first N training images, and N/5 validation and test images (smoke runs)"),
    seed: Optional[int] = typer.Option(None, help="random seed"),
    set_: list[str] = typer.Option([], "--set", help="recipe field or model argument, KEY=VALUE (model.KEY: always the model; repeatable)"),
    out: Optional[Path] = typer.Option(None, help="run folder (default: runs/<model>-<data>-s<seed>)"),
    resume: bool = typer.Option(False, "--resume", help="continue the run in --out with its saved settings "
                                "(OUT/recipe.json); options given again must agree with them"),
    threads: Optional[int] = typer.Option(None, help="CPU threads for PyTorch"),
    data_root: Optional[str] = typer.Option(None, "--data-root", help="folder holding the data set"),
    max_minutes: Optional[float] = typer.Option(None, "--max-minutes", help="stop after this wall-clock budget"),
    fit_schedule: bool = typer.Option(False, "--fit-schedule", help="with --max-minutes: after the first epoch, "
                                      "shorten the run to the epochs that fit the budget and stretch the lr "
                                      "schedule over them"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="progress bars"),
    ckpt_every_steps: int = typer.Option(0, "--ckpt-every-steps",
                                         help="also checkpoint every N optimizer steps (0: per epoch only)"),
    keep_ckpts: int = typer.Option(3, "--keep-ckpts", help="step checkpoints to keep"),
    tensorboard: bool = typer.Option(False, "--tensorboard", help="also log to TensorBoard (OUT/tb; needs the "
                                     "tensorboard package)"),
    nproc: int = typer.Option(1, "--nproc", help="data-parallel processes (DDP, gloo) on this machine; "
                              "--batch-size stays the global batch"),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda (a CUDA build of PyTorch and a GPU)"),
    compile: bool = typer.Option(False, "--compile", help="run the training step through torch.compile (fused "
                                 "kernels; the first step of each batch shape compiles, tens of seconds)"),
    init_from: Optional[Path] = typer.Option(None, "--init-from", help="initialise from this checkpoint (Bi-Real: "
                                             "the real-valued twin trained with clip or ReLU activations)"),
    init: Optional[str] = typer.Option(None, "--init", help="how --init-from is used: real (copy every same-name "
                                       "tensor) or bn_retrain (fold α into BN, train BN only)"),
    pipeline: bool = typer.Option(False, "--pipeline", help="run MODEL's registered multi-stage procedure "
                                  "(Bi-Real: real-valued clip pre-training, then the binary net initialised from "
                                  "it), each stage in OUT/<stage>"),
    pretrain_epochs: Optional[int] = typer.Option(None, "--pretrain-epochs",
                                                  help="--pipeline: epochs of the pre-training stage"),
    skip_bn_retrain: bool = typer.Option(False, "--skip-bn-retrain", help="--pipeline: stop after the binary stage"),
) -> None:
    """Train MODEL (e.g. `onebit train bnn-mlp --data mnist --epochs 20`)."""

    from ..methods import get_recipe
    from ..methods.recipe import recipe_names
    from ..train import train as run_train
    from ..train.distributed import check_can_launch, env_world
    from ..train.trainer import check_options, preflight

    check_options(threads=threads, ckpt_every_steps=ckpt_every_steps, keep_ckpts=keep_ckpts)
    if nproc < 1:
        raise ValueError(f"--nproc must be >= 1, got {nproc}")
    if not pipeline and (pretrain_epochs is not None or skip_bn_retrain):
        raise ValueError("--pretrain-epochs and --skip-bn-retrain shape the stages of --pipeline; add --pipeline")
    if pretrain_epochs is not None and pretrain_epochs < 1:
        raise ValueError(f"--pretrain-epochs must be >= 1, got {pretrain_epochs}")
    if nproc > 1 and pipeline:  # each stage checks its own settings in the workers
        _launch(nproc)
        return
    rank = env_world()[0]

    common = {k: v for k, v in dict(data=data, batch_size=batch_size, augment=augment, bf16=bf16,
                                     channels_last=channels_last, val_size=val_size, limit=limit, seed=seed).items() if v is not None}
    stage_over = {k: v for k, v in dict(epochs=epochs, lr=lr, lr_final=lr_final, loss=loss,
                                        optimizer=optimizer).items() if v is not None}
    extra, model_extra = parse_set(set_)
    run_opts = dict(threads=threads, progress=progress, data_root=data_root, max_minutes=max_minutes,
                    fit_schedule=fit_schedule, ckpt_every_steps=ckpt_every_steps, keep_ckpts=keep_ckpts, tensorboard=tensorboard, device=device,
                    compile=compile)

    if pipeline:
        from ..methods.bireal import PIPELINES
        from ..train.snapshots import stopped_before_first_checkpoint

        if model not in PIPELINES:
            raise ValueError(f"--pipeline: {model!r} has no registered multi-stage procedure; models with one: "
                             f"{', '.join(sorted(PIPELINES))}")
        if recipe or init_from or init:
            raise ValueError("--pipeline chooses each stage's recipe and initialisation; drop --recipe/--init-from/--init")
        out = out or Path("runs") / f"{model}-{common.get('data', get_recipe(model).data)}-s{common.get('seed', 0)}"
        done: dict[str, Path] = {}
        for st in PIPELINES[model]:
            if st.init == "bn_retrain" and skip_bn_retrain:
                break
            r = get_recipe(st.recipe)
            over = dict(common)
            if st.init is None:  # the pre-training stage
                if pretrain_epochs is not None:
                    over["epochs"] = pretrain_epochs
            else:
                over.update(stage_over if st.init == "init_from_real" else {})
                over.update(init_from=str(done[st.init_from] / "best.safetensors"),
                            init="real" if st.init == "init_from_real" else "bn_retrain")
            stage_out = out / st.name
            # a stage stopped before its first checkpoint starts again (nothing to resume from)
            stage_resume = resume and stage_out.is_dir() and not stopped_before_first_checkpoint(stage_out)
            if stage_resume:
                r = resume_base(r, stage_out)
            r = r.replace(**_merge(over, extra), model_kwargs={**r.model_kwargs, **model_extra})
            if rank == 0:
                typer.echo(f"stage {st.name}: {st.recipe} ({r.model}) for {r.epochs} epochs → {stage_out}")
            _report(run_train(r, stage_out, resume=stage_resume, **run_opts), stage_out, rank)
            done[st.name] = stage_out
        return

    if recipe is not None and recipe not in recipe_names():
        raise KeyError(f"unknown recipe {recipe!r}; registered recipes: {', '.join(recipe_names())}")
    r = get_recipe(recipe or model)
    if recipe is None and r.model != model:
        r = r.replace(model=model)
    elif recipe is not None and r.model != model:
        raise ValueError(f"--recipe {recipe} trains {r.model}, not {model}: run `onebit train {r.model} --recipe "
                         f"{recipe}`, or --set fields on {model}'s own recipe")
    over = {**common, **stage_over}
    if init_from is not None:
        over["init_from"] = str(init_from)
    if init is not None:
        over["init"] = init
    over = _merge(over, extra)
    r = r.replace(**over, model_kwargs={**r.model_kwargs, **model_extra})
    if (init is not None or "init" in extra) and not r.init_from:
        raise ValueError("--init says how the --init-from checkpoint is used; add --init-from CHECKPOINT")
    out = out or Path("runs") / f"{r.model}-{r.data}-s{r.seed}"
    if resume:
        base = resume_base(r, out)
        r = base.replace(**over, model_kwargs={**base.model_kwargs, **model_extra})
    if nproc > 1:  # one error line here rather than one per worker and a torchrun traceback
        check_can_launch()  # before the preflight: the real mistake, not a check's
        preflight(r, out, resume=resume, world_size=nproc)
        _launch(nproc)
        return
    if rank == 0:
        typer.echo(f"training {r.model} on {r.data} for {r.epochs} epochs → {out}")
    _report(run_train(r, out, resume=resume, **run_opts), out, rank)


def _launch(nproc: int) -> None:
    """Re-run this command in ``nproc`` processes under torchrun; its exit code is ours."""
    from ..train.distributed import launch
    from . import current_argv

    rc = launch(nproc, current_argv())
    if rc:
        raise typer.Exit(rc)


def resume_base(requested, out: Path):
    """The recipe ``--resume`` continues from: the run's own ``OUT/recipe.json`` when there is one
    (so ``onebit train MODEL --resume --out OUT`` needs none of the options the run started with),
    else ``requested`` (the registered recipe with the options; the trainer then checks it against
    the checkpoint). Options given with ``--resume`` are applied on top by the caller, and a value
    that differs from the run's is refused by the trainer, naming the field."""
    import json

    from ..methods.recipe import Recipe

    path = Path(out) / "recipe.json"
    if not path.is_file():
        return requested
    try:
        saved = Recipe.from_dict(json.loads(path.read_text()))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, TypeError, ValueError, AttributeError) as e:
        raise ValueError(f"--resume: {path} is not a readable recipe ({type(e).__name__}: {e}); restore it, or "
                         "give every option the run started with and delete the file") from None
    if saved.model != requested.model:
        raise ValueError(f"--resume: the run in {out} trains {saved.model}, not {requested.model}; "
                         f"run `onebit train {saved.model} --resume --out {out}`")
    return saved


def _merge(flags: dict, sets: dict) -> dict:
    """Recipe overrides from the options (``--epochs 5``) and from ``--set`` (``--set epochs=5``);
    the same field given both ways with different values is an error, not a silent choice."""
    for k in sorted(set(flags) & set(sets)):
        if flags[k] != sets[k]:
            raise ValueError(f"{k} is given twice: --{k.replace('_', '-')} {flags[k]!r} (or the stage's "
                             f"setting) and --set {k}={sets[k]!r}; give it once")
    return {**flags, **sets}


def parse_set(items: list[str]) -> tuple[dict, dict]:
    """``--set KEY=VALUE`` items → (recipe fields, model fields); values are JSON when they parse.

    A key that is a recipe field sets it; any other key (or ``model.KEY``) is a model argument.
    """
    import json
    from dataclasses import fields

    from ..methods.recipe import Recipe

    recipe_fields = {f.name for f in fields(Recipe)}

    over, model_kwargs = {}, {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        try:
            val = json.loads(v)
        except json.JSONDecodeError:
            val = v
        if k.startswith("model."):
            model_kwargs[k[len("model."):]] = val
        elif k in recipe_fields:
            over[k] = val
        else:
            model_kwargs[k] = val
    return over, model_kwargs


def _report(res, out: Path, rank: int) -> None:
    if rank != 0:
        return
    if res.best_val_acc is None:  # no validation split: no best epoch to speak of
        typer.echo(f"done: test accuracy {100 * res.last_test_acc:.2f}% after the last epoch, "
                   f"{res.wall_s / 60:.1f} min → {out}")
        return
    typer.echo(f"done: best val {100 * res.best_val_acc:.2f}% at epoch {res.best_epoch + 1}, test accuracy there "
               f"{100 * res.test_acc_at_best:.2f}% (last epoch {100 * res.last_test_acc:.2f}%), "
               f"{res.wall_s / 60:.1f} min → {out}")
