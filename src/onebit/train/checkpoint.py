"""Checkpoints: one safetensors file whose header carries the JSON state — no pickle anywhere.

Tensors: ``model.<key>`` (state_dict), ``optim.<param index>.<key>`` (optimizer state) and
``rng.torch`` (the CPU generator state). The JSON (``__metadata__["onebit"]``) holds the recipe,
the model config, the epoch, metrics, the optimizer's param groups and scalar state, and the
scheduler state. Files are written atomically: temp file in the same folder → fsync → rename,
so a crash never leaves a half-written checkpoint in place of a good one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError as SafetensorsError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from ..fileio import atomic_write_bytes

FORMAT = "onebit-checkpoint"
VERSION = 1


class CheckpointError(Exception):
    """A checkpoint is missing, truncated, corrupt or not an onebit checkpoint."""


def _split_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, scalars = {}, {}
    for idx, st in state["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"optim.{idx}.{k}"] = v.detach().contiguous()
            else:
                scalars[f"{idx}.{k}"] = v
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _join_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        _, idx, k = key.split(".", 2)
        state.setdefault(int(idx), {})[k] = v
    for key, v in meta["scalars"].items():
        idx, k = key.split(".", 1)
        state.setdefault(int(idx), {})[k] = v
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(path: str | Path, model: torch.nn.Module, meta: dict, *,
                    optimizer: torch.optim.Optimizer | None = None, scheduler=None) -> None:
    """Save model (+ optimizer, scheduler, RNG) with JSON ``meta`` atomically to ``path``."""
    tensors = {f"model.{k}": v.detach().contiguous()
               for k, v in model.state_dict().items()}
    meta = dict(meta, format=FORMAT, version=VERSION)
    if optimizer is not None:
        t, m = _split_optimizer(optimizer.state_dict())
        tensors.update(t)
        meta["optimizer"] = m
    if scheduler is not None:
        meta["scheduler"] = {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"}
    tensors["rng.torch"] = torch.get_rng_state()
    data = st_save(tensors, metadata={"onebit": json.dumps(meta)})
    atomic_write_bytes(path, data)


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Read ``path`` → (tensors, meta). Never executes code; clear errors for bad files."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        raw = path.read_bytes()
        tensors = st_load(raw)
        from safetensors import safe_open  # header metadata

        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
    except (SafetensorsError, ValueError, OSError, RuntimeError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors checkpoint ({e})") from None
    try:
        meta = json.loads(header["onebit"])
    except (KeyError, json.JSONDecodeError):
        raise CheckpointError(f"{path} has no onebit metadata: not an onebit checkpoint") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: format {meta.get('format')!r} is not {FORMAT!r}")
    if meta.get("version", 0) > VERSION:
        raise CheckpointError(f"{path}: checkpoint version {meta['version']} is newer than this onebit ({VERSION})")
    return tensors, meta


def restore(tensors: dict[str, torch.Tensor], meta: dict, model: torch.nn.Module, *,
            optimizer: torch.optim.Optimizer | None = None, scheduler=None, rng: bool = False) -> None:
    """Load the model (strictly), and optionally optimizer, scheduler and RNG state."""
    sd = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint does not fit the model: {e}") from None
    if optimizer is not None and "optimizer" in meta:
        ot = {k: v for k, v in tensors.items() if k.startswith("optim.")}
        optimizer.load_state_dict(_join_optimizer(ot, meta["optimizer"]))
    if scheduler is not None and "scheduler" in meta:
        sd = dict(meta["scheduler"])
        sd.setdefault("lr_lambdas", [None] * len(optimizer.param_groups if optimizer else sd.get("base_lrs", [])))
        scheduler.load_state_dict(sd)
    if rng and "rng.torch" in tensors:
        torch.set_rng_state(tensors["rng.torch"])
