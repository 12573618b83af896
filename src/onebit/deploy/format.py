"""The ``.onebit`` file: a safetensors file whose header holds the JSON graph.

Tensors are NumPy arrays (binary weights bit-packed into uint64 words, 1 bit per weight; BN
folded into per-channel float multipliers/biases or integer thresholds). The graph is
``{"format": "onebit", "version": 1, "input": {...}, "output": name, "ops": [...]}``; every op
has ``op``, ``input`` (value name), ``output`` (value name), attributes, and ``tensors``
(role → tensor key). :func:`validate` checks all of it before the engine runs anything:
known ops, every referenced tensor present with the expected dtype and rank, values defined
before use, sane sizes — so a corrupt or hostile file ends in a :class:`DeployError`, never a
crash, a huge allocation or code execution (safetensors never runs code; no pickle).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..fileio import atomic_write_bytes, read_file_bytes, safetensors_body
from ..fileio import json_and_body_sha256 as _digest
from .errors import DeployError

FORMAT = "onebit"
VERSION = 1
MAX_DIM = 1 << 24  # no sane tensor axis in a BNN is larger than this

# op name -> {role: (dtype, rank)} of the tensors it needs (optional roles end with '?')
OP_TENSORS: dict[str, dict[str, tuple[str, int]]] = {
    # conv/dense: float input; weight float32 (real) or uint64 (binary, bit-packed)
    "conv": {"weight": ("float32|uint64", 4), "mult?": ("float32", 1), "bias?": ("float32", 1)},
    "dense": {"weight": ("float32|uint64", 2), "mult?": ("float32", 1), "bias?": ("float32", 1)},
    "bconv": {"weight": ("uint64", 4), "mult?": ("float32", 1), "bias?": ("float32", 1),
              "thresh?": ("int32", 1), "flip?": ("uint8", 1)},
    "bdense": {"weight": ("uint64", 2), "mult?": ("float32", 1), "bias?": ("float32", 1),
               "thresh?": ("int32", 1), "flip?": ("uint8", 1)},
    "quantize": {},
    "maxpool": {},
    "bmaxpool": {"min_mask?": ("uint64", 1)},
    "flatten": {},
    "affine": {"mult": ("float32", 1), "bias": ("float32", 1)},
    "act": {},
    "avgpool": {},       # kernel/stride, ceil_mode; mean over the window's valid elements
    "gavgpool": {},      # global average pool (H, W, C) -> (C,)
}
ACTS = ("htanh", "relu")


#: how uint8 pixels become a model's input (``onebit.data.transforms.NORMALIZE_MODES``, kept torch-free here)
NORMALIZE_MODES = ("pm1", "meanstd", "unit")


def check_preprocess(pre) -> None:
    """A graph's ``preprocess``: an object with string ``normalize`` (one of :data:`NORMALIZE_MODES`)
    and ``data`` entries, both optional."""
    if not isinstance(pre, dict) or not all(isinstance(pre.get(k, ""), str) for k in ("normalize", "data")):
        raise DeployError("graph.preprocess must be an object with string 'normalize' / 'data'")
    if "normalize" in pre and pre["normalize"] not in NORMALIZE_MODES:
        raise DeployError(f"unknown preprocess normalize {pre['normalize']!r}; use one of {', '.join(NORMALIZE_MODES)}")


#: header metadata key of the SHA-256 of the graph JSON followed by the tensor bytes (written by
#: :func:`write`; a file without it — written before the twentieth session — still loads)
CHECKSUM_KEY = "onebit_sha256"


def write(path: str | Path, graph: dict, tensors: dict[str, np.ndarray], *, overwrite: bool = True) -> int:
    """Validate and write atomically (temp file + fsync + rename), with a checksum of the graph
    and the tensor bytes in the header (:data:`CHECKSUM_KEY`). Returns the file size.
    ``overwrite=False``: a file at ``path`` (even one that appears meanwhile) is a FileExistsError."""
    from safetensors.numpy import save

    graph = dict(graph, format=FORMAT, version=VERSION)
    validate(graph, tensors)
    arrays = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    graph_json = json.dumps(graph)
    plain = save(arrays, metadata={"onebit_graph": graph_json})
    body = safetensors_body(plain)
    data = save(arrays, metadata={"onebit_graph": graph_json, CHECKSUM_KEY: _digest(graph_json, body)})
    if safetensors_body(data) != body:  # the layout ignores the metadata
        raise RuntimeError("safetensors laid the tensors out differently with the checksum in the header")
    atomic_write_bytes(path, data, exclusive=not overwrite)
    return len(data)


def read(path: str | Path) -> tuple[dict, dict[str, np.ndarray]]:
    """Read and validate a ``.onebit`` file → (graph, tensors)."""
    return parse(read_file_bytes(path, DeployError, ".onebit model file", "model file"), str(path))


def parse(raw: bytes, source: str = "model") -> tuple[dict, dict[str, np.ndarray]]:
    """Decode and validate the bytes of a ``.onebit`` file → (graph, tensors).

    The header length and JSON are checked before safetensors maps any tensor (safetensors checks
    every tensor's offsets against the buffer, so a declared shape never allocates more than the
    file holds); then the graph is validated against the tensors. Any failure is a DeployError.
    """
    from safetensors import SafetensorError
    from safetensors.numpy import load

    if len(raw) < 8:
        raise DeployError(f"{source} is truncated ({len(raw)} bytes): not a .onebit file")
    header_len = int.from_bytes(raw[:8], "little")
    if header_len > len(raw) - 8 or header_len > 100_000_000:
        raise DeployError(f"{source} is truncated or corrupt (header of {header_len} bytes declared, "
                          f"file has {len(raw)})")
    try:
        header = json.loads(raw[8:8 + header_len])
        meta = header.get("__metadata__") if isinstance(header, dict) else None
        if isinstance(meta, dict) and "onebit" in meta and "onebit_graph" not in meta:
            raise DeployError(f"{source} is a training checkpoint, not an exported .onebit model; export it "
                              "first: onebit export CHECKPOINT -o MODEL.onebit")
        if not isinstance(meta, dict) or not isinstance(meta.get("onebit_graph"), str):
            raise DeployError(f"{source} has no onebit graph: not a .onebit file")
        if CHECKSUM_KEY in meta and meta[CHECKSUM_KEY] != _digest(meta["onebit_graph"], memoryview(raw)[8 + header_len:]):
            raise DeployError(f"{source} is damaged: its graph and weights do not match the checksum written with "
                              "them (a change on disk or in transfer); export the model again")
        tensors = load(raw)
    except DeployError:
        raise
    except (SafetensorError, ValueError, TypeError, KeyError, OverflowError, UnicodeDecodeError, RecursionError) as e:
        raise DeployError(f"{source} is not a readable .onebit file ({type(e).__name__}: {e})") from None
    try:
        graph = json.loads(meta["onebit_graph"])
    except (ValueError, RecursionError) as e:
        raise DeployError(f"{source}: the graph JSON is corrupt ({e})") from None
    try:
        validate(graph, tensors)
    except DeployError as e:
        raise DeployError(f"{source}: {e}") from None
    except (TypeError, ValueError, KeyError, IndexError, AttributeError, OverflowError) as e:
        # a safety net: validate() names every problem it knows; anything else is still a bad file
        raise DeployError(f"{source}: invalid graph ({type(e).__name__}: {e})") from None
    return graph, tensors


def pool_out(n: int, k: int, s: int, p: int, ceil: bool) -> int:
    """PyTorch's pooled size: floor or ceil mode (a last window must start inside the input)."""
    if not ceil:
        return (n + 2 * p - k) // s + 1
    out = -(-(n + 2 * p - k) // s) + 1
    if (out - 1) * s >= n + p:
        out -= 1
    return out


def _int(v, what: str, lo: int = 0, hi: int = MAX_DIM) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise DeployError(f"{what} must be an integer in [{lo}, {hi}], got {v!r}")
    return v


def _pair(v, what: str, lo: int = 0) -> tuple[int, int]:
    if not isinstance(v, list) or len(v) != 2:
        raise DeployError(f"{what} must be a list of two integers, got {v!r}")
    return _int(v[0], what, lo), _int(v[1], what, lo)


def validate(graph: dict, tensors: dict[str, np.ndarray]) -> None:
    """Check the graph's structure, its tensor references and its shapes (by shape inference)."""
    if not isinstance(graph, dict):
        raise DeployError("graph must be a JSON object")
    if graph.get("format") != FORMAT:
        raise DeployError(f"format is {graph.get('format')!r}, expected {FORMAT!r}")
    if not isinstance(graph.get("version"), int) or graph["version"] > VERSION:
        raise DeployError(f"graph version {graph.get('version')!r} is not supported (this onebit reads ≤ {VERSION})")
    inp = graph.get("input")
    if not isinstance(inp, dict) or not isinstance(inp.get("shape"), list) or not inp["shape"]:
        raise DeployError("graph.input.shape must be a non-empty list")
    shape = [_int(d, "input shape", 1) for d in inp["shape"]]
    if len(shape) not in (1, 3):
        raise DeployError(f"input shape must be [features] or [C, H, W], got {shape}")
    ops = graph.get("ops")
    if not isinstance(ops, list) or not ops:
        raise DeployError("graph.ops must be a non-empty list")
    check_preprocess(graph.get("preprocess", {}))
    # value name -> (kind, shape-without-batch); kind: float | bits; shapes NHWC-style (H, W, C) or (F,)
    values: dict[str, tuple[str, tuple[int, ...]]] = {
        "input": ("float", tuple(shape[1:] + shape[:1]) if len(shape) == 3 else tuple(shape))}
    for i, op in enumerate(ops):
        where = f"op {i}"
        if not isinstance(op, dict) or not isinstance(op.get("op"), str) or op["op"] not in OP_TENSORS:
            raise DeployError(f"{where}: unknown op {op.get('op') if isinstance(op, dict) else op!r}; "
                              f"known: {sorted(OP_TENSORS)}")
        kind = op["op"]
        where = f"op {i} ({kind})"
        src = op.get("input")
        if not isinstance(src, str) or src not in values:
            raise DeployError(f"{where}: input {src!r} is not defined before it is used")
        if not isinstance(op.get("output"), str) or op["output"] in values:
            raise DeployError(f"{where}: output name {op.get('output')!r} is missing or reused")
        refs = op.get("tensors", {})
        if not isinstance(refs, dict) or not all(isinstance(v, str) for v in refs.values()):
            raise DeployError(f"{where}: tensors must be an object of tensor names")
        for role, (dtype, rank) in OP_TENSORS[kind].items():
            name = role.rstrip("?")
            if name not in refs:
                if role.endswith("?"):
                    continue
                raise DeployError(f"{where}: missing tensor {name!r}")
            key = refs[name]
            if key not in tensors:
                raise DeployError(f"{where}: tensor {key!r} is not in the file")
            t = tensors[key]
            if str(t.dtype) not in dtype.split("|") or t.ndim != rank:
                raise DeployError(f"{where}: tensor {key!r} must be {dtype} of rank {rank}, "
                                  f"got {t.dtype} of shape {t.shape}")
            if t.dtype.kind == "f" and not np.isfinite(t).all():
                raise DeployError(f"{where}: tensor {key!r} holds NaN or Inf values")
        extra = set(refs) - {r.rstrip("?") for r in OP_TENSORS[kind]}
        if extra:
            raise DeployError(f"{where}: unexpected tensors {sorted(extra)}")
        out = _infer(op, values[src], tensors, where)
        if "residual" in op:  # y += residual (a float value of the output's shape), fused in the op
            r = op["residual"]
            if kind not in ("conv", "bconv", "dense", "bdense") or op.get("out", "float") != "float":
                raise DeployError(f"{where}: a residual needs a conv/dense op with float output")
            if not isinstance(r, str) or r not in values or values[r] != out:
                raise DeployError(f"{where}: residual {r!r} is undefined or does not match the output {out}")
        values[op["output"]] = out
    if not isinstance(graph.get("output"), str) or graph["output"] not in values:
        raise DeployError(f"graph.output {graph.get('output')!r} is not a value of the graph")
    if values[graph["output"]][0] != "float":
        raise DeployError("graph.output must be a float value")


def _vec(tensors, refs, name, n, where, dtype=None):
    if name in refs:
        t = tensors[refs[name]]
        if t.shape != (n,):
            raise DeployError(f"{where}: {name} has shape {t.shape}, expected ({n},)")


def _infer(op: dict, src: tuple[str, tuple[int, ...]], tensors, where: str) -> tuple[str, tuple[int, ...]]:
    kind, (vkind, shp) = op["op"], src
    refs = op.get("tensors", {})
    out_kind = op.get("out", "float")
    if kind in ("conv", "bconv", "dense", "bdense") and out_kind not in ("float", "bits"):
        raise DeployError(f"{where}: out must be 'float' or 'bits', got {out_kind!r}")
    if kind in ("conv", "bconv"):
        if len(shp) != 3:
            raise DeployError(f"{where}: needs an (H, W, C) input, got {shp}")
        if (kind == "bconv") != (vkind == "bits"):
            raise DeployError(f"{where}: input kind {vkind!r} does not fit")
        h, w, c = shp
        if _int(op.get("in_channels"), f"{where}: in_channels", 1) != c:
            raise DeployError(f"{where}: in_channels {op.get('in_channels')} != input channels {c}")
        kh, kw = _pair(op.get("kernel"), f"{where}: kernel", 1)
        sh, sw = _pair(op.get("stride"), f"{where}: stride", 1)
        ph, pw = _pair(op.get("padding"), f"{where}: padding")
        wt = tensors[refs["weight"]]
        cout = wt.shape[0]
        packed = wt.dtype == np.uint64
        want = (cout, kh, kw, (c + 63) // 64) if packed else (cout, kh, kw, c)
        if wt.shape != want:
            raise DeployError(f"{where}: weight shape {wt.shape}, expected {want}")
        if kind == "bconv" and op.get("pad_value") not in (0, 1, -1):
            raise DeployError(f"{where}: pad_value must be 0, 1 or -1")
        oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
        if oh < 1 or ow < 1:
            raise DeployError(f"{where}: output would be empty ({oh}×{ow})")
        _check_transform(op, tensors, refs, cout, where)
        return out_kind, (oh, ow, cout)
    if kind in ("dense", "bdense"):
        if len(shp) != 1:
            raise DeployError(f"{where}: needs a flat input, got {shp}")
        if (kind == "bdense") != (vkind == "bits"):
            raise DeployError(f"{where}: input kind {vkind!r} does not fit")
        k = _int(op.get("in_features"), f"{where}: in_features", 1)
        wt = tensors[refs["weight"]]
        words = op.get("words")
        if kind == "bdense":
            words = _int(words, f"{where}: words", 1)
            if shp[0] != words * 64 and shp[0] != k:
                raise DeployError(f"{where}: input has {shp[0]} features, expected {k}")
            if wt.shape[1] != words:
                raise DeployError(f"{where}: weight has {wt.shape[1]} words, expected {words}")
        elif wt.shape[1] != (((k + 63) // 64) if wt.dtype == np.uint64 else k) or shp[0] != k:
            raise DeployError(f"{where}: in_features {k} does not fit input {shp} / weight {wt.shape}")
        _check_transform(op, tensors, refs, wt.shape[0], where)
        return out_kind, (wt.shape[0],)
    if kind == "quantize":
        if vkind != "float":
            raise DeployError(f"{where}: quantize needs a float input")
        return "bits", shp
    if kind == "gavgpool":
        if len(shp) != 3 or vkind != "float":
            raise DeployError(f"{where}: needs a float (H, W, C) input")
        return "float", (shp[2],)
    if kind in ("maxpool", "bmaxpool", "avgpool"):
        if len(shp) != 3 or (kind == "bmaxpool") != (vkind == "bits"):
            raise DeployError(f"{where}: needs an (H, W, C) {'bits' if kind == 'bmaxpool' else 'float'} input")
        kh, kw = _pair(op.get("kernel"), f"{where}: kernel", 1)
        sh, sw = _pair(op.get("stride"), f"{where}: stride", 1)
        ph, pw = _pair(op.get("padding", [0, 0]), f"{where}: padding")
        if kind == "bmaxpool" and (ph or pw):
            raise DeployError(f"{where}: bmaxpool has no padding")
        if 2 * ph > kh or 2 * pw > kw:
            raise DeployError(f"{where}: padding must be at most half the kernel")
        if op.get("ceil_mode", False):
            oh, ow = pool_out(shp[0], kh, sh, ph, True), pool_out(shp[1], kw, sw, pw, True)
        else:
            oh, ow = (shp[0] + 2 * ph - kh) // sh + 1, (shp[1] + 2 * pw - kw) // sw + 1
        if oh < 1 or ow < 1:
            raise DeployError(f"{where}: output would be empty")
        if "min_mask" in refs and tensors[refs["min_mask"]].shape != ((shp[2] + 63) // 64,):
            raise DeployError(f"{where}: min_mask has the wrong length")
        return vkind, (oh, ow, shp[2])
    if kind == "flatten":
        if vkind == "bits":
            if len(shp) != 3:
                raise DeployError(f"{where}: flatten of bits needs (H, W, C)")
            return "bits", (shp[0] * shp[1] * ((shp[2] + 63) // 64) * 64,)
        return vkind, (int(np.prod(shp)),)
    if kind == "act":
        if vkind != "float" or op.get("fn") not in ACTS:
            raise DeployError(f"{where}: act needs a float input and fn in {ACTS}")
        return "float", shp
    if kind == "affine":
        if vkind != "float":
            raise DeployError(f"{where}: affine needs a float input")
        _vec(tensors, refs, "mult", shp[-1], where)
        _vec(tensors, refs, "bias", shp[-1], where)
        return "float", shp
    raise DeployError(f"{where}: unhandled op")  # pragma: no cover


def _check_transform(op, tensors, refs, cout, where):
    if op.get("out", "float") == "bits":
        for name in ("thresh", "flip") if op["op"].startswith("b") else ("mult", "bias"):
            if name not in refs:
                raise DeployError(f"{where}: bits output needs {name!r}")
    for name in ("mult", "bias", "thresh", "flip"):
        _vec(tensors, refs, name, cout, where)
