"""Checkpoints: one safetensors file whose header carries the JSON state — no pickle anywhere.

Tensors: ``model.<key>`` (state_dict), ``optim.<param index>.<key>`` (optimizer state),
``rng.torch`` (the CPU generator state; ``rng.torch.rank<r>`` for the other ranks of a
distributed run), ``rng.numpy`` (NumPy's global MT19937 key), ``rng.cuda`` (the current GPU's
generator, when CUDA is in use) and, in step checkpoints, trainer
state such as ``signs.<layer>`` (bit-packed weight signs at the start of the epoch). The JSON
(``__metadata__["onebit"]``) holds the recipe, the model config, the position (epoch, step), metrics,
the optimizer's param groups and scalar state, the scheduler state and the Python/NumPy RNG scalars.
Files are written atomically: temp file in the same folder → fsync → rename, so a crash never
leaves a half-written checkpoint in place of a good one.

The header also holds ``__metadata__["onebit_sha256"]``, the SHA-256 of the JSON state followed by
the tensor bytes (twenty-third session; an older checkpoint without it still loads): a bit changed on
disk or in transfer is a :class:`CheckpointError` naming the file, and ``--resume`` then falls back
to the checkpoint before it, as for a truncated file.

Reading never trusts the file: :func:`parse_checkpoint` checks the header length, the JSON and the
metadata before safetensors maps any tensor (safetensors checks every tensor's offsets against the
file, so a declared shape can never allocate more than the file holds); :func:`restore` checks every
tensor's shape and dtype against the model; :func:`load_for_eval` builds the declared model on the
``meta`` device first, so a hostile config cannot allocate a huge model. Every failure is a
:class:`CheckpointError`.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError as SafetensorsError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from ..fileio import atomic_write_bytes, json_and_body_sha256 as _digest, read_file_bytes
from ..fileio import safetensors_body as _body

FORMAT = "onebit-checkpoint"
VERSION = 1
#: header metadata key of the SHA-256 of the JSON state followed by the tensor bytes
CHECKSUM_KEY = "onebit_sha256"
MAX_HEADER = 100_000_000  # safetensors' own limit on the JSON header

# what a hostile file can make the decoders raise (caught and turned into CheckpointError)
_DECODE_ERRORS = (SafetensorsError, ValueError, TypeError, KeyError, IndexError, AttributeError,
                  OverflowError, RuntimeError, UnicodeDecodeError)


class CheckpointError(Exception):
    """A checkpoint is missing, truncated, corrupt or not an onebit checkpoint."""


def _split_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, scalars = {}, {}
    for idx, st in state["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"optim.{idx}.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars[f"{idx}.{k}"] = v
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _join_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    if not isinstance(meta, dict) or not isinstance(meta.get("scalars", {}), dict):
        raise CheckpointError("optimizer state in the checkpoint is malformed")
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        parts = key.split(".", 2)
        if len(parts) != 3 or not parts[1].isdigit():
            raise CheckpointError(f"bad optimizer tensor name {key!r}")
        state.setdefault(int(parts[1]), {})[parts[2]] = v
    for key, v in meta.get("scalars", {}).items():
        idx, _, k = key.partition(".")
        if not idx.isdigit() or not k:
            raise CheckpointError(f"bad optimizer scalar name {key!r}")
        state.setdefault(int(idx), {})[k] = v
    return {"state": state, "param_groups": meta.get("param_groups")}


def rng_state() -> tuple[dict[str, torch.Tensor], dict]:
    """This process's torch, NumPy and Python RNG states as (tensors, JSON-able meta); with CUDA in
    use also the current GPU's generator (``rng.cuda``: dropout and stochastic sign on the GPU)."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    py = random.getstate()
    tensors = {"rng.torch": torch.get_rng_state(), "rng.numpy": torch.from_numpy(keys.astype(np.int64))}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    return tensors, {"numpy": [int(pos), int(has_gauss), float(gauss)], "python": [py[0], list(py[1]), py[2]]}


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict, rank: int = 0) -> None:
    """Restore the RNG states saved by :func:`rng_state` (rank ``r`` > 0 reads ``rng.torch.rank<r>``).

    ``meta`` is either :func:`rng_state`'s own second value or a checkpoint's metadata, which holds
    it under ``"rng"``."""
    key = "rng.torch" if rank == 0 else f"rng.torch.rank{rank}"
    try:
        if key in tensors:
            t = tensors[key]
            if t.dtype != torch.uint8 or t.dim() != 1:
                raise CheckpointError(f"{key} must be a uint8 vector, got {t.dtype} {tuple(t.shape)}")
            torch.set_rng_state(t)
        if rank == 0 and "rng.cuda" in tensors and torch.cuda.is_available():
            t = tensors["rng.cuda"]
            if t.dtype != torch.uint8 or t.dim() != 1:
                raise CheckpointError(f"rng.cuda must be a uint8 vector, got {t.dtype} {tuple(t.shape)}")
            torch.cuda.set_rng_state(t)
        extra = (meta.get("rng") if "rng" in meta else meta) if isinstance(meta, dict) else None
        if isinstance(extra, dict) and "rng.numpy" in tensors:
            keys = tensors["rng.numpy"]
            pos, has_gauss, gauss = extra["numpy"]
            if keys.shape != (624,) or keys.dtype != torch.int64 or not isinstance(pos, int) \
                    or int(keys.min()) < 0 or int(keys.max()) >= 1 << 32:
                raise CheckpointError("the NumPy RNG state in the checkpoint is malformed")
            np.random.set_state(("MT19937", keys.numpy().astype(np.uint32), pos, int(has_gauss), float(gauss)))
        if isinstance(extra, dict) and "python" in extra:
            version, internal, gauss = extra["python"]
            random.setstate((version, tuple(internal), gauss))
    except CheckpointError:
        raise
    except _DECODE_ERRORS as e:
        raise CheckpointError(f"cannot restore the RNG state ({type(e).__name__}: {e})") from None


def save_checkpoint(path: str | Path, model: torch.nn.Module, meta: dict, *,
                    optimizer: torch.optim.Optimizer | None = None, scheduler=None,
                    extra_tensors: dict[str, torch.Tensor] | None = None) -> None:
    """Save model (+ optimizer, scheduler, RNG, ``extra_tensors``) with JSON ``meta`` atomically."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous()  # a GPU run saves CPU copies
               for k, v in model.state_dict().items()}
    meta = dict(meta, format=FORMAT, version=VERSION)
    if optimizer is not None:
        t, m = _split_optimizer(optimizer.state_dict())
        tensors.update(t)
        meta["optimizer"] = m
    if scheduler is not None:
        meta["scheduler"] = {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"}
    rt, rm = rng_state()
    tensors.update(rt)
    meta.setdefault("rng", rm)
    for k, v in (extra_tensors or {}).items():
        tensors[k] = v.detach().cpu().contiguous()
    meta_json = json.dumps(meta)
    plain = st_save(tensors, metadata={"onebit": meta_json})
    body = _body(plain)
    data = st_save(tensors, metadata={"onebit": meta_json, CHECKSUM_KEY: _digest(meta_json, body)})
    if _body(data) != body:  # the tensor layout does not depend on the metadata
        raise RuntimeError("safetensors laid the tensors out differently with the checksum in the header")
    del plain, body
    atomic_write_bytes(path, data)


def read_header(raw: bytes, source: str = "checkpoint") -> dict:
    """The safetensors JSON header of ``raw`` (checked: length, JSON object)."""
    if len(raw) < 8:
        raise CheckpointError(f"{source} is truncated ({len(raw)} bytes): not a safetensors checkpoint")
    n = int.from_bytes(raw[:8], "little")
    if n > len(raw) - 8 or n > MAX_HEADER:
        raise CheckpointError(f"{source} is not a readable safetensors checkpoint (header of {n} bytes "
                              f"declared, the file has {len(raw)})")
    try:
        header = json.loads(raw[8:8 + n])
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise CheckpointError(f"{source} is not a readable safetensors checkpoint (header: {e})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{source} is not a readable safetensors checkpoint (header is not an object)")
    return header


def _no_metadata(md, source: str) -> str:
    """The error for a safetensors file without onebit checkpoint metadata (an exported
    ``.onebit`` model is named as such: it is for the engine, not for PyTorch)."""
    if isinstance(md, dict) and "onebit_graph" in md:
        return (f"{source} is an exported .onebit model (for `onebit run` / onebit.deploy.Engine), not a "
                "training checkpoint; give the .safetensors checkpoint `onebit train` wrote")
    return f"{source} has no onebit metadata: not an onebit checkpoint"


def parse_checkpoint(raw: bytes, source: str = "checkpoint") -> tuple[dict[str, torch.Tensor], dict]:
    """Decode checkpoint bytes → (tensors, meta). Never executes code; :class:`CheckpointError` otherwise."""
    header = read_header(raw, source)
    md = header.get("__metadata__")
    if not isinstance(md, dict) or not isinstance(md.get("onebit"), str):
        raise CheckpointError(_no_metadata(md, source))
    if CHECKSUM_KEY in md and md[CHECKSUM_KEY] != _digest(md["onebit"], _body(raw)):
        raise CheckpointError(f"{source} is damaged: its state and tensors do not match the checksum written with "
                              "them (a change on disk or in transfer)")
    try:
        meta = json.loads(md["onebit"])
    except (ValueError, RecursionError):
        raise CheckpointError(f"{source} has corrupt onebit metadata: not an onebit checkpoint") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{source}: the onebit metadata is not a JSON object: not an onebit checkpoint")
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{source}: format {meta.get('format')!r} is not {FORMAT!r}")
    version = meta.get("version", 0)
    if not isinstance(version, int) or isinstance(version, bool) or version > VERSION:
        raise CheckpointError(f"{source}: checkpoint version {version!r} is not supported (this onebit reads ≤ {VERSION})")
    try:
        tensors = st_load(raw)
    except _DECODE_ERRORS as e:
        raise CheckpointError(f"{source} is not a readable safetensors checkpoint ({e})") from None
    return tensors, meta


def run_folder_checkpoint(path: str | Path) -> Path | None:
    """The checkpoint a user most likely meant when naming run folder ``path`` (best, else last)."""
    path = Path(path)
    return next((path / n for n in ("best.safetensors", "last.safetensors") if (path / n).is_file()), None)


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Read ``path`` → (tensors, meta). Never executes code; clear errors for bad files."""
    path = Path(path)
    hint = ""
    if path.is_dir() and (meant := run_folder_checkpoint(path)) is not None:  # a run folder
        hint = f" (did you mean {meant}?)"
    return parse_checkpoint(read_file_bytes(path, CheckpointError, "checkpoint file", "checkpoint", hint), str(path))


def read_meta(path: str | Path) -> dict:
    """Only the JSON metadata of a checkpoint (reads the header, not the tensors)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            n = int.from_bytes(head, "little") if len(head) == 8 else -1
            if n < 0 or n > MAX_HEADER:
                raise CheckpointError(f"{path} is not a readable safetensors checkpoint")
            raw = head + f.read(n)
    except OSError as e:
        raise CheckpointError(f"cannot read {path}: {e}") from None
    header = read_header(raw, str(path))
    md = header.get("__metadata__")
    try:
        meta = json.loads(md["onebit"])
    except (TypeError, KeyError, ValueError, RecursionError):
        raise CheckpointError(_no_metadata(md, str(path))) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an onebit checkpoint")
    return meta


def check_state_dict(sd: dict[str, torch.Tensor], model: torch.nn.Module) -> None:
    """Refuse missing/unexpected keys and any shape or dtype that differs from ``model``'s."""
    want = model.state_dict()
    missing, extra = sorted(set(want) - set(sd)), sorted(set(sd) - set(want))
    if missing or extra:
        raise CheckpointError(f"checkpoint does not fit the model: missing {missing[:5]}"
                              f"{'…' if len(missing) > 5 else ''}, unexpected {extra[:5]}{'…' if len(extra) > 5 else ''}")
    for k, v in want.items():
        t = sd[k]
        if tuple(t.shape) != tuple(v.shape) or t.dtype != v.dtype:
            raise CheckpointError(f"checkpoint does not fit the model: {k} is {t.dtype} {tuple(t.shape)}, "
                                  f"the model has {v.dtype} {tuple(v.shape)}")


def restore(tensors: dict[str, torch.Tensor], meta: dict, model: torch.nn.Module, *,
            optimizer: torch.optim.Optimizer | None = None, scheduler=None, rng: bool = False,
            rank: int = 0) -> None:
    """Load the model (strictly: keys, shapes, dtypes), and optionally optimizer, scheduler and RNG state."""
    sd = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    check_state_dict(sd, model)
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint does not fit the model: {e}") from None
    if optimizer is not None and "optimizer" in meta:
        ot = {k: v for k, v in tensors.items() if k.startswith("optim.")}
        _restore_optimizer(optimizer, _join_optimizer(ot, meta["optimizer"]))
    if scheduler is not None and "scheduler" in meta:
        _restore_scheduler(scheduler, meta["scheduler"])
    if rng:
        set_rng_state(tensors, meta, rank)


def _numbers(v, n: int) -> bool:
    return (isinstance(v, list) and len(v) == n
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v))


def _restore_scheduler(scheduler, saved) -> None:
    """Load a per-epoch LR scheduler's state after checking its keys and types."""
    fresh = {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"}
    n = len(scheduler.optimizer.param_groups)
    if not isinstance(saved, dict) or not set(saved) <= set(fresh):
        raise CheckpointError("scheduler state in the checkpoint is malformed")
    for k, v in saved.items():
        ok = {"last_epoch": isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 1 << 31,
              "base_lrs": _numbers(v, n), "_last_lr": _numbers(v, n)}.get(
            k, type(v) is type(fresh[k]) or (isinstance(v, (int, float)) and isinstance(fresh[k], (int, float))))
        if not ok:
            raise CheckpointError(f"scheduler state in the checkpoint is malformed ({k}={v!r:.80})")
    try:
        scheduler.load_state_dict(dict(saved, lr_lambdas=[None] * n))
    except _DECODE_ERRORS as e:
        raise CheckpointError(f"scheduler state in the checkpoint is malformed ({type(e).__name__}: {e})") from None


def _same_kind(saved, current) -> bool:
    """A saved param-group value may replace ``current`` (JSON turns tuples into lists)."""
    if isinstance(current, bool) or isinstance(saved, bool):
        return type(saved) is type(current)
    if isinstance(current, (int, float)):
        return isinstance(saved, (int, float))
    if isinstance(current, (tuple, list)):
        return isinstance(saved, (tuple, list)) and len(saved) == len(current) and all(
            _same_kind(a, b) for a, b in zip(saved, current))
    return current is None and saved is None or type(saved) is type(current)


def _restore_optimizer(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """``optimizer.load_state_dict`` after checking the saved state fits the optimizer's parameters."""
    groups = state["param_groups"]
    params = [p for g in optimizer.param_groups for p in g["params"]]
    if not isinstance(groups, list) or len(groups) != len(optimizer.param_groups) or not all(
            isinstance(g, dict) and isinstance(g.get("params"), list) for g in groups):
        raise CheckpointError("optimizer state in the checkpoint does not fit this optimizer (param groups)")
    ids = [i for g in groups for i in g["params"]]
    if sorted(i for i in ids if isinstance(i, int)) != list(range(len(params))) or len(ids) != len(params):
        raise CheckpointError("optimizer state in the checkpoint does not fit this optimizer (parameters)")
    for g_saved, g in zip(groups, optimizer.param_groups):
        if len(g_saved["params"]) != len(g["params"]):
            raise CheckpointError("optimizer state in the checkpoint does not fit this optimizer (group sizes)")
        for k, v in g_saved.items():
            known = k in g and _same_kind(v, g[k])
            new = k not in g and (v is None or isinstance(v, (bool, int, float, str)))  # a newer torch's option
            if k != "params" and not (known or new):
                raise CheckpointError(f"optimizer state in the checkpoint is malformed ({k}={v!r:.80})")
    by_index = dict(zip(ids, [p for g in optimizer.param_groups for p in g["params"]]))
    for idx, st in state["state"].items():
        if idx not in by_index:
            raise CheckpointError(f"optimizer state for parameter {idx}, which the optimizer does not have")
        p = by_index[idx]
        for k, v in st.items():
            if isinstance(v, torch.Tensor) and v.dim() > 0 and (tuple(v.shape) != tuple(p.shape) or v.dtype != p.dtype):
                raise CheckpointError(f"optimizer state {idx}.{k} is {v.dtype} {tuple(v.shape)}, "
                                      f"the parameter is {p.dtype} {tuple(p.shape)}")
            if not isinstance(v, torch.Tensor) and not (v is None or isinstance(v, (int, float))):
                raise CheckpointError(f"optimizer state {idx}.{k} has an unexpected value {v!r:.80}")
            if isinstance(v, torch.Tensor) and v.dim() == 0 and not v.dtype.is_floating_point:
                raise CheckpointError(f"optimizer state {idx}.{k} must be a float scalar, got {v.dtype}")
    try:
        optimizer.load_state_dict(state)
    except _DECODE_ERRORS as e:
        raise CheckpointError(f"optimizer state in the checkpoint is malformed ({type(e).__name__}: {e})") from None
    _match_memory_format(optimizer)


def _match_memory_format(optimizer: torch.optim.Optimizer) -> None:
    """Give each per-parameter state tensor its parameter's strides (checkpoints hold contiguous copies;
    a channels-last parameter's moments must be channels-last too, e.g. for the fused Adam kernel)."""
    for p, st in optimizer.state.items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor) and v.shape == p.shape and v.stride() != p.stride():
                st[k] = torch.empty_like(p, dtype=v.dtype).copy_(v)


MAX_CONFIG_INT = 1 << 16  # no layer width, depth or class count of a saved model is larger


def _check_config_values(v, where: str, depth: int = 0) -> None:
    if depth > 8:
        raise CheckpointError(f"model_config.{where} is nested too deeply")
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return
    if isinstance(v, int):
        if abs(v) > MAX_CONFIG_INT:
            raise CheckpointError(f"model_config.{where} = {v} is out of range (|v| ≤ {MAX_CONFIG_INT})")
        return
    if isinstance(v, float):
        if v != v or abs(v) == float("inf"):
            raise CheckpointError(f"model_config.{where} = {v} is not a finite number")
        return
    if isinstance(v, list):
        if len(v) > 64:
            raise CheckpointError(f"model_config.{where} has {len(v)} items (at most 64)")
        for i, x in enumerate(v):
            _check_config_values(x, f"{where}[{i}]", depth + 1)
        return
    if isinstance(v, dict):
        if len(v) > 64:
            raise CheckpointError(f"model_config.{where} has {len(v)} keys (at most 64)")
        for k, x in v.items():
            _check_config_values(x, f"{where}.{k}", depth + 1)
        return
    raise CheckpointError(f"model_config.{where} has an unexpected value {v!r:.60}")


def model_from_meta(meta: dict, tensors: dict[str, torch.Tensor], source: str = "checkpoint") -> torch.nn.Module:
    """Rebuild the model a checkpoint declares (``meta["model_config"]``) without trusting it.

    The model is first built on PyTorch's ``meta`` device (no memory) and its state_dict checked
    against the file's tensors (keys, shapes, dtypes); only then is it built for real.
    """
    from .. import models

    cfg = meta.get("model_config")
    if not isinstance(cfg, dict) or not isinstance(cfg.get("name"), str):
        raise CheckpointError(f"{source} does not say which model it holds")
    cfg = dict(cfg)
    name = cfg.pop("name")
    for k, v in cfg.items():
        _check_config_values(v, k)
    try:
        with torch.device("meta"):
            shell = models.create(name, **cfg)
    except _DECODE_ERRORS as e:
        raise CheckpointError(f"{source}: cannot build model {name!r} from its config ({type(e).__name__}: {e})") from None
    sd = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    check_state_dict(sd, shell)
    del shell
    try:
        return models.create(name, **cfg)
    except _DECODE_ERRORS as e:  # pragma: no cover - the meta build succeeded
        raise CheckpointError(f"{source}: cannot build model {name!r} ({type(e).__name__}: {e})") from None


def check_data_fits(meta: dict, data: str | None, source: str = "checkpoint") -> None:
    """Refuse data set ``data`` if its images do not have the shape the checkpoint's model was
    trained on (``meta["data_info"]``); no-op when either is unknown."""
    want = meta.get("data_info") or {}
    if not data or want.get("in_channels") is None:
        return
    from .. import data as onebit_data

    got = onebit_data.info(data)
    if (got.in_channels, got.image_size) != (want["in_channels"], want.get("image_size")):
        raise ValueError(f"data set {data} has images of shape ({got.in_channels}, {got.image_size}, "
                         f"{got.image_size}); {source} takes ({want['in_channels']}, {want.get('image_size')}, "
                         f"{want.get('image_size')})")
