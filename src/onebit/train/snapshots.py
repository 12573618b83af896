"""Where a run's checkpoints live, which one a resume starts from, and how many are kept.

A run folder holds ``last.safetensors`` (end of the last finished epoch), ``best.safetensors`` and,
with ``--ckpt-every-steps N``, step checkpoints ``steps/e<epoch>-s<step>.safetensors`` (``step``
batches of ``epoch`` done). Every file is written atomically, so a SIGKILL at any moment leaves each
of them either complete or absent (plus, at worst, a temp file ``.<name>.*.tmp`` that
:func:`remove_temp_files` deletes). A resume starts from the checkpoint furthest into the run whose
file reads cleanly; a damaged newest file falls back to the one before it.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from .checkpoint import CheckpointError, read_meta

try:
    import fcntl
except ImportError:  # Windows: no flock
    fcntl = None

log = logging.getLogger("onebit.train")

STEPS_DIR = "steps"


@dataclass(frozen=True)
class Snapshot:
    """A checkpoint file and its position in the run: ``step`` batches of ``epoch`` done."""

    path: Path
    epoch: int
    step: int
    kind: str  # "epoch" (end of an epoch: position (epoch + 1, 0)) or "step"

    @property
    def position(self) -> tuple[int, int]:
        return (self.epoch + 1, 0) if self.kind == "epoch" else (self.epoch, self.step)


def step_path(out: Path, epoch: int, step: int) -> Path:
    """The file of the step checkpoint after ``step`` batches of ``epoch`` (names sort by position)."""
    return out / STEPS_DIR / f"e{epoch:05d}-s{step:08d}.safetensors"


def _snapshot(path: Path) -> Snapshot:
    meta = read_meta(path)
    kind = meta.get("kind", "epoch")
    epoch, step = meta.get("epoch"), meta.get("step", 0)
    if kind not in ("epoch", "step") or not isinstance(epoch, int) or not isinstance(step, int) \
            or isinstance(epoch, bool) or epoch < -1 or step < 0:  # epoch -1: weights to start from (BWNH)
        raise CheckpointError(f"{path}: bad position (kind={kind!r}, epoch={epoch!r}, step={step!r})")
    return Snapshot(path, epoch, step, kind)


def candidates(out: Path) -> list[Snapshot]:
    """Readable checkpoints of a run, furthest into the run first (unreadable ones are logged and skipped)."""
    paths = [out / "last.safetensors"] + sorted((out / STEPS_DIR).glob("e*-s*.safetensors"))
    found = []
    for p in paths:
        if not p.is_file():
            continue
        try:
            found.append(_snapshot(p))
        except CheckpointError as e:
            log.warning("skipping an unreadable checkpoint: %s", e)
    return sorted(found, key=lambda s: s.position, reverse=True)


def prune_steps(out: Path, keep: int) -> None:
    """Delete all but the ``keep`` newest step checkpoints."""
    files = sorted((out / STEPS_DIR).glob("e*-s*.safetensors"))
    for p in files[: max(len(files) - keep, 0)]:
        p.unlink(missing_ok=True)


def remove_temp_files(out: Path) -> None:
    """Delete temp files that a write killed half-way left behind (never a finished checkpoint)."""
    for folder in (out, out / STEPS_DIR):
        for p in folder.glob(".*.tmp"):
            p.unlink(missing_ok=True)


RUN_FILES = ("last.safetensors", "best.safetensors", "metrics.csv", "recipe.json", "layers.csv", "histograms.json")


def stopped_before_first_checkpoint(out: Path) -> bool:
    """``out`` holds exactly what a run writes when it starts — a readable ``recipe.json``, the
    header of ``metrics.csv``, perhaps the header of ``layers.csv`` — and nothing else of a run: it
    stopped (Ctrl-C, a crash, a bad input) before its first checkpoint and its first epoch's row, so
    it holds no result. A run still in its first epoch looks the same: the trainer's :class:`RunLock`
    tells the two apart."""
    found = set(run_files(out))
    if not {"recipe.json", "metrics.csv"} <= found or not found <= {"recipe.json", "metrics.csv", "layers.csv"}:
        return False
    try:
        for name in ("metrics.csv", "layers.csv"):
            if name in found:
                with open(out / name, "rb") as f:
                    if len(f.read(1 << 16).splitlines()) > 1:  # a row: a result
                        return False
        recipe = json.loads((out / "recipe.json").read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(recipe, dict) and "model" in recipe


class RunFolderBusy(Exception):
    """Another process holds the run folder's :class:`RunLock`."""


class RunLock:
    """An advisory lock (``flock``) on run folder ``out``, held while a process trains into it, so
    a second ``onebit train`` into the same folder — a fresh one or a ``--resume`` — is refused
    while the first runs. The kernel drops it when the process ends, however it ends. The file
    ``.onebit-run.lock`` stays in the folder (removing it would race with the next taker).
    Where ``fcntl`` is missing (Windows) it locks nothing."""

    NAME = ".onebit-run.lock"

    def __init__(self, out: Path):
        self.path = Path(out) / self.NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        if self._fd is not None or fcntl is None:
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise RunFolderBusy(f"{self.path.parent} is in use by another running `onebit train` "
                                f"(it holds {self.path}); wait for it or choose another --out") from None
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None


def run_files(out: Path) -> list[str]:
    """The files of a run that ``out`` already holds (a fresh run would overwrite them): the run
    files by name, and step checkpoints as ``steps/``. Empty when ``out`` is new or empty of them."""
    found = [name for name in RUN_FILES if (out / name).exists()]
    if any((out / STEPS_DIR).glob("e*-s*.safetensors")):
        found.append(f"{STEPS_DIR}/")
    return found
