"""BWNH — Binary Weight Networks via Hashing (Hu, Wang, Cheng, AAAI 2018; methods.md §3).

A trained full-precision network is turned into a binary-*weight* network layer by layer: for each
conv/FC layer with inputs ``X`` (d×M, one column per sampled input patch, ``d = C_in·k_h·k_w``) and
real weights ``W`` (d×c, one column per output filter) it finds codes ``B ∈ {±1}^{d×c}`` and
per-filter scales ``A = diag(α)`` minimising the *output* error (§3.2)

    ℒ(A, B) = ‖XᵀW − XᵀBA‖²_F = tr(WᵀQW) − 2·tr(A BᵀP) + tr(A BᵀQBA),   Q = XXᵀ, P = QW.

Solver (§3.3, derived there [D]): alternate

* the **A-step** ``α_i = b_iᵀP_i / b_iᵀQb_i`` (exact least squares per filter), and
* the **B-step**: discrete cyclic coordinate descent over the bit rows — row j of B (bit j of every
  filter at once) is set to ``sign(A p − A²(B'ᵀq'))``, i.e. ``B_ji ← sign(α_i P_ji − α_i² Σ_{k≠j}
  Q_jk B_ki)``, which is the exact minimiser of ℒ over that row; ties keep the old bit, so every flip
  lowers ℒ strictly and the loop terminates. ``R = QB`` is kept up to date (``Σ_{k≠j} Q_jk B_ki =
  R_ji − Q_jj B_ji``; a change Δ of row j adds ``Q_{:,j} Δᵀ`` to R, only for the changed columns).

``Q``, ``P``, ``R`` and ℒ are float64 (pitfall 5). The solver works on ``(Q, P, ‖target‖²)``, so it
also solves the *compensating* variant ``‖T − X̃ᵀBA‖²`` (inputs X̃ of the partly hashed network,
target outputs T of the float network): ``P = X̃T``, constant ``‖T‖²``.

Whole network (§3.4): :func:`hash_network` visits the binary-weight layers in forward order,
samples their inputs (:func:`sample_inputs`: the layer's own input, im2col with its padding and
stride), solves, and writes ``W_latent := B·diag(α)`` into the layer, whose forward
``mean|W|·sign(W)`` (``xnor_weight``) then *is* ``B·A``. BN, biases and real layers are unchanged.
Fine-tuning (§3.4 step 3) is a normal training run (:func:`bwnh_pipeline`, recipes below).

Choices where the paper is not pinned down (methods.md §3.4 [?]) — all options:

* ``source`` (where X comes from): ``"binarized"`` (default — the partly hashed network, so every
  layer is solved on the inputs it will see) or ``"float"`` (the original network).
  ``target``: ``"float"`` (default — match the *float network's* pre-BN outputs ``X_fᵀW``, so later
  layers compensate earlier errors and the float BN statistics stay valid; the least-squares
  form of "the partly binarised network lets later layers compensate") or ``"own"`` (match
  ``X̃ᵀW``, the paper's objective on the inputs used). With ``source="float"`` both agree.
* ``samples`` M = 16384 columns per layer (≥ 3.5× d for every VGG-9 conv, 2× d for its 8192-wide
  first FC; the spec asks M ≥ d so that Q is well conditioned and the codes do not overfit the
  samples); conv patches are spread over ≈256 images (``per_image = ceil(M/256)``).
* ``iters`` = 10 outer iterations, ``dcc_sweeps`` = 2 sweeps per B-step, ``tol`` = 1e-5 relative
  decrease — on correlated synthetic data (d = 2304, c = 256) most of the gain comes in the first
  2–3 iterations and later ones flip < 1 % of the bits, for < 0.5 % more reduction of ℒ.
* init ``B = sign(W)``; ``history[0]`` is ℒ of the BWN solution (α = mean|w_i|), the baseline.
* α ≥ 0 is enforced at the end by flipping a filter's code with its scale (same ℒ): the layer's
  ``mean|W|·sign(W)`` and the exporter need non-negative scales.
* first / last layers: whatever the model says (``vgg9-bwnh`` keeps them real, XNOR convention).
* fine-tuning: protocol ``"a"`` keeps the codes fixed (``freeze_binary``) and trains BN (which
  absorbs α), biases and the real first/last layers; protocol ``"b"`` (default) trains the latent
  weights from ``B·A`` with the BWN straight-through estimator. Hyper-parameters are ours [?];
  the run uses the float run's bf16 / channels-last settings unless overridden. Measured at full
  width on CIFAR-10 (docs/benchmarks.md, "BWNH at full width"): hashed 90.06 % before fine-tuning,
  90.63 % after 10 epochs of protocol (b) — and a BWN fine-tuned from the same float weights with
  the same recipe reached 91.20 %, so the head start does not survive fine-tuning at that budget.
"""

from __future__ import annotations

import logging
import math
import numbers
import time
from pathlib import Path
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .. import quant
from ..nn import BinaryConv2d, BinaryLinear
from .recipe import Recipe, register_recipe

log = logging.getLogger("onebit.bwnh")

SOURCES = ("binarized", "float")
TARGETS = ("float", "own")
DEFAULTS = dict(samples=16384, iters=10, dcc_sweeps=2, tol=1e-5, source="binarized", target="float")

# ---------------------------------------------------------------------------------------------
# the layer problem: objective, A-step, B-step (§3.3)


def gram(X: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """``Q = X Xᵀ`` in float64, accumulated over column chunks (X is d×M)."""
    d, m = X.shape
    Q = torch.zeros(d, d, dtype=torch.float64, device=X.device)
    for s in range(0, m, chunk):
        xc = X[:, s:s + chunk].to(torch.float64)
        Q.addmm_(xc, xc.T)
    return Q


def objective(P: torch.Tensor, B: torch.Tensor, alpha: torch.Tensor, R: torch.Tensor, const: float) -> float:
    """Trace form ``ℒ = const − 2·Σ_i α_i b_iᵀP_i + Σ_i α_i² b_iᵀR_i`` with ``R = QB`` (float64)."""
    bp = (B * P).sum(0)
    br = (B * R).sum(0)
    return float(const - 2.0 * (alpha * bp).sum() + (alpha * alpha * br).sum())


def objective_direct(X: torch.Tensor, W: torch.Tensor, B: torch.Tensor, alpha: torch.Tensor,
                     target: torch.Tensor | None = None) -> float:
    """``‖T − XᵀBA‖²_F`` computed directly (``T = XᵀW`` unless ``target`` is given), float64."""
    X = X.to(torch.float64)
    T = X.T @ W.to(torch.float64) if target is None else target.to(torch.float64)
    return float(((T - X.T @ (B.to(torch.float64) * alpha.to(torch.float64))) ** 2).sum())


def a_step(P: torch.Tensor, B: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    """Closed-form scales ``α_i = b_iᵀP_i / b_iᵀQb_i`` (0 where ``Xᵀb_i = 0``)."""
    num = (B * P).sum(0)
    den = (B * R).sum(0)
    ok = den > 0
    return torch.where(ok, num / torch.where(ok, den, torch.ones_like(den)), torch.zeros_like(num))


def dcc_row(Q: torch.Tensor, P: torch.Tensor, B: torch.Tensor, R: torch.Tensor, alpha: torch.Tensor,
            j: int) -> int:
    """Exact minimisation of ℒ over bit row ``j`` of B (all filters at once); updates B and R in place.

    ``B_ji ← sign(α_i P_ji − α_i² Σ_{k≠j} Q_jk B_ki)`` (valid for any sign of α); a zero argument
    keeps the bit. Returns the number of bits flipped (each flip lowers ℒ strictly).
    """
    old = B[j]
    g = alpha * P[j] - alpha * alpha * (R[j] - Q[j, j] * old)
    new = torch.where(g > 0, 1.0, torch.where(g < 0, -1.0, old)).to(B.dtype)
    idx = (new != old).nonzero().flatten()
    if idx.numel() == 0:
        return 0
    delta = new[idx] - old[idx]
    R[:, idx] += Q[:, j:j + 1] * delta
    B[j, idx] = new[idx]
    return int(idx.numel())


def dcc_sweep(Q: torch.Tensor, P: torch.Tensor, B: torch.Tensor, R: torch.Tensor, alpha: torch.Tensor) -> int:
    """One sweep j = 0..d−1 of :func:`dcc_row`; returns the bits flipped."""
    return sum(dcc_row(Q, P, B, R, alpha, j) for j in range(B.shape[0]))


def solve_gram(Q: torch.Tensor, P: torch.Tensor, const: float, B0: torch.Tensor, *,
               iters: int = DEFAULTS["iters"], dcc_sweeps: int = DEFAULTS["dcc_sweeps"],
               tol: float = DEFAULTS["tol"], alpha0: torch.Tensor | None = None,
               progress: bool = False, desc: str = "bwnh") -> tuple[torch.Tensor, torch.Tensor, list[float], dict]:
    """Alternating minimisation of ``const − 2 tr(A BᵀP) + tr(A BᵀQBA)`` from codes ``B0``.

    ``history[0]`` is ℒ at ``(B0, alpha0)`` (``alpha0`` default: the A-step); then one entry after
    every A-step and every B-step, so it is non-increasing. Stops when a B-step flips no bit, when
    an outer iteration lowers ℒ by less than ``tol``·ℒ, or after ``iters`` outer iterations; it
    always ends with an A-step, so the returned α is optimal for the returned B. Finally filters
    with α < 0 get ``(−b_i, −α_i)`` (same ℒ). Returns ``(B, alpha, history, info)``.
    """
    if iters < 0 or dcc_sweeps < 1:
        raise ValueError(f"iters must be >= 0 and dcc_sweeps >= 1, got {iters}, {dcc_sweeps}")
    Q = Q.to(torch.float64)
    P = P.to(torch.float64)
    B = B0.to(device=Q.device, dtype=torch.float64).clone()
    R = Q @ B
    alpha = a_step(P, B, R) if alpha0 is None else alpha0.to(device=Q.device, dtype=torch.float64).clone()
    history = [objective(P, B, alpha, R, const)]
    if alpha0 is not None:
        alpha = a_step(P, B, R)
        history.append(objective(P, B, alpha, R, const))
    flips_per_iter: list[int] = []
    stop = "iters"
    bar = tqdm(range(iters), desc=desc, leave=False, disable=not progress, dynamic_ncols=True)
    for _ in bar:
        start = history[-1]
        R = Q @ B  # refresh: no drift from the rank-1 updates
        flips = 0
        for _ in range(dcc_sweeps):
            f = dcc_sweep(Q, P, B, R, alpha)
            flips += f
            if f == 0:
                break
        flips_per_iter.append(flips)
        history.append(objective(P, B, alpha, R, const))
        if flips == 0:
            stop = "converged"
            break
        alpha = a_step(P, B, R)
        history.append(objective(P, B, alpha, R, const))
        bar.set_postfix(obj=f"{history[-1]:.4g}", flips=flips)
        if start - history[-1] <= tol * abs(start):
            stop = "tol"
            break
    neg = alpha < 0
    if neg.any():
        B[:, neg] *= -1
        alpha = alpha.abs()
    info = {"iterations": len(flips_per_iter), "flips": flips_per_iter, "stop": stop}
    return B, alpha, history, info


def solve_layer(X: torch.Tensor, W: torch.Tensor, *, iters: int = DEFAULTS["iters"],
                dcc_sweeps: int = DEFAULTS["dcc_sweeps"], tol: float = DEFAULTS["tol"],
                init: str | torch.Tensor = "sign", target: torch.Tensor | None = None,
                progress: bool = False) -> tuple[torch.Tensor, torch.Tensor, list[float]]:
    """Hash one layer: ``min_{B ∈ {±1}^{d×c}, A diagonal} ‖T − XᵀBA‖²_F`` with ``T = XᵀW`` (§3.2–3.3).

    Args:
        X: inputs, d×M (one column per sampled input vector / im2col patch).
        W: real weights, d×c (a conv weight ``(C_out, C_in, kh, kw)`` is ``w.reshape(C_out, -1).T``,
            see :func:`layer_matrix`).
        init: ``"sign"`` (``B = sign(W)``; ``history[0]`` is then the BWN objective with
            α = mean|w_i|), ``"random"`` (random codes, seeded by torch's RNG) or a ±1 tensor.
        target: M×c outputs to match instead of ``XᵀW`` (the compensating variant).

    Returns ``(B, alpha, history)``: B (d×c, ±1) and alpha (c,) in float64 — the layer's weights are
    ``B * alpha`` — and the objective after every step (non-increasing).
    """
    if X.dim() != 2 or W.dim() != 2 or X.shape[0] != W.shape[0]:
        raise ValueError(f"X must be d×M and W d×c with the same d, got {tuple(X.shape)} and {tuple(W.shape)}")
    Q = gram(X)
    Wd = W.to(device=Q.device, dtype=torch.float64)
    if target is None:
        P = Q @ Wd
        const = float((Wd * P).sum())
    else:
        if target.shape != (X.shape[1], W.shape[1]):
            raise ValueError(f"target must be M×c = {(X.shape[1], W.shape[1])}, got {tuple(target.shape)}")
        T = target.to(device=Q.device, dtype=torch.float64)
        P = _xt(X, T)
        const = float((T * T).sum())
    B0, alpha0 = init_codes(Wd, init)
    B, alpha, history, _ = solve_gram(Q, P, const, B0, iters=iters, dcc_sweeps=dcc_sweeps, tol=tol,
                                      alpha0=alpha0, progress=progress)
    return B, alpha, history


def init_codes(W: torch.Tensor, init: str | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Initial codes (and, for ``"sign"``, the BWN scales ``mean|w_i|``)."""
    W = W.to(torch.float64)
    if isinstance(init, torch.Tensor):
        B0 = init.to(device=W.device, dtype=torch.float64)
        if B0.shape != W.shape or not bool(((B0 == 1) | (B0 == -1)).all()):
            raise ValueError("an init tensor must hold ±1 and have W's shape")
        return B0, None
    if init == "sign":
        return quant.sign(W), W.abs().mean(0)
    if init == "random":
        return quant.sign(torch.randn(W.shape, dtype=torch.float64).to(W.device)), None
    raise ValueError(f"unknown init {init!r}; use 'sign', 'random' or a ±1 tensor")


def _xt(X: torch.Tensor, T: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """``X T`` (d×c) in float64 over column chunks of X (d×M) and row chunks of T (M×c)."""
    out = torch.zeros(X.shape[0], T.shape[1], dtype=torch.float64, device=T.device)
    for s in range(0, X.shape[1], chunk):
        out.addmm_(X[:, s:s + chunk].to(device=T.device, dtype=torch.float64), T[s:s + chunk])
    return out


# ---------------------------------------------------------------------------------------------
# layers: weights as matrices, sampled inputs (pitfall 2)


def layer_matrix(layer: nn.Module) -> torch.Tensor:
    """The layer's real weight as d×c (``d = C_in·k_h·k_w`` in im2col order, c = out channels)."""
    return layer.weight.detach().reshape(layer.weight.shape[0], -1).T


def _columns(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What the layer multiplies its weights with, as (batch, d, positions)."""
    if hasattr(layer, "quantized_input"):
        x = layer.quantized_input(x)
    if isinstance(layer, nn.Conv2d):
        if layer.groups != 1:
            raise ValueError(f"grouped convs are not supported by BWNH sampling (groups={layer.groups})")
        if layer.padding_mode != "zeros" or isinstance(layer.padding, str):
            raise ValueError("BWNH sampling needs an explicit zero padding")
        padding = layer.padding
        pad_value = float(getattr(layer, "pad_value", 0.0))
        if pad_value != 0 and getattr(layer, "binary_input", False) and any(padding):
            ph, pw = padding
            x = F.pad(x, (pw, pw, ph, ph), value=pad_value)
            padding = (0, 0)
        return F.unfold(x, layer.kernel_size, dilation=layer.dilation, padding=padding, stride=layer.stride)
    if isinstance(layer, nn.Linear):
        return x.reshape(-1, layer.in_features).unsqueeze(-1)
    raise TypeError(f"BWNH handles Conv2d/Linear layers, not {type(layer).__name__}")


class _Stop(Exception):
    """Raised by the capture hook: the rest of the forward pass is not needed."""


def _capture(model: nn.Module, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    box: dict[str, torch.Tensor] = {}

    def hook(mod, inputs):
        box["x"] = inputs[0].detach()
        raise _Stop

    h = layer.register_forward_pre_hook(hook)
    try:
        model(x)
    except _Stop:
        pass
    finally:
        h.remove()
    if "x" not in box:
        raise ValueError("the layer was not called during the forward pass")
    return box["x"]


def _resolve(model: nn.Module, layer: nn.Module | str) -> nn.Module:
    if isinstance(layer, str):
        mods = dict(model.named_modules())
        if layer not in mods:
            raise KeyError(f"no layer named {layer!r} in the model")
        return mods[layer]
    return layer


def _device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def sample_paired(pairs: Sequence[tuple[nn.Module, nn.Module | str]], loader: Iterable, n: int, *,
                  per_image: int | None = None, seed: int = 0) -> list[torch.Tensor]:
    """Inputs of several (model, layer) pairs at the *same* images and patch positions.

    Every model runs in eval mode under ``no_grad`` and only up to its layer (a hook stops the
    forward pass). Returns one d×n float32 tensor per pair (fewer columns if the loader runs out).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    pairs = [(m, _resolve(m, l)) for m, l in pairs]
    modes = [m.training for m, _ in pairs]
    for m, _ in pairs:
        m.eval()
    g = torch.Generator().manual_seed(seed)
    chunks: list[list[torch.Tensor]] = [[] for _ in pairs]
    have = 0
    try:
        with torch.no_grad():
            for batch in loader:
                x = batch[0] if isinstance(batch, (tuple, list)) else batch
                cols = [_columns(l, _capture(m, l, x.to(_device(m)))) for m, l in pairs]
                b, d, L = cols[0].shape
                k = L if L == 1 else min(L, per_image or math.ceil(n / 256))
                if k == L:  # every position, in order
                    pos = torch.arange(L).expand(b, L)
                else:
                    pos = torch.rand(b, L, generator=g).argsort(1)[:, :k]
                for i, c in enumerate(cols):
                    idx = pos.to(c.device).unsqueeze(1).expand(b, c.shape[1], k)
                    sel = c.gather(2, idx).permute(1, 0, 2).reshape(c.shape[1], b * k)
                    chunks[i].append(sel[:, : n - have].float())
                have += min(b * k, n - have)
                if have >= n:
                    break
    finally:
        for (m, _), mode in zip(pairs, modes):
            m.train(mode)
    if have == 0:
        raise ValueError("the loader gave no data")
    if have < n:
        log.warning("only %d of the %d requested input samples were available", have, n)
    return [torch.cat(c, 1) for c in chunks]


def sample_inputs(model: nn.Module, layer: nn.Module | str, loader: Iterable, n: int, *,
                  per_image: int | None = None, seed: int = 0) -> torch.Tensor:
    """The inputs of ``layer`` exactly as it sees them, d×n (pitfall 2).

    A forward pre-hook captures the layer's input (after the layer's own input quantizer); a conv's
    input is unfolded with its kernel, padding (zeros, or its ``pad_value`` for binarized inputs),
    stride and dilation (``F.unfold``: rows in the weight's ``(C_in, kh, kw)`` order), and
    ``per_image`` random patch positions are kept per image (default ``ceil(n/256)``, at most all);
    an FC layer gives one column per image. The model runs in eval mode on batches of ``loader``
    (``(x, y)`` pairs or bare tensors) until n columns are collected.
    """
    return sample_paired([(model, layer)], loader, n, per_image=per_image, seed=seed)[0]


# ---------------------------------------------------------------------------------------------
# whole network (§3.4)


def weight_layers_in_order(model: nn.Module, example: torch.Tensor) -> list[tuple[str, nn.Module]]:
    """(name, layer) of every conv/FC layer in the order the forward pass calls them."""
    order: list[str] = []
    hooks = []
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            hooks.append(m.register_forward_pre_hook(lambda mod, inp, name=name: order.append(name)))
    mode = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(example.to(_device(model)))
    finally:
        for h in hooks:
            h.remove()
        model.train(mode)
    mods = dict(model.named_modules())
    seen: set[str] = set()
    return [(n, mods[n]) for n in order if not (n in seen or seen.add(n))]


def represents_scaled_codes(layer: nn.Module) -> bool:
    """True if the layer's forward weight is ``mean|W_o|·sign(W_o)`` per output channel.

    Then latent weights ``B·diag(α)`` (α ≥ 0) make it compute exactly ``B·A``.
    """
    if not isinstance(layer, (BinaryConv2d, BinaryLinear)):
        return False
    q = layer.weight_quantizer
    if getattr(q, "scaled", False):
        return getattr(q, "per", "out_channel") == "out_channel" and layer.scale in (None, "none")
    return getattr(q, "export_as", None) == "sign" and quant.is_binary(q) and layer.scale == "mean_abs"


def write_codes(layer: nn.Module, B: torch.Tensor, alpha: torch.Tensor) -> None:
    """Set the latent weights to ``B·diag(α)`` so that the layer's forward weight equals ``B·A``."""
    if not represents_scaled_codes(layer):
        raise ValueError(f"{type(layer).__name__} with weight quantizer {layer.weight_quantizer!r} and "
                         f"scale={getattr(layer, 'scale', None)!r} cannot compute B·A; use a per-output-channel "
                         "mean-abs scaled sign (e.g. 'xnor_weight', as vgg9-bwnh)")
    if (alpha < 0).any():
        raise ValueError("scales must be non-negative (flip the filter's code instead)")
    w = (B.to(torch.float64) * alpha.to(torch.float64)).T.reshape(layer.weight.shape)
    with torch.no_grad():
        layer.weight.copy_(w.to(layer.weight.dtype))
    if getattr(layer, "clip_weights", False) and float(alpha.max()) > 1:
        log.warning("a layer clips its latent weights to [-1, 1] but has scales up to %.3g: the first "
                    "optimizer step will change them", float(alpha.max()))


def hash_network(float_model: nn.Module, bwnh_model: nn.Module, loader: Iterable, *,
                 samples: int = DEFAULTS["samples"], source: str = DEFAULTS["source"],
                 target: str = DEFAULTS["target"], iters: int = DEFAULTS["iters"],
                 dcc_sweeps: int = DEFAULTS["dcc_sweeps"], tol: float = DEFAULTS["tol"],
                 per_image: int | None = None, layers: Sequence[str] | None = None,
                 copy_weights: bool = True, seed: int = 0, progress: bool = True) -> dict:
    """Hash every binary-weight layer of ``bwnh_model`` from the trained ``float_model`` (§3.4).

    Args:
        float_model: the trained full-precision network (not modified).
        bwnh_model: the same architecture with binary-weight layers computing ``mean|W|·sign(W)``
            per output channel (e.g. ``vgg9-bwnh``); modified in place.
        loader: training batches (``(x, y)`` or ``x``) to sample inputs from; iterated once per
            layer, so it must be re-iterable (a loader or a list, not a generator).
        samples: input columns per layer (M).
        source: ``"binarized"`` (inputs from ``bwnh_model`` with the earlier layers already hashed)
            or ``"float"`` (inputs from ``float_model``).
        target: ``"float"`` (match the float network's layer outputs; compensates earlier layers
            when ``source="binarized"``) or ``"own"`` (match ``XᵀW`` on the sampled inputs).
        iters, dcc_sweeps, tol: solver settings (:func:`solve_gram`).
        layers: names of the layers to hash (default: every layer with a binary weight quantizer).
        copy_weights: first copy every tensor of ``float_model`` into ``bwnh_model`` (names and
            shapes must match: :func:`onebit.methods.bireal.init_from_real`).

    Returns a report: settings and, per layer (forward order), d, c, M, ``objective_bwn`` (ℒ of
    α·sign(W), α = mean|w|), ``objective`` (after hashing), both relative to ``‖T‖²``, the
    iterations, flips and seconds.
    """
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; use one of {SOURCES}")
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; use one of {TARGETS}")
    if copy_weights:
        from .bireal import init_from_real

        init_from_real(bwnh_model, float_model)
    float_layers = dict(float_model.named_modules())
    first = next(iter(loader), None)
    if first is None:
        raise ValueError("the loader gave no data")
    example = (first[0] if isinstance(first, (tuple, list)) else first)[:2]
    order = weight_layers_in_order(bwnh_model, example)
    if layers is None:
        todo = [(n, m) for n, m in order if isinstance(m, (BinaryConv2d, BinaryLinear))
                and quant.is_binary(m.weight_quantizer)]
    else:
        known = dict(order)
        missing = [n for n in layers if n not in known]
        if missing:
            raise KeyError(f"no conv/FC layers named {missing} in the model")
        todo = [(n, m) for n, m in order if n in set(layers)]
    for name, m in todo:
        if not represents_scaled_codes(m):
            raise ValueError(f"layer {name!r} cannot hold hashed weights: " + _why(m))
        if name not in float_layers:
            raise KeyError(f"the float model has no layer {name!r}")
    report = {"source": source, "target": target, "samples": samples, "iters": iters, "dcc_sweeps": dcc_sweeps,
              "tol": tol, "per_image": per_image, "layers": []}
    bar = tqdm(todo, desc="BWNH layers", disable=not progress, dynamic_ncols=True)
    for name, layer in bar:
        bar.set_postfix(layer=name)
        t0 = time.time()
        fl = float_layers[name]
        W = layer_matrix(fl).to(torch.float64)
        solver_device = W.device
        if source == "float":
            (X,) = sample_paired([(float_model, fl)], loader, samples, per_image=per_image, seed=seed)
            Xf = X
        elif target == "float":
            X, Xf = sample_paired([(bwnh_model, layer), (float_model, fl)], loader, samples,
                                  per_image=per_image, seed=seed)
        else:
            (X,) = sample_paired([(bwnh_model, layer)], loader, samples, per_image=per_image, seed=seed)
            Xf = X
        X = X.to(solver_device)
        Q = gram(X)
        if Xf is X:
            P = Q @ W
            const = float((W * P).sum())
        else:
            T = Xf.to(device=solver_device, dtype=torch.float64).T @ W
            P = _xt(X, T)
            const = float((T * T).sum())
        B0, alpha0 = init_codes(W, "sign")
        B, alpha, history, info = solve_gram(Q, P, const, B0, iters=iters, dcc_sweeps=dcc_sweeps, tol=tol,
                                             alpha0=alpha0, progress=progress, desc=f"hash {name}")
        write_codes(layer, B, alpha)
        scale = const if const > 0 else 1.0
        row = {"name": name, "kind": "conv" if isinstance(layer, nn.Conv2d) else "fc",
               "d": int(W.shape[0]), "c": int(W.shape[1]), "samples": int(X.shape[1]),
               "objective_bwn": history[0], "objective": history[-1],
               "relative_bwn": history[0] / scale, "relative": history[-1] / scale,
               "iterations": info["iterations"], "flips": info["flips"], "stop": info["stop"],
               "bits_changed": int((B != B0).sum()), "alpha_mean": float(alpha.mean()),
               "seconds": time.time() - t0}
        report["layers"].append(row)
        log.info("%s: %s d=%d c=%d M=%d  relative error BWN %.4f → BWNH %.4f  (%d iterations, %d bits "
                 "changed, %.1fs)", name, row["kind"], row["d"], row["c"], row["samples"], row["relative_bwn"],
                 row["relative"], row["iterations"], row["bits_changed"], row["seconds"])
    return report


def _why(m: nn.Module) -> str:
    return (f"{type(m).__name__} with weight quantizer {getattr(m, 'weight_quantizer', None)!r} and "
            f"scale={getattr(m, 'scale', None)!r} does not compute mean|W|·sign(W) per output channel")


# ---------------------------------------------------------------------------------------------
# model twins, evaluation, recipes and the pipeline

#: float model → (BWNH model, BWN baseline model) of the same architecture
TWINS = {"vgg9-float": ("vgg9-bwnh", "vgg9-bwn"),
         "resnet18-cifar-float": ("resnet18-cifar-bwn", "resnet18-cifar-bwn"),
         "resnet18-float": ("resnet18-bwn", "resnet18-bwn")}
#: model options that say how weights are quantized (taken from the twin's registry entry)
_QUANT_KEYS = ("weight", "weight_kwargs", "clip_weights", "binary_first", "binary_last", "freeze_binary")


def twin_config(float_model: nn.Module, name: str) -> dict:
    """Model options of ``name`` with ``float_model``'s architecture (width, classes, …)."""
    from .. import models

    cfg = dict(getattr(float_model, "onebit_config", None) or {})
    cfg.pop("name", None)
    defaults = models.entry(name).defaults
    for k in _QUANT_KEYS:
        cfg.pop(k, None)
        if k in defaults:
            cfg[k] = defaults[k]
    return cfg


def binary_twin(float_model: nn.Module, name: str) -> nn.Module:
    """``name`` built with ``float_model``'s architecture and holding a copy of its weights.

    For a BWN model this *is* the BWN baseline made from the float weights (forward α·sign(W)).
    """
    from .. import models
    from .bireal import init_from_real

    cfg = twin_config(float_model, name)
    try:
        model = models.create(name, **cfg)
    except TypeError as e:
        fname = (getattr(float_model, "onebit_config", None) or {}).get("name", type(float_model).__name__)
        raise ValueError(f"{name} is not a binary-weight twin of {fname}: it cannot be built with {fname}'s "
                         f"architecture ({e})") from None
    init_from_real(model, float_model)
    return model.to(_device(float_model))


def accuracy(model: nn.Module, loader: Iterable, device: torch.device | str | None = None) -> float:
    """Top-1 accuracy of ``model`` (eval mode) over ``loader``."""
    device = torch.device(device) if device is not None else _device(model)
    mode = model.training
    model.eval()
    correct = total = 0
    try:
        with torch.no_grad():
            for x, y in loader:
                out = model(x.to(device))
                correct += int((out.argmax(1).cpu() == y).sum())
                total += len(y)
    finally:
        model.train(mode)
    return correct / max(total, 1)


def _ft(protocol: str, **kw) -> Recipe:
    return Recipe(model="vgg9-bwnh", data="cifar10", loss="ce", optimizer="adam", lr_schedule="cosine",
                  lr_final=0.0, batch_size=128, val_size=5000, augment=True, normalize="meanstd",
                  weight_decay=0.0, **kw)


_NEEDS_INIT = " Needs the hashed weights: run `onebit bwnh CHECKPOINT` (bwnh_pipeline), not `onebit train`."

RECIPES: dict[str, Recipe] = {
    "vgg9-float": Recipe(
        model="vgg9-float", data="cifar10", loss="ce", optimizer="sgd", lr=0.05, momentum=0.9,
        weight_decay=5e-4, lr_schedule="cosine", lr_final=0.0, epochs=100, batch_size=128, val_size=5000,
        augment=True, normalize="meanstd",
        description="VGG-9 float pre-training for BWNH (our recipe; the paper's is not known): SGD 0.05, "
        "wd 5e-4, 100 epochs cosine, crop+flip"),
    "vgg9-bwn": Recipe(
        model="vgg9-bwn", data="cifar10", loss="ce", optimizer="adam", lr=1e-3, lr_schedule="cosine",
        lr_final=0.0, epochs=100, batch_size=128, val_size=5000, augment=True, normalize="meanstd",
        description="VGG-9 BWN (XNOR-Net binary weights) from scratch: Adam 1e-3, 100 epochs cosine (our "
        "recipe), the baseline BWNH is compared with"),
    "vgg9-binaryconnect": Recipe(
        model="vgg9-binaryconnect", data="cifar10", loss="sqhinge", optimizer="adam", lr=1e-3,
        lr_schedule="exp", lr_final=3e-7, epochs=500, batch_size=50, val_size=5000, glorot_lr_scale=True,
        description="VGG-9 BinaryConnect (deterministic), BinaryNet-style recipe: Adam 1e-3 → 3e-7, batch 50, "
        "squared hinge, Glorot lr scale (paper: 9.90 % CIFAR-10 error with ZCA; here [-1, 1] pixels)"),
    "vgg9-bwnh-finetune-a": _ft(
        "a", lr=1e-3, epochs=20, model_kwargs={"freeze_binary": True},
        description="BWNH fine-tuning, protocol (a): hashed codes B fixed; BN (absorbs α), biases and the "
        "real first/last layers train; Adam 1e-3, 20 epochs cosine [?]." + _NEEDS_INIT),
    "vgg9-bwnh-finetune-b": _ft(
        "b", lr=1e-4, epochs=30,
        description="BWNH fine-tuning, protocol (b): BWN-style STE training of latent weights initialised "
        "to B·A (forward α·sign(W)); Adam 1e-4 (latent |W| = α ≈ 1e-2), 30 epochs cosine [?]." + _NEEDS_INIT),
}
for _name, _recipe in RECIPES.items():
    register_recipe(_name, _recipe)

PROTOCOLS = {"a": "vgg9-bwnh-finetune-a", "b": "vgg9-bwnh-finetune-b"}


def warm_start_train(model: nn.Module, recipe: Recipe, out_dir: str | Path, **train_kwargs):
    """Train ``recipe`` starting from ``model``'s weights (the trainer has no init hook).

    Writes ``model`` as an epoch −1 ``last.safetensors`` (no optimizer state) in ``out_dir`` and
    resumes from it: the trainer rebuilds the model from the recipe, loads these weights strictly
    and runs epochs 0..N−1; the run can later be resumed like any other.
    """
    from ..train import train
    from ..fileio import atomic_write_text, ensure_dir
    from ..train.checkpoint import save_checkpoint

    out = Path(out_dir)
    last = out / "last.safetensors"
    if last.exists():
        raise FileExistsError(f"{out} already holds a run (last.safetensors); resume it with "
                              "onebit train --resume, or choose another output folder")
    ensure_dir(out)
    meta = {"recipe": recipe.to_dict(), "model_config": getattr(model, "onebit_config", {}), "epoch": -1,
            "metrics": {}, "best_val_acc": -1.0, "best_epoch": -1, "test_acc_at_best": float("nan"),
            "wall_s": 0.0, "init": "bwnh"}
    save_checkpoint(last, model.cpu(), meta)
    atomic_write_text(out / "recipe.json", recipe.to_json())
    return train(recipe, out, resume=True, **train_kwargs)


def bwnh_pipeline(checkpoint: str | Path, data: str | None = None, out_dir: str | Path = "runs/bwnh", *,
                  samples: int = DEFAULTS["samples"], source: str = DEFAULTS["source"],
                  target: str = DEFAULTS["target"], iters: int = DEFAULTS["iters"],
                  dcc_sweeps: int = DEFAULTS["dcc_sweeps"], tol: float = DEFAULTS["tol"],
                  per_image: int | None = None, protocol: str = "b", finetune_epochs: int | None = None,
                  model: str | None = None, data_root: str | None = None, batch_size: int = 256,
                  device: str | None = None, progress: bool = True, threads: int | None = None,
                  finetune_overrides: dict | None = None) -> dict:
    """Float checkpoint → hashed binary-weight network → evaluation → fine-tuning (§3.4).

    1. load the trained float model (:func:`onebit.train.load_for_eval`) and its recipe's data
       settings (normalisation, validation split);
    2. build the BWN baseline (α·sign(W) of the same float weights) and the BWNH model
       (:data:`TWINS`, or ``model``), hash with :func:`hash_network` on the training split;
    3. evaluate float / BWN / BWNH (validation and test), save ``hashed.safetensors`` and
       ``report.json`` in ``out_dir``;
    4. unless ``finetune_epochs == 0``: fine-tune with protocol ``"a"`` or ``"b"``
       (:data:`PROTOCOLS`) into ``out_dir/finetune`` via :func:`warm_start_train` (CPU trainer),
       with the float run's compute settings (bf16, channels-last) and ``finetune_overrides``
       (recipe fields; ``"model_kwargs"`` merges into the model's) on top
       (:func:`get_finetune_recipe`).

    Returns the report (per-layer objectives, accuracies, fine-tuning result).
    """
    import json

    from .. import data as onebit_data
    from ..train import load_for_eval
    from ..fileio import atomic_write_text
    from ..train.checkpoint import save_checkpoint

    from ..fileio import check_folder_path, ensure_dir
    from ..train.checkpoint import check_data_fits
    from ..train.trainer import check_ints, resolve_device

    # every argument is checked before minutes of sampling and hashing
    check_ints((("samples", samples, 1), ("per_image", per_image, 1), ("iters", iters, 0),
                ("dcc_sweeps", dcc_sweeps, 1), ("finetune_epochs", finetune_epochs, 0),
                ("batch_size", batch_size, 1), ("threads", threads, 1)))
    if not (isinstance(tol, numbers.Real) and tol >= 0):
        raise ValueError(f"tol must be a number >= 0, got {tol!r}")
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown fine-tuning protocol {protocol!r}; use one of {sorted(PROTOCOLS)}")
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; use one of {SOURCES}")
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; use one of {TARGETS}")
    dev = resolve_device(device)
    out = Path(out_dir)
    taken = [n for n in ("hashed.safetensors", "report.json", "finetune") if (out / n).exists()]
    if taken:
        raise FileExistsError(f"{out} already holds a BWNH run ({', '.join(taken)}); choose another output "
                              "folder (nothing was overwritten)")
    check_folder_path(out)  # a file in the way fails now, not after the hashing
    if threads is not None:
        torch.set_num_threads(threads)
    float_model, meta = load_for_eval(checkpoint)
    float_recipe = Recipe.from_dict(meta.get("recipe") or {"model": "?", "data": data or "cifar10"})
    fname = (meta.get("model_config") or {}).get("name")
    if model is None and fname not in TWINS:
        raise ValueError(f"no BWNH twin is known for model {fname!r} (known: {sorted(TWINS)}); choose the "
                         "binary-weight model to hash into with --model (Python: model=)")
    bwnh_name, bwn_name = (model, model) if model else TWINS[fname]
    data = data or float_recipe.data
    check_data_fits(meta, data, str(checkpoint))
    loaders = onebit_data.make_loaders(data, batch_size=batch_size, root=data_root, val_size=float_recipe.val_size,
                                       normalize=float_recipe.normalize, seed=float_recipe.seed)
    float_model.to(dev)
    bwn = binary_twin(float_model, bwn_name)
    bwnh = binary_twin(float_model, bwnh_name)
    # the fine-tuning recipe first: a bad override fails now, not after the hashing
    recipe = get_finetune_recipe(protocol, bwnh, float_recipe, data, finetune_epochs, finetune_overrides)
    ensure_dir(out)
    report = hash_network(float_model, bwnh, loaders.train, samples=samples, source=source, target=target,
                          iters=iters, dcc_sweeps=dcc_sweeps, tol=tol, per_image=per_image, copy_weights=False,
                          seed=float_recipe.seed, progress=progress)
    report.update(checkpoint=str(checkpoint), float_model=fname, bwnh_model=bwnh_name, bwn_model=bwn_name,
                  data=data, protocol=protocol)
    acc = {}
    for key, m in (("float", float_model), ("bwn", bwn), ("bwnh", bwnh)):
        acc[key] = {"test": accuracy(m, loaders.test, dev)}
        if loaders.val is not None:
            acc[key]["val"] = accuracy(m, loaders.val, dev)
    report["accuracy"] = acc
    log.info("test accuracy before fine-tuning: float %.2f%%, BWN %.2f%%, BWNH %.2f%%",
             100 * acc["float"]["test"], 100 * acc["bwn"]["test"], 100 * acc["bwnh"]["test"])
    bwnh.cpu()
    save_checkpoint(out / "hashed.safetensors", bwnh,
                    {"recipe": recipe.to_dict(), "model_config": getattr(bwnh, "onebit_config", {}),
                     "epoch": -1, "bwnh": {k: v for k, v in report.items() if k != "layers"}})
    if finetune_epochs != 0:
        res = warm_start_train(bwnh, recipe, out / "finetune", progress=progress, data_root=data_root)
        report["finetune"] = {"out_dir": str(res.out_dir), "epochs": res.epochs_run,
                              "best_val_acc": res.best_val_acc, "test_acc_at_best": res.test_acc_at_best,
                              "last_test_acc": res.last_test_acc, "wall_s": res.wall_s}
    atomic_write_text(out / "report.json", json.dumps(report, indent=2, default=str))
    return report


def get_finetune_recipe(protocol: str, bwnh_model: nn.Module, float_recipe: Recipe, data: str,
                        epochs: int | None = None, overrides: dict | None = None) -> Recipe:
    """The protocol's registered recipe, adapted to the hashed model and the float run.

    From the float run it takes the data settings (normalisation, validation split, seed) and the
    compute settings (``bf16``, ``channels_last``: the fine-tuning runs the way the float network
    was trained). ``epochs`` and then ``overrides`` (recipe fields, e.g. ``{"lr": 3e-4}``; a
    ``"model_kwargs"`` dict merges into the model's options) are applied last.
    """
    from dataclasses import fields

    from . import get_recipe

    r = get_recipe(PROTOCOLS[protocol])
    cfg = dict(getattr(bwnh_model, "onebit_config", None) or {})
    name = cfg.pop("name", r.model)
    for k in ("num_classes", "in_channels", "image_size"):  # the trainer takes these from the data
        cfg.pop(k, None)
    if r.model_kwargs.get("freeze_binary") and name.startswith("resnet"):
        raise ValueError("protocol 'a' (frozen codes) needs a model with a freeze_binary option (vgg9-*)")
    over = dict(model=name, data=data, model_kwargs={**cfg, **r.model_kwargs}, normalize=float_recipe.normalize,
                val_size=float_recipe.val_size, seed=float_recipe.seed, bf16=float_recipe.bf16,
                channels_last=float_recipe.channels_last)
    if epochs:  # None: the recipe's; 0: no fine-tuning (the caller skips it), the recipe kept as saved
        over["epochs"] = int(epochs)
    extra = dict(overrides or {})
    model_extra = extra.pop("model_kwargs", None) or {}
    over["model_kwargs"].update(model_extra)
    if model_extra:  # an unknown model option fails here, not when the fine-tuning starts
        from .. import models

        try:
            models.create(name, **over["model_kwargs"])
        except TypeError as e:
            raise ValueError(f"fine-tuning model options {sorted(model_extra)} do not fit {name}: {e}") from None
    known = {f.name for f in fields(Recipe)}
    bad = sorted(set(extra) - known)
    if bad:
        raise ValueError(f"unknown fine-tuning recipe field(s) {bad}; recipe fields: {sorted(known)}")
    for k in ("model", "data"):
        if k in extra:
            raise ValueError(f"the fine-tuning {k} is fixed by the hashed network; {k!r} cannot be overridden")
    over.update(extra)
    return r.replace(**over)
