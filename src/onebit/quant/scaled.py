"""Scaled weight binarizers: ``q(W) = α ⊙ sign(W)`` with a per-output-channel ``α = mean |W|``.

* ``magnitude_aware_sign`` — Bi-Real Net's weight binarizer (Liu et al., ECCV 2018, §3.3;
  methods.md §0.3, §2.4). Forward ``α_c · sign(W)``, ``α_c = mean_{i,kh,kw} |W_c|`` treated as a
  constant (detached: no gradient flows through α). Backward, selected by ``grad``:

  ==================  ==============================  =========================================
  ``grad``            ∂L/∂W                           who does this
  ==================  ==============================  =========================================
  ``"paper"``         ``α · g · 1[|W| < 1]``          the paper (default)
  ``"larq"``          ``α · g · 1[|W| <= 1]``         larq ``MagnitudeAwareSign`` (= paper up
                                                      to the measure-zero boundary)
  ``"pytorch"``       ``g · 1[|W| <= 1]`` (no α)      official Bi-Real PyTorch ``HardBinaryConv``
                                                      (methods.md's ``bireal_pytorch_compat``)
  ``"caffe"``         ``g`` (identity: no mask, no α) official Bi-Real Caffe
                                                      ``binary_conv_train_layer``
  ==================  ==============================  =========================================

  **What the rules do when a BN follows the conv** (every Bi-Real block; tested): BN cancels a
  per-channel scale, so the gradient ``g`` reaching ``α·sign(W)`` is the ``sign(W)`` network's
  gradient ``G`` divided by α. The paper's ``α·g`` is then exactly ``G·1[|W| < 1]``: the *same update
  as the plain sign STE* (``weight="ste_sign"``), whatever α is. The Caffe code's identity gives
  ``G/α`` — steps 1/α larger (17–48× at PyTorch's default init, width 8, measured), growing as
  the weights shrink — and that code produced the paper's numbers (its SGD at lr 0.01). So under
  the paper's rule the "magnitude-aware" technique changes nothing in a conv → BN network; its
  effect in the paper's ablation can only come from the code's ``grad="caffe"`` (or, under Adam,
  nothing: Adam divides the step's scale out).

  ``per="out_channel"`` (default: both official codes and larq) or ``per="tensor"`` (one α for the
  whole tensor — the paper's notation does not settle the granularity, methods.md §7). Other
  reference-code departures are not the quantizer's: sign(0) is +1 everywhere here (the official
  PyTorch code gives 0, §0.2), and the PyTorch code's all-positive ``U[0, 0.001)`` latent-weight
  init is a model option (``weight_init="bireal_pytorch"`` in :mod:`onebit.models.resnet`).
* ``xnor_weight`` — XNOR-Net's weight binarizer (Rastegari et al. 2016; methods.md §5), kept
  small: ``α_c · sign(W)`` with the plain hard-tanh STE ``g · 1[|W| <= 1]`` (α constant; XNOR-Net's
  extra ``g/n`` term through α is dropped, as in most re-implementations). It equals
  ``magnitude_aware_sign(grad="pytorch")``.

Both are ``binary = True`` (±1 up to a per-channel scale) and ``scaled = True``: the deploy form
is ``sign(W)`` (``export_as = "sign"``) with :meth:`MagnitudeAwareSign.scale` folded into the
layer's output transform (or into the following BN, methods.md §2.4). A layer using one of these
must keep ``scale="none"`` (otherwise α is applied twice).
"""

from __future__ import annotations

import torch

from .registry import Quantizer, register
from .sign import sign

GRAD_RULES = ("paper", "larq", "pytorch", "caffe")
GRANULARITIES = ("out_channel", "tensor")


def mean_abs_scale(w: torch.Tensor, per: str = "out_channel") -> torch.Tensor:
    """``α = mean |W|`` (detached), shaped to broadcast against ``w``.

    ``per="out_channel"``: one α per index of dim 0 (mean over all other dims); ``"tensor"``: one α.
    """
    a = w.detach().abs()
    if per == "tensor" or w.dim() < 2:
        return a.mean().reshape([1] * w.dim())
    if per == "out_channel":
        return a.flatten(1).mean(1).view(-1, *([1] * (w.dim() - 1)))
    raise ValueError(f"unknown scale granularity {per!r}; use one of {GRANULARITIES}")


class _MagnitudeAwareSign(torch.autograd.Function):
    """Forward ``α · sign(w)``; backward by ``rule`` (see the module docstring). No gradient to α."""

    @staticmethod
    def forward(ctx, w: torch.Tensor, alpha: torch.Tensor, rule: str) -> torch.Tensor:
        ctx.save_for_backward(w, alpha)
        ctx.rule = rule
        return sign(w) * alpha

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        w, alpha = ctx.saved_tensors
        rule = ctx.rule
        if rule == "caffe":
            gw = g
        elif rule == "pytorch":
            gw = g * (w.abs() <= 1).to(g.dtype)
        elif rule == "larq":
            gw = g * alpha * (w.abs() <= 1).to(g.dtype)
        else:  # paper
            gw = g * alpha * (w.abs() < 1).to(g.dtype)
        return gw, None, None


def magnitude_aware_sign(w: torch.Tensor, grad: str = "paper", per: str = "out_channel") -> torch.Tensor:
    """``α · sign(W)`` with α = mean |W| (per output channel by default) and the ``grad`` backward rule."""
    if grad not in GRAD_RULES:
        raise ValueError(f"unknown magnitude-aware gradient rule {grad!r}; use one of {GRAD_RULES}")
    return _MagnitudeAwareSign.apply(w, mean_abs_scale(w, per), grad)


@register("magnitude_aware_sign")
class MagnitudeAwareSign(Quantizer):
    """Bi-Real weight binarizer: ``α_c · sign(W)``, backward ``α_c · g · 1[|W| < 1]`` (paper; see ``grad``).

    Args:
        grad: ``"paper"`` (default) | ``"larq"`` | ``"pytorch"`` | ``"caffe"`` — the backward
            rules of the paper and of the reference codes (module docstring table).
        per: ``"out_channel"`` (default) or ``"tensor"`` — granularity of α.
    """

    binary = True
    scaled = True
    export_as = "sign"

    def __init__(self, grad: str = "paper", per: str = "out_channel"):
        super().__init__()
        if grad not in GRAD_RULES:
            raise ValueError(f"unknown magnitude-aware gradient rule {grad!r}; use one of {GRAD_RULES}")
        if per not in GRANULARITIES:
            raise ValueError(f"unknown scale granularity {per!r}; use one of {GRANULARITIES}")
        self.grad, self.per = grad, per

    def scale(self, w: torch.Tensor) -> torch.Tensor:
        """The α that :meth:`forward` multiplies ``sign(w)`` by, as a 1-D tensor of length ``w.shape[0]``."""
        return mean_abs_scale(w, self.per).reshape(-1).expand(w.shape[0]).clone()

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return _MagnitudeAwareSign.apply(w, mean_abs_scale(w, self.per), self.grad)

    def config(self) -> dict:
        return {"name": self.name, "grad": self.grad, "per": self.per}


@register("xnor_weight")
class XnorWeight(MagnitudeAwareSign):
    """XNOR-Net / BWN weight binarizer: ``α_c · sign(W)``, α_c = mean |W_c|, backward ``g · 1[|W| <= 1]``."""

    def __init__(self, per: str = "out_channel"):
        super().__init__(grad="pytorch", per=per)

    def config(self) -> dict:
        return {"name": self.name, "per": self.per}
