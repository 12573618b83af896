"""Export a trained onebit model to a ``.onebit`` file — the only place that reads a torch model.

Lowering walks the model's layers in order (a ``Sequential``, nested ones flattened) and fuses:

* ``Binary{Conv2d,Linear} → [MaxPool2d] → [BatchNorm]`` into one engine op whose output
  transform is either a float ``y = acc·mult + bias`` or — when the next layer binarizes its
  input — bits ``+1 iff acc ≥ τ`` (``≤`` for a negative BN scale): BN followed by sign folded
  into an integer threshold (methods.md §1.7), so nothing float runs between binary layers.
  A max-pool before BN becomes a max/min-pool on the bits (sign∘BN is monotone per channel).
* binary weights are stored bit-packed (1 bit each), real weights as float32.
* ``Flatten`` of an NCHW map: the following dense layer's columns are permuted to NHWC order.

Anything the engine cannot run exactly (an unknown module, a quantizer without an engine form,
a real-input layer fed from bits, a padding mode other than zeros) is a :class:`DeployError` naming
the layer — never a silent float fallback. The exporter reads a model's layers, not its
``forward``: a top-level model must be a ``Sequential`` or declare ``export_chain = True`` (its
forward applies its children in the order they were registered, as the registry's ResNets and WRNs
do; residual blocks declare ``conv_bn_pairs``/``shortcut``). As a last guard, :func:`export` runs
the graph on the engine and the model on random inputs before it writes, and refuses a graph whose
output differs (``verify=True``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..nn import BinaryConv2d, BinaryLinear, ShiftBatchNorm1d, ShiftBatchNorm2d
from ..quant import is_binary
from . import format as fmt
from .errors import DeployError

_BN = (nn.BatchNorm1d, nn.BatchNorm2d, ShiftBatchNorm1d, ShiftBatchNorm2d)
_SKIP = (nn.Dropout, nn.Identity)


def _leaves(model: nn.Module) -> list[tuple[str, nn.Module]]:
    out = []
    for name, m in model.named_children():
        if isinstance(m, nn.Sequential):
            out += [(f"{name}.{n}", c) for n, c in _leaves(m)]
        else:
            out.append((name, m))
    if not out and not isinstance(model, nn.Sequential):
        raise DeployError(f"cannot export {type(model).__name__}: the exporter lowers Sequential models")
    return out


def _check_chain(model: nn.Module) -> None:
    """The exporter lowers a model's children in order; refuse a model whose forward may do more."""
    if not isinstance(model, nn.Sequential) and not getattr(model, "export_chain", False):
        raise DeployError(
            f"cannot export {type(model).__name__}: the exporter reads layers, not forward(); build the model "
            "as nn.Sequential, or set `export_chain = True` on its class if its forward applies its children "
            "one after another in the order they were registered (nothing else: no functional ops, no adds)")


def _bn_affine(bn: nn.Module) -> tuple[np.ndarray, np.ndarray]:
    """Eval-mode BN as ``y = a·x + b`` per channel, in float64."""
    if isinstance(bn, (ShiftBatchNorm1d, ShiftBatchNorm2d)):
        a, b = bn.fold()
        return a.double().numpy(), b.double().numpy()
    if bn.running_mean is None:
        raise DeployError(f"BatchNorm without running statistics cannot be exported")
    inv = 1.0 / torch.sqrt(bn.running_var.double() + bn.eps)
    a = inv * (bn.weight.detach().double() if bn.affine else 1.0)
    b = -bn.running_mean.double() * a + (bn.bias.detach().double() if bn.affine else 0.0)
    return a.numpy(), b.numpy()


def _quantizer_form(q: nn.Module, where: str) -> str:
    form = getattr(q, "export_as", None)
    if form is None:
        raise DeployError(f"{where}: quantizer {type(q).__name__} has no exact engine form")
    return form


def _threshold(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``sign(a·acc + b)`` for integer acc as ``acc ≥ t`` (a > 0) or ``acc ≤ t`` (a < 0)."""
    from ..kernels import fold_affine_sign

    return fold_affine_sign(a, b)


def _pack(w: np.ndarray) -> np.ndarray:
    """±1 (or any real, binarized with sign) along the last axis → uint64 words, bit 1 = −1."""
    from ..kernels import pack_bits

    return pack_bits(np.ascontiguousarray(w, dtype=np.float32))


class _Lowering:
    def __init__(self, input_shape: tuple[int, ...]):
        self.ops: list[dict] = []
        self.tensors: dict[str, np.ndarray] = {}
        self.cur, self.kind = "input", "float"
        self.shape = input_shape  # PyTorch layout without batch: (C, H, W) or (F,)
        self.flat_from: tuple[int, int, int] | None = None  # (C, H, W) before a Flatten

    def add(self, op: dict, tensors: dict[str, np.ndarray] | None = None) -> None:
        i = len(self.ops)
        refs = {}
        for role, t in (tensors or {}).items():
            key = f"{i}.{role}"
            self.tensors[key] = t
            refs[role] = key
        op = {**op, "input": self.cur, "output": f"v{i}", "tensors": refs}
        self.ops.append(op)
        self.cur = op["output"]


def export(model: nn.Module, path: str | Path, example_input: torch.Tensor, *,
           preprocess: dict | None = None, verify: bool = True, overwrite: bool = False) -> dict:
    """Write ``model`` (eval mode) to ``path`` as a ``.onebit`` file; return a short report.

    An existing ``path`` is a ``FileExistsError`` unless ``overwrite=True`` (then it is replaced
    atomically: a reader sees the old file or the new one, never half of one).

    ``example_input``: one batch (N, C, H, W) or (N, F) giving the input shape.
    ``preprocess``: how raw uint8 pixels become the model's input, e.g. ``{"normalize": "pm1"}``
    (``x/127.5 - 1``); the engine accepts uint8 input only when the file records it.
    ``verify``: run the graph on the engine and the model (in float64) on random inputs of
    ``example_input``'s shape first (:func:`_verify`); a difference beyond float rounding,
    ``1e-4·max|y| + 1e-6`` on every probe, is a :class:`DeployError` and nothing is written — the
    guard against a model whose forward does something its layers do not say. The probes run a
    float64 copy of the model (its forward hooks included: a hook that changes outputs is exactly
    what the check must see; one that records calls sees three single-sample probes).
    A model inside ``torch.compile`` or a (Distributed)DataParallel wrapper is exported unwrapped.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"export() takes a torch.nn.Module to export, got {type(model).__name__}")
    if not isinstance(example_input, torch.Tensor) or example_input.dim() not in (2, 4):
        raise DeployError("example_input must be a tensor of shape (N, C, H, W) or (N, F)")
    if not overwrite and Path(path).exists():
        raise FileExistsError(f"{path} exists; export(..., overwrite=True) replaces it")
    if preprocess is not None:
        fmt.check_preprocess(preprocess)
    model = _unwrap(model)
    for name, t in model.state_dict().items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise DeployError(f"model tensor {name} holds {int((~torch.isfinite(t)).sum())} NaN/inf value(s): "
                              "nothing to export (a diverged training or a corrupt checkpoint)")
    was_training = model.training
    model.eval()
    try:
        graph, tensors = lower(model, tuple(example_input.shape[1:]))
        if preprocess:
            graph["preprocess"] = dict(preprocess)
        if verify:  # before anything is written to ``path``
            _verify(model, graph, tensors, example_input)
        size = fmt.write(path, graph, tensors, overwrite=overwrite)  # checked again as it is published
    finally:
        model.train(was_training)
    n_bits = sum(t.size * 64 for t in tensors.values() if t.dtype == np.uint64)
    return {"path": str(path), "bytes": size, "ops": len(graph["ops"]), "packed_weight_bits": n_bits}


#: random probes of :func:`_verify`, each one sample; the graph is refused only if every probe differs
VERIFY_PROBES = 3


def _verify(model: nn.Module, graph: dict, tensors: dict[str, np.ndarray], example_input: torch.Tensor) -> None:
    """Run the lowered graph on the engine and ``model`` in float64 on random normal inputs of
    ``example_input``'s shape; raise :class:`DeployError` where they differ beyond float rounding.

    Random inputs, not ``example_input`` itself: on a constant input (zeros, the usual example) many
    values sit exactly on a sign's tie, where even PyTorch fp32 and fp64 disagree. In a large net a
    generic input still brings a value within float32 rounding of a tie now and then (4 Bi-Real-18s
    at 224² with trained-like BN statistics, ``benchmarks/export_verify_ties.py``: 3 of 40 one-sample
    probes; PyTorch fp32 itself fails the same test on 4 of 40), so the graph is refused only when
    all :data:`VERIFY_PROBES` probes differ: a graph that computes another function fails every one.
    """
    import copy
    import tempfile

    from .engine import Engine

    try:
        ref_model, exact = copy.deepcopy(model).cpu().eval().double(), True
    except Exception:  # noqa: BLE001 — a model that cannot be copied (a lock, a hook): itself, in float32
        ref_model, exact = model, False
    shape = (1, *example_input.shape[1:])
    first = None
    with tempfile.TemporaryDirectory(prefix="onebit-verify-") as tmp:
        probe = Path(tmp) / "probe.onebit"
        fmt.write(probe, graph, tensors)
        engine = Engine(probe, threads=1)  # one probe sample; and no larger kernel pool than the caller asked for
        for seed in range(VERIFY_PROBES):
            x = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
            y = engine.run(x.numpy())
            ref, tol = None, 1e-4
            with torch.no_grad():
                if exact:
                    try:
                        ref = ref_model(x.double())
                    except (RuntimeError, TypeError):  # a layer without a float64 form
                        exact, ref_model = False, ref_model.float()
                if ref is None:
                    p = next(ref_model.parameters(), None)
                    ref, tol = ref_model(x.to(p.device if p is not None else "cpu")).float().cpu(), 1e-3
            if isinstance(ref, (tuple, list)):
                ref = ref[0]
            if ref.dim() == 4 and y.ndim == 4:  # the engine's maps are NHWC
                ref = ref.permute(0, 2, 3, 1)
            if tuple(ref.shape) != y.shape and [d for d in ref.shape if d != 1] == [d for d in y.shape if d != 1]:
                ref = ref.reshape(y.shape)  # e.g. a global pool's (N, C, 1, 1) where the engine gives (N, C)
            if tuple(ref.shape) != y.shape:
                raise DeployError(f"the model's output has shape {tuple(ref.shape)}, the exported graph's {y.shape}: "
                                  "its forward() does something the exporter cannot see")
            ref = ref.numpy()
            err, scale = float(np.abs(y - ref).max()), float(np.abs(ref).max())
            if err <= tol * scale + 1e-6:
                return
            first = first or (err, scale)
    fresh = _fresh_batchnorms(model)
    why = (f"its BatchNorm layers {', '.join(fresh[:3])}{' …' if len(fresh) > 3 else ''} still hold their initial "
           "statistics (mean 0, variance 1: an untrained model), which puts many binary-conv outputs exactly on a "
           "sign's tie, where float rounding decides (PyTorch fp32 and fp64 disagree there too): export a trained "
           "model" if fresh else
           "its forward() likely does something its layers do not say (a functional op, an add, another order)")
    raise DeployError(
        f"the exported graph does not reproduce the model: max |engine − PyTorch| = {first[0]:.3g} (outputs up to "
        f"{first[1]:.3g}) on each of {VERIFY_PROBES} random inputs; {why}. Nothing was written (verify=False / "
        "--no-verify writes it anyway)")


def _fresh_batchnorms(model: nn.Module) -> list[str]:
    """Names of the BatchNorm layers that never saw a batch: running mean 0, variance 1, no batch counted."""
    out = []
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats and m.running_mean is not None \
                and int(m.num_batches_tracked) == 0 and not m.running_mean.any() and bool((m.running_var == 1).all()):
            out.append(name or type(m).__name__)
    return out


def _unwrap(model: nn.Module) -> nn.Module:
    """The model inside ``torch.compile`` / ``DataParallel`` / ``DistributedDataParallel`` wrappers."""
    while True:
        if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):  # torch.compile's OptimizedModule
            model = model._orig_mod
        else:
            return model


def lower(model: nn.Module, input_shape: tuple[int, ...]) -> tuple[dict, dict[str, np.ndarray]]:
    """The graph and tensors of ``model`` (no file written)."""
    model = _unwrap(model)
    _check_chain(model)
    L = _Lowering(input_shape)
    with torch.no_grad():
        _lower_seq(L, _leaves(model))
    if L.kind != "float":
        raise DeployError("the model ends in binary values; the last layer must produce real outputs")
    shape = list(input_shape)
    graph = {"input": {"shape": shape, "layout": "NCHW" if len(shape) == 3 else "NF", "dtype": "float32"},
             "output": L.cur, "ops": L.ops, "producer": "onebit.deploy.export"}
    return graph, L.tensors


def _lower_seq(L: _Lowering, leaves: list[tuple[str, nn.Module]]) -> None:
    """Lower a chain of modules, fusing each weight layer with its pool/BN and output sign."""
    leaves = [(n, m) for n, m in leaves if not isinstance(m, _SKIP)]
    i = 0
    while i < len(leaves):
        name, m = leaves[i]
        if isinstance(m, (BinaryConv2d, BinaryLinear, nn.Conv2d, nn.Linear)):
            j = i + 1
            pool = bn = None
            if j < len(leaves) and isinstance(leaves[j][1], nn.MaxPool2d) and isinstance(m, nn.Conv2d):
                pool = leaves[j][1]
                j += 1
            if j < len(leaves) and isinstance(leaves[j][1], _BN):
                bn = leaves[j][1]
                j += 1
            consumer = next((mm for _, mm in leaves[j:] if not isinstance(mm, nn.Flatten)), None)
            _lower_layer(L, name, m, pool, bn, consumer is not None and _wants_bits(consumer))
            i = j
            continue
        if hasattr(m, "conv_bn_pairs") and hasattr(m, "shortcut"):
            _lower_block(L, name, m)
        elif isinstance(m, nn.Flatten):
            if len(L.shape) == 3:
                L.flat_from = L.shape
                c, h, w = L.shape
                L.add({"op": "flatten"})
                L.shape = (c * h * w,)
        elif isinstance(m, nn.MaxPool2d):
            _lower_pool(L, name, m, None)
        elif isinstance(m, nn.AvgPool2d):
            _lower_avgpool(L, name, m)
        elif isinstance(m, nn.AdaptiveAvgPool2d):
            if m.output_size not in (1, (1, 1)) or len(L.shape) != 3 or L.kind != "float":
                raise DeployError(f"{name}: only a global AdaptiveAvgPool2d(1) on real values is supported")
            L.add({"op": "gavgpool"})
            L.shape = (L.shape[0], 1, 1)
        elif isinstance(m, _BN):
            if L.kind != "float":
                raise DeployError(f"{name}: BatchNorm on binary values is not supported")
            a, b = _bn_affine(m)
            L.add({"op": "affine"}, {"mult": a.astype(np.float32), "bias": b.astype(np.float32)})
        elif isinstance(m, (nn.ReLU, nn.Hardtanh)) and L.kind == "float":
            if isinstance(m, nn.Hardtanh) and (m.min_val, m.max_val) != (-1.0, 1.0):
                raise DeployError(f"{name}: only Hardtanh(-1, 1) is supported")
            L.add({"op": "act", "fn": "relu" if isinstance(m, nn.ReLU) else "htanh"})
        else:
            raise DeployError(f"{name}: the engine cannot run {type(m).__name__} exactly; "
                              "no export rule for this layer")
        i += 1


def _lower_block(L: _Lowering, name: str, block: nn.Module) -> None:
    """A residual block ``chain(x) + shortcut(x)`` (Bi-Real: one binary conv; plain: two).

    The shortcut is lowered first from the block input; the chain's last conv adds it in its
    fused output transform (``y = acc·mult + bias + residual``).
    """
    if L.kind != "float" or len(L.shape) != 3:
        raise DeployError(f"{name}: a residual block needs a real-valued (C, H, W) input")
    v_in, shape_in = L.cur, L.shape
    sc = block.shortcut
    if isinstance(sc, nn.Identity):
        res = v_in
    else:
        _lower_seq(L, [(f"{name}.shortcut.{n}", c) for n, c in _leaves(sc)] if isinstance(sc, nn.Sequential)
                   else [(f"{name}.shortcut", sc)])
        if L.kind != "float":
            raise DeployError(f"{name}.shortcut must produce real values")
        res = L.cur
    res_shape = L.shape
    L.cur, L.kind, L.shape = v_in, "float", shape_in
    pairs = block.conv_bn_pairs()
    for k, (conv, bn) in enumerate(pairs):
        last = k == len(pairs) - 1
        want_bits = not last and _wants_bits(pairs[k + 1][0])
        _lower_layer(L, f"{name}.conv{k + 1}", conv, None, bn, want_bits, residual=res if last else None)
    if L.shape != res_shape:
        raise DeployError(f"{name}: the shortcut shape {res_shape} does not match the block output {L.shape}")


def _lower_avgpool(L: _Lowering, name: str, m: nn.AvgPool2d) -> None:
    k = (m.kernel_size, m.kernel_size) if isinstance(m.kernel_size, int) else tuple(m.kernel_size)
    s = m.stride if m.stride is not None else k
    s = (s, s) if isinstance(s, int) else tuple(s)
    p = (m.padding, m.padding) if isinstance(m.padding, int) else tuple(m.padding)
    if L.kind != "float" or len(L.shape) != 3:
        raise DeployError(f"{name}: AvgPool2d needs real-valued (C, H, W) input")
    if (p[0] or p[1]) and m.count_include_pad:
        raise DeployError(f"{name}: AvgPool2d with padding must use count_include_pad=False")
    if m.divisor_override:
        raise DeployError(f"{name}: AvgPool2d divisor_override is not supported")
    L.add({"op": "avgpool", "kernel": list(k), "stride": list(s), "padding": list(p), "ceil_mode": bool(m.ceil_mode)})
    from .format import pool_out

    c, h, w = L.shape
    L.shape = (c, pool_out(h, k[0], s[0], p[0], m.ceil_mode), pool_out(w, k[1], s[1], p[1], m.ceil_mode))


def _conv_padding(name: str, m: nn.Conv2d) -> tuple[int, int]:
    """The conv's symmetric zero padding; other padding modes and uneven 'same' padding are refused."""
    if m.padding_mode != "zeros":
        raise DeployError(f"{name}: padding_mode={m.padding_mode!r} is not supported by the engine (zeros only)")
    if m.padding == "valid":
        return 0, 0
    if m.padding == "same":
        kh, kw = m.kernel_size
        if tuple(m.stride) != (1, 1) or kh % 2 == 0 or kw % 2 == 0:
            raise DeployError(f"{name}: padding='same' with an even kernel or a stride pads unevenly; "
                              "give the padding as integers")
        return kh // 2, kw // 2
    return int(m.padding[0]), int(m.padding[1])


def _check_input_size(L: _Lowering, name: str, m: nn.Module, conv: bool) -> None:
    """The layer's input size against the shape the graph carries at this point (from example_input)."""
    if conv:
        if len(L.shape) != 3 or m.in_channels != L.shape[0]:
            raise DeployError(f"{name}: Conv2d with {m.in_channels} input channels gets a map of shape "
                              f"{L.shape} here (check example_input's shape)")
        return
    have = int(np.prod(L.flat_from)) if L.flat_from is not None else (L.shape[0] if len(L.shape) == 1 else None)
    if have is None:
        raise DeployError(f"{name}: Linear gets a (C, H, W) map of shape {L.shape}; put a Flatten before it")
    if m.in_features != have:
        raise DeployError(f"{name}: Linear with {m.in_features} input features gets {have} here "
                          f"(the map before it is {L.flat_from or L.shape}; check example_input's shape)")


def _wants_bits(m: nn.Module) -> bool:
    q = getattr(m, "input_quantizer", None)
    return q is not None and getattr(q, "export_as", None) == "sign"


def _lower_pool(L: _Lowering, name: str, m: nn.MaxPool2d, min_mask: np.ndarray | None) -> None:
    k = (m.kernel_size, m.kernel_size) if isinstance(m.kernel_size, int) else tuple(m.kernel_size)
    s = m.stride if m.stride is not None else k
    s = (s, s) if isinstance(s, int) else tuple(s)
    p = (m.padding, m.padding) if isinstance(m.padding, int) else tuple(m.padding)
    dil = m.dilation if isinstance(m.dilation, int) else max(m.dilation)
    if dil != 1 or (L.kind == "bits" and (p[0] or p[1] or m.ceil_mode)):
        raise DeployError(f"{name}: MaxPool2d with dilation (or padding/ceil_mode on binary values) is not supported")
    op = {"op": "bmaxpool" if L.kind == "bits" else "maxpool", "kernel": list(k), "stride": list(s)}
    if L.kind == "float":
        op.update(padding=list(p), ceil_mode=bool(m.ceil_mode))
    L.add(op, {"min_mask": min_mask} if min_mask is not None else None)
    from .format import pool_out

    c, h, w = L.shape
    L.shape = (c, pool_out(h, k[0], s[0], p[0], m.ceil_mode), pool_out(w, k[1], s[1], p[1], m.ceil_mode))


def _lower_layer(L: _Lowering, name: str, m: nn.Module, pool, bn, want_bits: bool,
                 residual: str | None = None) -> None:
    binary_in = isinstance(m, (BinaryConv2d, BinaryLinear)) and is_binary(m.input_quantizer)
    if isinstance(m, (BinaryConv2d, BinaryLinear)):
        form = _quantizer_form(m.input_quantizer, f"{name}.input_quantizer")
        wform = _quantizer_form(m.weight_quantizer, f"{name}.weight_quantizer")
        if wform not in ("sign", "identity"):
            raise DeployError(f"{name}: weight quantizer {wform!r} has no engine form")
        binary_w = wform == "sign"
        w = m.weight.detach().double()
        w_used = torch.where(w >= 0, 1.0, -1.0) if binary_w else w
        alpha = None
        if getattr(m.weight_quantizer, "scaled", False):  # e.g. magnitude-aware sign: α·sign(W)
            alpha = m.weight_quantizer.scale(m.weight.detach()).double().reshape(-1).numpy()
        if m.scale == "mean_abs":
            a2 = w.abs().flatten(1).mean(1).numpy()
            alpha = a2 if alpha is None else alpha * a2
        elif m.scale not in (None, "none"):
            raise DeployError(f"{name}: weight scale {m.scale!r} has no engine form")
        if alpha is not None and (alpha < 0).any():
            raise DeployError(f"{name}: negative weight scales are not supported")
    else:  # plain torch layers: real weights, real input
        form, binary_w, w_used, alpha = "identity", False, m.weight.detach().double(), None
    # activation on the input
    if form == "sign":
        if L.kind == "float":
            L.add({"op": "quantize"})
            L.kind = "bits"
    elif L.kind == "bits":
        raise DeployError(f"{name}: a real-input layer cannot consume binary values")
    elif form in ("htanh", "relu"):
        L.add({"op": "act", "fn": form})
    elif form != "identity":
        raise DeployError(f"{name}: input quantizer {form!r} has no engine form")

    cout = w_used.shape[0]
    # output transform: y = a * acc + b   (weight scale, layer bias, BN folded; float64)
    a = np.ones(cout) if alpha is None else alpha.copy()
    b = m.bias.detach().double().numpy().copy() if m.bias is not None else np.zeros(cout)
    pool_before_affine = pool is not None and not want_bits
    if bn is not None and not pool_before_affine:
        ba, bb = _bn_affine(bn)
        a, b = a * ba, b * ba + bb
    conv = isinstance(m, nn.Conv2d)
    bits_in = L.kind == "bits"
    tensors: dict[str, np.ndarray] = {}
    _check_input_size(L, name, m, conv)
    if conv:
        if m.groups != 1 or tuple(m.dilation) != (1, 1):
            raise DeployError(f"{name}: grouped or dilated convs are not supported by the engine")
        padding = _conv_padding(name, m)
        wt = w_used.permute(0, 2, 3, 1).numpy()  # (Cout, kh, kw, Cin)
        op = {"op": "bconv" if bits_in else "conv", "in_channels": int(wt.shape[3]),
              "kernel": list(m.kernel_size), "stride": list(m.stride), "padding": list(padding)}
        if bits_in:
            op["pad_value"] = int(getattr(m, "pad_value", 0))
    else:
        wt = w_used.numpy()
        if L.flat_from is not None:  # PyTorch flattened (C, H, W); the engine holds (H, W, C)
            c, h, w_ = L.flat_from
            wt = wt.reshape(cout, c, h, w_).transpose(0, 2, 3, 1)
            if not bits_in:  # real input: one flat row; bits: packed per pixel (ceil(C/64) words each)
                wt = wt.reshape(cout, -1)
        op = {"op": "bdense" if bits_in else "dense", "in_features": int(np.prod(wt.shape[1:]))}
    if binary_w:
        packed = _pack(wt)  # packs along the last axis
        tensors["weight"] = packed.reshape(cout, -1) if not conv else packed
    else:
        tensors["weight"] = np.ascontiguousarray(wt.reshape(cout, -1) if not conv else wt, dtype=np.float32)
    if op["op"] == "bdense":
        op["words"] = int(tensors["weight"].shape[1])
    if bits_in and not binary_w:
        raise DeployError(f"{name}: binary input with real weights has no engine form")
    # output
    min_mask = None
    if want_bits:
        if bits_in:
            thresh, flip = _threshold(a, b)
            tensors["thresh"], tensors["flip"] = thresh, flip
        else:
            tensors["mult"], tensors["bias"] = a.astype(np.float32), b.astype(np.float32)
            op["exact"] = "float64"  # sign(a·acc + b) decided in float64
        op["out"] = "bits"
        if pool is not None:
            neg = a < 0
            if neg.any():
                min_mask = _pack(np.where(neg, -1.0, 1.0)).reshape(-1)
    else:
        tensors["mult"], tensors["bias"] = a.astype(np.float32), b.astype(np.float32)
        op["out"] = "float"
    if residual is not None:
        if want_bits or pool is not None:
            raise DeployError(f"{name}: a residual add must follow a float-output layer without pooling")
        op["residual"] = residual
    L.add(op, tensors)
    L.kind = "bits" if want_bits else "float"
    if conv:
        c_, h, w_ = L.shape
        kh, kw = m.kernel_size
        sh, sw = m.stride
        ph, pw = padding
        L.shape = (cout, (h + 2 * ph - kh) // sh + 1, (w_ + 2 * pw - kw) // sw + 1)
    else:
        L.shape = (cout,)
        L.flat_from = None
    if pool is not None:
        _lower_pool(L, name + ".pool", pool, min_mask)
        if pool_before_affine and bn is not None:
            ba, bb = _bn_affine(bn)
            L.add({"op": "affine"}, {"mult": ba.astype(np.float32), "bias": bb.astype(np.float32)})
