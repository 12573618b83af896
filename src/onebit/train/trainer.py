"""One trainer for any registered model and recipe.

Per epoch: train (progress bar), evaluate on validation and test, append a row to
``metrics.csv`` and the per-layer statistics to ``layers.csv`` / ``histograms.json``
(:mod:`onebit.train.observe`; TensorBoard too with ``tensorboard=True``), write ``last.safetensors``
and — when validation accuracy improves — ``best.safetensors`` (atomically). With
``ckpt_every_steps=N`` a step checkpoint is also written every N optimizer steps (the newest
``keep_ckpts`` are kept, :mod:`onebit.train.snapshots`).

``resume=True`` continues from the checkpoint furthest into the run — an epoch end or the middle
of an epoch — and gives exactly the run that was never interrupted: data order is a function of
(seed, epoch) and a resumed epoch skips the batches already done; model, optimizer, scheduler,
RNG states and the epoch's running loss/accuracy sums are restored.

Under ``torchrun`` (``WORLD_SIZE`` > 1) the same function trains data-parallel
(:mod:`onebit.train.distributed`): ``recipe.batch_size`` is the global batch, rank 0 alone writes
files and logs.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import numbers
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from .. import losses, models
from ..fileio import atomic_write_text, check_folder_path
from ..methods.recipe import Recipe
from ..nn import constraints
from ..optim import ShiftAdaMax, make_scheduler, param_groups
from . import distributed as distrib
from . import observe, snapshots
from .checkpoint import (CheckpointError, load_checkpoint, model_from_meta, restore, run_folder_checkpoint,
                         save_checkpoint)

log = logging.getLogger("onebit.train")

CSV_FIELDS = ["epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc",
              "epoch_s", "wall_s"]


class TrainingError(Exception):
    """Training cannot go on (diverged, bad configuration, resume mismatch)."""


@dataclass
class RunResult:
    out_dir: Path
    epochs_run: int
    best_epoch: int
    best_val_acc: float | None
    test_acc_at_best: float
    last_test_acc: float
    wall_s: float


def fitted_schedule(recipe: Recipe, fit: int) -> dict:
    """The schedule fields of ``recipe`` stretched from ``recipe.epochs`` to ``fit`` epochs
    (``--fit-schedule``): ``step`` milestones scaled and kept apart from the last epoch — a
    milestone inside the run stays inside it (at most epoch ``fit − 1``), two that land on one
    epoch both apply there (×0.01), one at or past the end stays past it — and ``shift``'s
    halving period scaled (at least 1, rounded), so the fitted run ends within about one halving of
    where the full one ends (60 → 10 epochs, halving every 10 → every 2: 2⁻⁴ instead of 2⁻⁵)."""
    e = recipe.epochs
    milestones = tuple(sorted(fit if m >= e else max(1, min(round(m * fit / e), fit - 1))
                              for m in recipe.milestones))
    return {"milestones": milestones, "lr_every": max(1, round(recipe.lr_every * fit / e))}


def build_model(recipe: Recipe, info) -> torch.nn.Module:
    """The recipe's model, shaped for data set ``info`` (classes, channels, image size)."""
    fixed = sorted({"num_classes", "in_channels", "image_size"} & set(recipe.model_kwargs))
    if fixed:
        raise TrainingError(f"model option(s) {', '.join(fixed)} come from the data set ({recipe.data}: "
                            f"{info.num_classes} classes, {info.in_channels}×{info.image_size}×{info.image_size} "
                            "images) and cannot be set")
    return models.create(recipe.model, num_classes=info.num_classes, in_channels=info.in_channels,
                         image_size=info.image_size, **recipe.model_kwargs)


OPTIMIZERS = ("adam", "adamax", "shift_adamax", "sgd")


def build_optimizer(recipe: Recipe, model: torch.nn.Module) -> torch.optim.Optimizer:
    """The recipe's optimizer over :func:`onebit.optim.param_groups` (Glorot scales, lr tags, weight
    decay on real weight tensors only); the caller attaches the declared constraints."""
    groups = param_groups(model, recipe.lr, glorot=recipe.glorot_lr_scale, pow2=recipe.glorot_pow2,
                          weight_decay=recipe.weight_decay)
    opt = recipe.optimizer
    if opt == "adam":
        # fused Adam: one kernel over all tensors (≈6× faster than the for-loop on a 37M-param MLP)
        return torch.optim.Adam(groups, lr=recipe.lr, fused=True)
    if opt == "adamax":
        return ShiftAdaMax(groups, lr=recipe.lr, shift=False)
    if opt == "shift_adamax":
        return ShiftAdaMax(groups, lr=recipe.lr, shift=True)
    if opt == "sgd":
        return torch.optim.SGD(groups, lr=recipe.lr, momentum=recipe.momentum,
                               nesterov=recipe.nesterov and recipe.momentum > 0)
    raise TrainingError(f"unknown optimizer {opt!r}; use {', '.join(OPTIMIZERS)}")


def evaluate(model: torch.nn.Module, loader, loss_fn, *, bf16: bool = False, reduce=None,
             device: torch.device | str = "cpu") -> tuple[float, float]:
    """Mean loss and accuracy (fraction) of ``model`` in eval mode over ``loader``.

    ``reduce`` (distributed evaluation: each rank scores a shard) sums ``[loss, correct, count]``
    over the ranks. Batches are moved to ``device`` (the model's).
    """
    model.eval()
    device = torch.device(device)
    total, correct, loss_sum = 0, 0, 0.0
    with torch.no_grad(), _autocast(bf16, device.type):
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            out = model(x).float()
            loss_sum += float(loss_fn(out, y)) * len(y)
            correct += int((out.argmax(1) == y).sum())
            total += len(y)
    if reduce is not None:
        loss_sum, correct, total = reduce([loss_sum, float(correct), float(total)])
    if total == 0:
        raise TrainingError("evaluation set is empty")
    return loss_sum / total, correct / total


def _autocast(bf16: bool, device_type: str = "cpu"):
    return torch.autocast(device_type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def cpu_has_native_bf16() -> bool:
    """Whether PyTorch's CPU convolutions and matmuls have a bf16 path on this machine.

    PyTorch runs bf16 through oneDNN, whose bf16 kernels need AVX512 (AVX512_BF16 / AMX-BF16 make
    them faster still). On an AVX2-only CPU every bf16 conv falls back to slow generic code: a
    ``bireal-resnet18-cifar`` (width 16) training step measured 9.6 s in bf16 autocast vs 0.55 s in
    fp32 on an AVX2-only AMD EPYC (``benchmarks/train_speed.py``, docs/benchmarks.md §5).
    """
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN, or a PyTorch that renamed it
        return torch.backends.cpu.get_cpu_capability().startswith("AVX512")


def warn_if_slow_bf16(bf16: bool, device_type: str) -> bool:
    """Log a warning (and return True) when bf16 autocast is asked for on a CPU without a native bf16
    path, where it is many times slower than fp32 (see :func:`cpu_has_native_bf16`)."""
    if not (bf16 and device_type == "cpu") or cpu_has_native_bf16():
        return False
    log.warning("bf16 autocast on this CPU (%s, no AVX512: PyTorch has no fast bf16 kernels here) is many "
                "times slower than fp32 (17x on one AVX2-only machine); train with --fp32 instead",
                torch.backends.cpu.get_cpu_capability())
    return True


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None``/"cpu" → CPU; "cuda" (or "cuda:N") needs a CUDA build of PyTorch and a GPU."""
    try:
        dev = torch.device("cpu" if device is None else device)
    except (RuntimeError, TypeError) as e:
        raise TrainingError(f"unknown device {device!r} ({e}); use 'cpu' or 'cuda'") from None
    if dev.type not in ("cpu", "cuda"):
        raise TrainingError(f"device {device!r} is not supported; use 'cpu' or 'cuda'")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise TrainingError(f"device {device!r}: this PyTorch sees no CUDA GPU (torch {torch.__version__})")
    return dev


class StepModule(nn.Module):
    """The model and its method hook as one module: logits and the method's extra loss.

    DDP wraps this, so parameters that only the extra loss uses (BONN's priors) are reduced too.
    """

    def __init__(self, model: nn.Module, hook, bf16: bool, device_type: str = "cpu"):
        super().__init__()
        self.model, self.bf16, self.device_type = model, bf16, device_type
        self.hook = hook

    def forward(self, x: torch.Tensor, y: torch.Tensor, feature_loss: bool = False):
        """Logits of ``x`` and the method's extra loss (None without a hook); ``feature_loss``:
        whether BONN's feature loss is on this epoch (the trainer decides it from the epoch, so a
        compiled step sees a flag, not an integer that changes every epoch)."""
        with _autocast(self.bf16, self.device_type):
            out = self.model(x)
        extra = None if self.hook is None else self.hook.extra_loss(y, feature_loss=feature_loss)
        return out, extra


def method_hook(model: torch.nn.Module):
    """The method-specific training hook of ``model`` (BONN's Bayesian losses), or None.

    A hook has ``extra_loss(targets, epoch=...) -> tensor`` (added to the task loss) and
    ``after_step(targets)`` (e.g. center updates, run after the optimizer step).
    """
    from ..methods.bonn import hook_for

    return hook_for(model)


#: how often (in optimizer steps) a training epoch reads its running loss back to the host: the
#: finiteness check and the progress bar. Between reads a GPU step queues work without waiting.
SYNC_EVERY = 20


def steady_pace(*, elapsed: float, train_s: float, warm_s: float, warm_steps: int, steps: int) -> tuple[float, float]:
    """Seconds per epoch at the pace epoch 0 set, and the seconds it spent once only.

    ``elapsed``: epoch 0's training and evaluation; ``train_s``: its training part, of ``steps``
    steps, ``warm_steps`` of which compiled (``--compile``: the first step of each batch shape) in
    ``warm_s`` seconds. Those steps count as typical steps (the mean of the others) in the pace;
    their excess is the one-off time.
    """
    if not warm_steps:
        return elapsed, 0.0
    typical = max(train_s - warm_s, 0.0) / max(steps - warm_steps, 1)
    once = max(warm_s - warm_steps * typical, 0.0)
    return max(elapsed - once, 1e-9), once


def check_ints(items, error: type[Exception] = ValueError, required: tuple[str, ...] = ()) -> None:
    """Refuse any ``(name, value, lowest)`` whose value is not an integer (NumPy's too) ``>= lowest``;
    None is an unset option and passes, unless the name is ``required``."""
    for name, v, lo in items:
        if v is None and name not in required:
            continue
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < lo:
            raise error(f"{name} must be an integer >= {lo}, got {v!r}")


def check_options(*, threads: int | None = None, ckpt_every_steps: int = 0, keep_ckpts: int = 3) -> None:
    """Refuse nonsensical run options before any work starts."""
    check_ints((("threads", threads, 1), ("ckpt_every_steps", ckpt_every_steps, 0),
                ("keep_ckpts", keep_ckpts, 1)), TrainingError, required=("ckpt_every_steps", "keep_ckpts"))


def fresh_out_error(out: Path) -> TrainingError | None:
    """Why a fresh run cannot use folder ``out`` (None: it may). A folder whose run stopped before
    its first checkpoint holds no result and may be taken over (:mod:`onebit.train.snapshots`)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        return TrainingError(f"{out} is a file; --out names the folder of the run")
    try:
        check_folder_path(out)
    except NotADirectoryError as e:
        return TrainingError(f"--out: {e}")
    found = snapshots.run_files(out)
    if not found or snapshots.stopped_before_first_checkpoint(out):
        return None
    how = ("pass --resume to continue it or choose another --out"
           if "last.safetensors" in found or f"{snapshots.STEPS_DIR}/" in found else "choose another --out")
    return TrainingError(f"{out} already holds a run ({', '.join(found)}); {how} (nothing was overwritten)")


def _no_checkpoint_error(out: Path) -> TrainingError:
    why = (": the run there stopped before its first checkpoint; the same command without --resume starts it "
           "again" if out.is_dir() and snapshots.stopped_before_first_checkpoint(out) else "")
    return TrainingError(f"--resume: no checkpoint in {out} (looked for last.safetensors and "
                         f"{snapshots.STEPS_DIR}/){why}")


def preflight(recipe: Recipe, out: str | Path, *, resume: bool, world_size: int) -> None:
    """The checks a multi-process launch (``--nproc N``) makes once, in the launching process,
    before it starts the workers: otherwise each of the N workers prints the same error, and
    torchrun then its own traceback. The trainer makes the same checks again in every worker."""
    if recipe.batch_size % world_size:
        raise TrainingError(f"batch_size {recipe.batch_size} (the global batch) must be divisible by "
                            f"the {world_size} processes")
    losses.get(recipe.loss)
    if recipe.optimizer not in OPTIMIZERS:
        raise TrainingError(f"unknown optimizer {recipe.optimizer!r}; use {', '.join(OPTIMIZERS)}")
    from .. import data as onebit_data

    build_model(recipe, onebit_data.info(recipe.data))  # the model's arguments (the data set's shape)
    out = Path(out)
    if resume:
        if not (out.is_dir() and snapshots.candidates(out)):
            raise _no_checkpoint_error(out)
    elif (err := fresh_out_error(out)) is not None:
        raise err


def train(recipe: Recipe, out_dir: str | Path, *, resume: bool = False, threads: int | None = None,
          progress: bool = True, data_root: str | None = None, max_minutes: float | None = None,
          stop_after: int | None = None, ckpt_every_steps: int = 0, keep_ckpts: int = 3,
          tensorboard: bool = False, device: str | None = None, fit_schedule: bool = False,
          compile: bool = False) -> RunResult:
    """Train ``recipe`` into ``out_dir``.

    Args:
        resume: continue from the newest checkpoint in ``out_dir`` (the recipe must match).
        threads: ``torch.set_num_threads`` (None: PyTorch's default).
        max_minutes: stop after the epoch during which this wall-clock budget ran out.
        fit_schedule: with ``max_minutes``: after the first epoch, shorten the run to the epochs that
            fit the budget at that epoch's pace (at most ``recipe.epochs``), and stretch the lr schedule
            over them (cosine/exp end on time; step milestones and shift's period scale with the
            length, :func:`fitted_schedule`), so a budgeted
            run anneals fully instead of being cut mid-schedule. Epoch 0's lr is the base lr for
            every schedule, so the first epoch is the same whatever the fitted length. The fitted
            recipe is what the checkpoints and ``recipe.json`` hold.
        stop_after: stop after this many epochs of *this* call (used to test interruption).
        ckpt_every_steps: also checkpoint every this many optimizer steps (0: only per epoch).
        keep_ckpts: how many step checkpoints to keep.
        tensorboard: also log to TensorBoard (``out_dir/tb``) when the package is installed.
        device: "cpu" (default) or "cuda": where the model and batches live (checkpoints are
            written from CPU copies, so a run resumes on either).
        compile: run the training step (forward and the method's extra loss, and so their backward)
            through ``torch.compile``: the same network and losses, fused into fewer kernels. Float
            results differ from eager by rounding order, and random draws (stochastic binarization)
            come from the compiler's generator; evaluation and checkpoints use the plain model. The
            first step of each batch shape compiles (tens of seconds); with ``fit_schedule`` that
            time is left out of the pace. One process only.
    """
    if not isinstance(recipe, Recipe):
        raise TypeError(f"train() takes a Recipe (e.g. onebit.methods.get_recipe(\"bnn-mlp\")), got {type(recipe).__name__}")
    recipe.validate()  # again: a field may have been changed since the Recipe was built
    check_options(threads=threads, ckpt_every_steps=ckpt_every_steps, keep_ckpts=keep_ckpts)
    if fit_schedule and max_minutes is None:
        raise TrainingError("--fit-schedule fits the epochs to a time budget: give --max-minutes (max_minutes) too")
    if max_minutes is not None and not (isinstance(max_minutes, (int, float)) and math.isfinite(max_minutes)
                                        and max_minutes > 0):
        raise TrainingError(f"--max-minutes must be a positive number, got {max_minutes!r}")
    dev = resolve_device(device)
    if threads is not None:
        torch.set_num_threads(threads)
    d = distrib.setup()
    finished = False
    try:
        if d.active and dev.type != "cpu":
            raise TrainingError("data-parallel training runs on CPU processes (gloo); drop --device or --nproc")
        if d.active and fit_schedule:
            raise TrainingError("--fit-schedule runs in one process; drop --nproc or --fit-schedule")
        if d.active and compile:
            raise TrainingError("--compile runs in one process; drop --nproc or --compile")
        result = _Run(recipe, Path(out_dir), d, progress=progress, data_root=data_root,
                      ckpt_every_steps=ckpt_every_steps, keep_ckpts=keep_ckpts, tensorboard=tensorboard,
                      device=dev, fit_schedule=fit_schedule, compile=compile).run(resume, max_minutes, stop_after)
        finished = True
        return result
    finally:
        distrib.teardown(d, finished=finished)


class _Run:
    """One training run (one process of it); :func:`train` is the interface."""

    def __init__(self, recipe: Recipe, out: Path, d: distrib.Dist, *, progress: bool, data_root: str | None,
                 ckpt_every_steps: int, keep_ckpts: int, tensorboard: bool, device: torch.device = torch.device("cpu"),
                 fit_schedule: bool = False, compile: bool = False):
        from .. import data as onebit_data  # heavy imports only when training

        self.recipe, self.out, self.d, self.device = recipe, out, d, device
        self.progress = progress and d.main
        self.every, self.keep = ckpt_every_steps, keep_ckpts
        if recipe.batch_size % d.world_size:
            raise TrainingError(f"batch_size {recipe.batch_size} (the global batch) must be divisible by "
                                f"the {d.world_size} processes")
        if not d.main:
            log.setLevel(logging.WARNING)
        torch.manual_seed(recipe.seed)
        self.loaders = onebit_data.make_loaders(
            recipe.data, batch_size=recipe.batch_size // d.world_size, root=data_root, val_size=recipe.val_size,
            augment=recipe.augment, crop=recipe.crop, seed=recipe.seed, normalize=recipe.normalize, limit=recipe.limit,
            eval_batch_size=recipe.batch_size, rank=d.rank, world_size=d.world_size, even=d.active,
            shard_eval=d.active)
        self.info = self.loaders.info
        self.model = build_model(recipe, self.info).to(device)
        if recipe.channels_last:  # NHWC weights: the convs (and their outputs) run channels-last
            self.model.to(memory_format=torch.channels_last)
        self.hook = method_hook(self.model)
        self.optimizer = build_optimizer(recipe, self.model)
        constraints.attach(self.optimizer, self.model)
        self.scheduler = self._make_scheduler()
        self.fit_schedule = fit_schedule  # refit the epochs to max_minutes after epoch 0 (see train)
        self.loss_fn = losses.get(recipe.loss)
        self.stats = observe.LayerStats(self.model)
        warn_if_slow_bf16(recipe.bf16, device.type)
        self.step_module: nn.Module = StepModule(self.model, self.hook, recipe.bf16, device.type)
        if d.active:
            distrib.sync_batchnorm(self.model)
            if self.hook is not None:
                self.hook.reduce, self.hook.world_size = distrib.all_reduce_tensor, d.world_size
            if d.rank > 0:  # own dropout / stochastic-binarization streams (rank 0 keeps the 1-process one)
                torch.manual_seed(recipe.seed + 1_000_003 * d.rank)
            self.step_module = distrib.wrap_ddp(self.step_module, find_unused_parameters=self.hook is not None)
        # the step that trains (compiled or not); self.step_module stays the plain one
        self.train_step: nn.Module = torch.compile(self.step_module) if compile else self.step_module
        self.compile = compile
        self.warm_s, self.warm_steps = 0.0, 0  # time and count of the steps that compiled (epoch 0)
        self.reduce = distrib.all_reduce_sum if d.active else None
        self.tb = observe.TensorBoard(out / "tb", tensorboard and d.main)
        self.best_val, self.best_epoch, self.test_at_best, self.wall0 = -1.0, -1, float("nan"), 0.0
        self.global_step = 0
        self.last_test = math.nan
        self.lock = snapshots.RunLock(out)  # taken when the run starts writing (rank 0)

    # ---- files -------------------------------------------------------------------------------

    @property
    def paths(self):
        o = self.out
        return o / "last.safetensors", o / "best.safetensors", o / "metrics.csv", o / "layers.csv", o / "histograms.json"

    def _meta(self, epoch: int, **extra) -> dict:
        return {"recipe": self.recipe.to_dict(), "model_config": getattr(self.model, "onebit_config", {}),
                "data_info": {"name": self.info.name, "num_classes": self.info.num_classes,
                              "in_channels": self.info.in_channels, "image_size": self.info.image_size},
                "epoch": epoch, "global_step": self.global_step, "best_val_acc": self.best_val,
                "best_epoch": self.best_epoch, "test_acc_at_best": self.test_at_best,
                "world_size": self.d.world_size, **extra}

    def _start_fresh(self) -> None:
        _, _, csv_path, layers_path, hist_path = self.paths
        err = fresh_out_error(self.out)
        taken_over = err is None and snapshots.run_files(self.out)
        if self.d.active:  # every rank looks before rank 0 writes: none may mistake its files for an old run
            distrib.barrier()
        if err is not None:
            raise err
        if self.d.main:
            self.out.mkdir(parents=True, exist_ok=True)
            self._hold_folder()  # a run in its first epoch looks like one that stopped there: not taken over
        if taken_over:
            log.info("%s holds a run stopped before its first checkpoint (%s, no results): starting it "
                     "again there", self.out, ", ".join(taken_over))
        if self.d.main:
            atomic_write_text(self.out / "recipe.json", self.recipe.to_json())
            atomic_write_text(csv_path, ",".join(CSV_FIELDS) + "\n")
            atomic_write_text(layers_path, ",".join(observe.LAYER_FIELDS) + "\n")
            hist_path.unlink(missing_ok=True)

    def _resume(self) -> tuple[int, int, dict]:
        """Restore the newest readable checkpoint → (epoch, step to start at, epoch accumulators)."""
        found = snapshots.candidates(self.out) if self.out.is_dir() else []
        if not found:
            raise _no_checkpoint_error(self.out)
        self._hold_folder()
        for snap in found:
            try:
                tensors, meta = load_checkpoint(snap.path)
                self._check_recipe(meta, snap.path)
                restore(tensors, meta, self.model, optimizer=self.optimizer, scheduler=self.scheduler,
                        rng=True, rank=self.d.rank)
                break
            except CheckpointError as e:
                log.warning("cannot resume from %s (%s); trying an older checkpoint", snap.path, e)
        else:
            raise TrainingError(f"--resume: no readable checkpoint in {self.out}")
        try:
            self.best_val, self.best_epoch = float(meta["best_val_acc"]), int(meta["best_epoch"])
            self.test_at_best, self.wall0 = float(meta["test_acc_at_best"]), float(meta["wall_s"])
            metrics = meta.get("metrics")
            self.last_test = float(metrics["test_acc"]) if isinstance(metrics, dict) and "test_acc" in metrics else math.nan
            pos = snap.position
            self.global_step = int(meta.get("global_step", pos[0] * len(self.loaders.train) + pos[1]))
            accum = {"loss_sum": 0.0, "correct": 0, "n": 0, "elapsed": 0.0}
            if snap.kind == "step":
                a = meta["accum"]
                if self.d.main:  # the sums of all ranks; the other ranks start from 0
                    accum = {"loss_sum": float(a["loss_sum"]), "correct": int(a["correct"]), "n": int(a["n"]),
                             "elapsed": float(a["elapsed"])}
                if not self.stats.load_state(tensors):
                    log.warning("%s holds no epoch-start signs: this epoch's flip ratios start at the resume", snap.path)
            else:  # an epoch end: the restored weights are the reference signs of the next epoch
                self.stats = observe.LayerStats(self.model)
        except (KeyError, TypeError, ValueError) as e:
            raise TrainingError(f"--resume: {snap.path} lacks trainer state ({type(e).__name__}: {e})") from None
        saved_world = meta.get("world_size", 1)
        if saved_world != self.d.world_size:
            log.warning("resuming a %s-process run with %d processes: same batches, but dropout/stochastic "
                        "draws of ranks > 0 restart from new streams", saved_world, self.d.world_size)
        epoch, step = snap.position
        if self.d.main:
            snapshots.remove_temp_files(self.out)
            _, _, csv_path, layers_path, hist_path = self.paths
            observe.truncate_rows(csv_path, CSV_FIELDS, epoch)
            observe.truncate_rows(layers_path, observe.LAYER_FIELDS, epoch)
            if hist_path.exists():
                observe.add_histograms(hist_path, {}, next_epoch=epoch)
        if epoch >= self.recipe.epochs:
            log.info("%s has finished all %d epochs: nothing left to train (a longer run is a new run; "
                     "--init-from its checkpoint)", self.out, self.recipe.epochs)
        elif epoch == 0 and not step and meta.get("init"):  # a warm start (BWNH's hashed weights), not a resume
            log.info("starting %s from the %s weights in %s", self.out, meta["init"].upper(), snap.path.name)
        else:
            log.info("resumed %s at epoch %d%s (from %s)", self.out, epoch + 1,
                     f", step {step}" if step else "", snap.path.name)
        return epoch, step, accum

    def _check_recipe(self, meta: dict, path: Path) -> None:
        try:
            saved = Recipe.from_dict(meta["recipe"])
        except (KeyError, TypeError, ValueError, AttributeError):
            raise CheckpointError(f"{path} holds no readable recipe") from None
        if self.fit_schedule and saved.replace(epochs=self.recipe.epochs, milestones=self.recipe.milestones,
                                               lr_every=self.recipe.lr_every) == \
                self.recipe and saved.epochs <= self.recipe.epochs:
            self.recipe = saved  # the length --fit-schedule chose in the first call
            self.scheduler = self._make_scheduler()
            return
        if saved != self.recipe:
            a, b = saved.to_dict(), self.recipe.to_dict()
            keys = [k for k in sorted(a) if a[k] != b.get(k)]
            diff = ", ".join(f"{k}: saved {a[k]!r}, requested {b[k]!r}" for k in keys)
            # a field newer than the run: the saved value is the default it ran with, and the requested
            # one a registered recipe's new value, not the user's wish — say how to continue as it ran
            older = [k for k in keys if k not in meta["recipe"] and k != "model_kwargs"]
            hint = ("; the run predates " + ", ".join(older) + ": continue it as it ran with "
                    + " ".join(f"--set {k}={json.dumps(a[k])}" for k in older)) if older else ""
            raise TrainingError(f"--resume: the recipe in {path} differs from the requested one ({diff}){hint}; "
                                "resume with the same settings")

    def _save_step(self, epoch: int, step: int, accum: dict) -> None:
        """Step checkpoint after ``step`` batches of ``epoch`` (collective: every rank calls it)."""
        rng = distrib.gather_rng(self.d)
        sums = [accum["loss_sum"], float(accum["correct"]), float(accum["n"])]
        if self.reduce is not None:
            sums = self.reduce(sums)
        if not self.d.main:
            return
        a = {"loss_sum": sums[0], "correct": int(sums[1]), "n": int(sums[2]),
             "elapsed": accum["elapsed"] + time.time() - accum["t0"]}
        meta = self._meta(epoch, kind="step", step=step, accum=a, wall_s=self.wall0 + time.time() - self.t_run)
        path = snapshots.step_path(self.out, epoch, step)
        save_checkpoint(path, self.model, meta, optimizer=self.optimizer, scheduler=self.scheduler,
                        extra_tensors={**self.stats.state(), **rng})
        snapshots.prune_steps(self.out, self.keep)

    def _make_scheduler(self) -> torch.optim.lr_scheduler.LambdaLR:
        r = self.recipe
        return make_scheduler(self.optimizer, r.lr_schedule, epochs=r.epochs, lr=r.lr, lr_final=r.lr_final,
                              every=r.lr_every, milestones=r.milestones)

    def _fit_to_budget(self, epoch_s: float, max_minutes: float) -> None:
        """After epoch 0: shorten the recipe to the epochs that fit ``max_minutes`` at ``epoch_s``
        seconds per epoch (at least 1, at most the recipe's) and rebuild the lr schedule for them."""
        r = self.recipe
        fit = max(1, min(r.epochs, int(max_minutes * 60 / max(epoch_s, 1e-9))))
        if fit >= r.epochs:
            log.info("--fit-schedule: %d epochs at %.1f s each fit %.1f min; schedule unchanged",
                     r.epochs, epoch_s, max_minutes)
            return
        self.recipe = r.replace(epochs=fit, **fitted_schedule(r, fit))
        self.scheduler = self._make_scheduler()  # initial_lr kept from the first: lr = base × factor(0)
        self.scheduler.step()  # now at epoch 1 of the fitted length
        if self.d.main:
            atomic_write_text(self.out / "recipe.json", self.recipe.to_json())
        log.info("--fit-schedule: %.1f s per epoch → %d of %d epochs fit %.1f min; lr schedule refitted",
                 epoch_s, fit, r.epochs, max_minutes)

    # ---- the loop ----------------------------------------------------------------------------

    def run(self, resume: bool, max_minutes: float | None, stop_after: int | None) -> RunResult:
        try:
            return self._run(resume, max_minutes, stop_after)
        finally:
            self.lock.release()

    def _hold_folder(self) -> None:
        """Rank 0 takes the run folder's lock (refused while another process trains into it)."""
        if self.d.main:
            try:
                self.lock.acquire()
            except snapshots.RunFolderBusy as e:
                raise TrainingError(str(e)) from None

    def _run(self, resume: bool, max_minutes: float | None, stop_after: int | None) -> RunResult:
        start_epoch, start_step, accum = 0, 0, {"loss_sum": 0.0, "correct": 0, "n": 0, "elapsed": 0.0}
        if resume:
            start_epoch, start_step, accum = self._resume()
            if self.recipe.init_from and self.recipe.init == "bn_retrain":
                from ..methods.bireal import freeze_all_but_bn

                freeze_all_but_bn(self.model)  # as initialise_from did on the fresh start
        else:
            if self.recipe.init_from:
                initialise_from(self.model, self.recipe.init_from, self.recipe.init)
                self.stats = observe.LayerStats(self.model)  # flips count from the initialised signs
            self._start_fresh()
        if self.d.active:
            distrib.barrier()
        last_path, best_path, csv_path, layers_path, hist_path = self.paths
        self.t_run = time.time()
        epochs_run, last_test = 0, self.last_test
        has_val = self.loaders.val is not None
        epoch = start_epoch
        while epoch < self.recipe.epochs:
            step0 = start_step if epoch == start_epoch else 0
            acc0 = accum if epoch == start_epoch else {"loss_sum": 0.0, "correct": 0, "n": 0, "elapsed": 0.0}
            lr = self.optimizer.param_groups[-1]["lr"]
            t0 = time.time()
            train_loss, train_acc = self._train_epoch(epoch, step0, dict(acc0, t0=t0))
            epoch_s = acc0["elapsed"] + time.time() - t0
            r = self.recipe
            val_loss, val_acc = (evaluate(self.model, self.loaders.val, self.loss_fn, bf16=r.bf16, reduce=self.reduce,
                                          device=self.device) if has_val else (math.nan, math.nan))
            test_loss, test_acc = evaluate(self.model, self.loaders.test, self.loss_fn, bf16=r.bf16, reduce=self.reduce,
                                           device=self.device)
            self.scheduler.step()
            distrib.check_consistent(self.d, self.model, self.optimizer, what=f"after epoch {epoch + 1}")
            last_test = test_acc
            improved = not has_val or val_acc > self.best_val
            if improved:
                self.best_val, self.best_epoch, self.test_at_best = (val_acc if has_val else self.best_val), epoch, test_acc
            wall = self.wall0 + time.time() - self.t_run
            row = dict(epoch=epoch, lr=lr, train_loss=train_loss, train_acc=train_acc, val_loss=val_loss,
                       val_acc=val_acc, test_loss=test_loss, test_acc=test_acc, epoch_s=epoch_s, wall_s=wall)
            rng = distrib.gather_rng(self.d)
            if self.d.main:
                layer_rows, hists = self.stats.epoch_end(epoch)
                with open(csv_path, "a", newline="") as f:
                    csv.DictWriter(f, CSV_FIELDS).writerow({k: (f"{v:.6g}" if isinstance(v, float) else v)
                                                            for k, v in row.items()})
                observe.append_layer_rows(layers_path, layer_rows)
                observe.add_histograms(hist_path, hists)
                self.tb.epoch(row, layer_rows, self.stats.layers)
                meta = self._meta(epoch, kind="epoch", metrics=row, wall_s=wall)
                if improved:
                    save_checkpoint(best_path, self.model, meta)
                save_checkpoint(last_path, self.model, meta, optimizer=self.optimizer, scheduler=self.scheduler,
                                extra_tensors=rng)
            log.info("epoch %d/%d  loss %.4f  train %.2f%%  val %s  test %.2f%%  (%.1fs)", epoch + 1,
                     r.epochs, train_loss, 100 * train_acc,
                     "-" if math.isnan(val_acc) else f"{100 * val_acc:.2f}%", 100 * test_acc, epoch_s)
            epochs_run += 1
            if self.fit_schedule and epoch == 0 and max_minutes is not None:
                pace, spent = steady_pace(elapsed=time.time() - self.t_run, train_s=epoch_s - acc0["elapsed"],
                                          warm_s=self.warm_s, warm_steps=self.warm_steps,
                                          steps=len(self.loaders.train))
                self._fit_to_budget(pace, max_minutes - spent / 60)
                if self.d.main:  # the checkpoint of epoch 0 resumes into the fitted schedule
                    save_checkpoint(last_path, self.model, self._meta(epoch, kind="epoch", metrics=row, wall_s=wall),
                                    optimizer=self.optimizer, scheduler=self.scheduler, extra_tensors=rng)
            epoch += 1
            if stop_after is not None and epochs_run >= stop_after:
                break
            out_of_time = max_minutes is not None and (time.time() - self.t_run) / 60 >= max_minutes
            if self.d.active:
                out_of_time = distrib.broadcast_flag(out_of_time)
            if out_of_time:
                log.info("time budget of %g min reached after epoch %d of %d%s", max_minutes, epoch,
                         self.recipe.epochs, "; --resume continues the run" if epoch < self.recipe.epochs else "")
                break
        self.tb.close()
        return RunResult(self.out, epochs_run, self.best_epoch, self.best_val if has_val else None,
                         self.test_at_best, last_test, self.wall0 + time.time() - self.t_run)

    def _train_epoch(self, epoch: int, start_step: int, accum: dict) -> tuple[float, float]:
        r, loader = self.recipe, self.loaders.train
        self.step_module.train()
        loader.set_epoch(epoch, start_step)
        n, correct, loss_sum = accum["n"], accum["correct"], accum["loss_sum"]
        steps = len(loader)
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{r.epochs}", leave=False, disable=not self.progress,
                   dynamic_ncols=True, initial=start_step, total=steps)
        dev = self.device
        feature_loss = self.hook is not None and self.hook.config.feature_active(epoch)
        # running sums stay on the device; the host reads them every SYNC_EVERY steps (and at the
        # end), so a GPU step does not wait for the previous one to finish
        run_loss = torch.zeros((), dtype=torch.float64, device=dev)  # Σ task loss × batch (since last read)
        run_correct = torch.zeros((), dtype=torch.int64, device=dev)
        since = start_step  # first step of the unread stretch
        shapes = set()

        def read(step_end: int) -> None:
            nonlocal loss_sum, correct, since
            part = float(run_loss)
            if not math.isfinite(part):
                where = f"step {since}" if step_end - since <= 1 else f"steps {since}–{step_end - 1}"
                raise TrainingError(f"loss became {part} at epoch {epoch + 1}, {where}; "
                                    "lower the learning rate or turn off bf16")
            loss_sum += part
            correct += int(run_correct)
            run_loss.zero_()
            run_correct.zero_()
            since = step_end

        for step, (x, y) in enumerate(bar, start=start_step):
            t_step = time.time()
            x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
            out, extra = self.train_step(x, y, feature_loss)
            task = self.loss_fn(out.float(), y)
            loss = task if extra is None else task + extra
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            if self.hook is not None:
                self.hook.after_step(y)
            # the task loss (the Bayesian terms hold constants); a non-finite extra loss shows here too
            run_loss += task.detach().double() * len(y)
            if extra is not None:  # a NaN/Inf extra loss poisons the sum (x·0 is NaN for both)
                run_loss += extra.detach().double() * 0
            run_correct += (out.detach().argmax(1) == y).sum()
            n += len(y)
            self.global_step += 1
            if self.compile and epoch == 0 and tuple(x.shape) not in shapes:
                shapes.add(tuple(x.shape))  # this step compiled: keep its time out of the pace
                if dev.type == "cuda":
                    torch.cuda.synchronize(dev)
                self.warm_s += time.time() - t_step
                self.warm_steps += 1
            if step % SYNC_EVERY == 0 or step + 1 == steps:
                read(step + 1)
                bar.set_postfix(loss=f"{loss_sum / max(n, 1):.4f}", acc=f"{100 * correct / max(n, 1):.1f}%")
                self.tb.step(float(task.detach()), self.global_step)
            if self.every and self.global_step % self.every == 0 and step + 1 < steps:
                read(step + 1)
                self._save_step(epoch, step + 1, dict(accum, loss_sum=loss_sum, correct=correct, n=n))
        read(steps)
        if self.reduce is not None:
            loss_sum, correct, n = self.reduce([loss_sum, float(correct), float(n)])
        return loss_sum / max(n, 1), correct / max(n, 1)


INIT_MODES = ("real", "bn_retrain")


def initialise_from(model: torch.nn.Module, path: str | Path, mode: str = "real") -> list[str]:
    """Initialise ``model`` from the checkpoint at ``path``; returns the tensor names copied.

    * ``"real"`` — Bi-Real's two-stage procedure (methods.md §2.5): the checkpoint holds the
      real-valued twin (clip or ReLU activations); every tensor of ``model`` (parameters and BN
      statistics) is copied from the same-name, same-shape tensor, and a network that does not
      match exactly is refused (:class:`~onebit.methods.bireal.InitMismatchError`).
    * ``"bn_retrain"`` — Bi-Real stage 3 (§2.6): the checkpoint holds the trained binary net with
      α-scaled weights; α is folded into its BNs (:func:`~onebit.methods.bireal.absorb_scale`), the
      result copied into ``model`` (built with unscaled sign weights) and all but BN frozen.
    """
    from ..methods.bireal import InitMismatchError, absorb_scale, init_from_real, prepare_bn_retraining

    if mode not in INIT_MODES:
        raise TrainingError(f"unknown init mode {mode!r}; use one of {INIT_MODES}")
    path = Path(path)
    if not path.is_file():
        hint = ""
        if path.is_dir():  # a run folder: point at its checkpoint
            meant = run_folder_checkpoint(path)
            hint = f" ({path} is a folder)" if meant is None else f" ({path} is a run folder; did you mean {meant}?)"
        raise TrainingError(f"init_from: no checkpoint at {path}{hint}")
    source, _ = load_for_eval(path)
    if mode == "bn_retrain":
        absorb_scale(source)
    mine, theirs = (getattr(m, "onebit_config", {}).get("name", "?") for m in (model, source))
    try:
        copied = init_from_real(model, source, labels=("trained", "checkpoint's"))
    except InitMismatchError as e:
        which = (f"{path} holds {theirs}, this run trains {mine}" if mine != theirs
                 else f"{path} holds {theirs} of other settings")
        raise InitMismatchError(f"init_from: {which}; {e}") from None
    if mode == "bn_retrain":
        prepare_bn_retraining(model)
    log.info("initialised %d tensors from %s (%s)", len(copied), path, mode)
    return copied


def load_for_eval(path: str | Path) -> tuple[torch.nn.Module, dict]:
    """Rebuild the model stored in a checkpoint (eval mode) and return it with its metadata.

    The declared model is checked against the file's tensors before it is allocated
    (:func:`~onebit.train.checkpoint.model_from_meta`); every problem is a :class:`CheckpointError`.
    """
    tensors, meta = load_checkpoint(path)
    model = model_from_meta(meta, tensors, str(path))
    restore(tensors, meta, model)
    for name, t in model.state_dict().items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            bad = int((~torch.isfinite(t)).sum())
            raise CheckpointError(f"{path}: {name} holds {bad} NaN/inf value(s) of {t.numel()}: the file is "
                                  "corrupt or the training diverged")
    model.eval()
    return model, meta
