"""Binary layers: ``BinaryLinear`` and ``BinaryConv2d`` (BNN paper Algorithm 1; methods.md §0, §1.4).

A binary layer computes ``y = q_in(x) * (alpha ⊙ q_w(W_r)) + b`` where ``q_in``/``q_w`` are quantizers
from :mod:`onebit.quant` and ``alpha`` an optional per-output-channel scale (XNOR-Net's
``mean |W_r|``). Layers are thin; the method lives in the quantizers they are given.
"""

from __future__ import annotations

import math
import numbers
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.utils import _pair

from .. import quant
from .constraints import Clip, constrain

ScaleSpec = Literal["none", "mean_abs"] | None


def _scale(w: torch.Tensor, kind: ScaleSpec) -> torch.Tensor | None:
    """Per-output-channel scale ``alpha_o = mean_{i,kh,kw} |W_o|`` (treated as a constant: detached)."""
    if kind in (None, "none"):
        return None
    if kind == "mean_abs":
        return w.detach().abs().flatten(1).mean(1)
    raise ValueError(f"unknown weight scale {kind!r}; use 'none' or 'mean_abs'")


class _BinaryMixin:
    """What both binary layers share: quantizers, optional input dropout, clipping, export info."""

    def _init_binary(self, input_quantizer, weight_quantizer, scale, clip_weights, input_dropout, init):
        self.input_quantizer = quant.get(input_quantizer)
        self.weight_quantizer = quant.get(weight_quantizer)
        self.scale = scale if scale is not None else "none"
        _scale(self.weight.detach(), self.scale)  # validate early
        if getattr(self.weight_quantizer, "scaled", False) and self.scale != "none":
            raise ValueError(f"weight quantizer {type(self.weight_quantizer).__name__} already scales the weights "
                             f"(α·sign(W)); scale={self.scale!r} would apply a scale twice: use scale='none'")
        self.input_dropout = float(input_dropout)
        if not 0.0 <= self.input_dropout < 1.0:
            raise ValueError(f"input_dropout must be in [0, 1), got {input_dropout!r}")
        if clip_weights is None:
            clip_weights = quant.is_binary(self.weight_quantizer)
        self.clip_weights = bool(clip_weights)
        if init == "uniform":  # BNN reference codes: W ~ U(-1, 1) for binary layers
            nn.init.uniform_(self.weight, -1.0, 1.0)
        elif init != "default":
            raise ValueError(f"unknown init {init!r}; use 'default' or 'uniform'")
        if self.clip_weights:
            constrain(self, "weight", Clip(-1.0, 1.0))
            with torch.no_grad():
                self.weight.clamp_(-1.0, 1.0)

    def quantized_input(self, x: torch.Tensor) -> torch.Tensor:
        xq = self.input_quantizer(x)
        if self.input_dropout and self.training:
            xq = F.dropout(xq, self.input_dropout, True)
        return xq

    def quantized_weight(self) -> torch.Tensor:
        """The weight the forward pass uses: ``alpha ⊙ q_w(W_r)``."""
        wq = self.weight_quantizer(self.weight)
        alpha = _scale(self.weight, self.scale)
        if alpha is not None:
            wq = wq * alpha.view(-1, *([1] * (wq.dim() - 1)))
        return wq

    @property
    def binary_input(self) -> bool:
        return quant.is_binary(self.input_quantizer)

    @property
    def binary_weight(self) -> bool:
        return quant.is_binary(self.weight_quantizer)


def _check_sizes(layer: str, **sizes) -> None:
    for name, v in sizes.items():
        if not isinstance(v, numbers.Integral) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{layer} {name} must be a positive integer, got {v!r}")


class BinaryLinear(_BinaryMixin, nn.Linear):
    """``y = q_in(x) · (alpha ⊙ q_w(W))ᵀ + b`` — a dense layer with quantized input and weights.

    Args:
        input_quantizer: spec for ``q_in`` (e.g. ``"ste_sign"``; ``None`` keeps the input real).
        weight_quantizer: spec for ``q_w`` (default ``"identity_ste_sign"``).
        scale: ``"none"`` or ``"mean_abs"`` (per-output-channel ``alpha``).
        clip_weights: clip latent weights to [-1, 1] after each optimizer step (default: when
            ``q_w`` is binary). Applied by :func:`onebit.nn.constraints.attach`.
        input_dropout: dropout applied to the *quantized* input in training (BinaryNet's MLP
            drops binary activations: values become 0 or ±1/(1-p)).
        init: ``"uniform"`` (U(-1, 1), the BNN reference codes) or ``"default"`` (PyTorch's).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = False, *,
                 input_quantizer: quant.QuantizerSpec = "ste_sign",
                 weight_quantizer: quant.QuantizerSpec = "identity_ste_sign",
                 scale: ScaleSpec = "none", clip_weights: bool | None = None,
                 input_dropout: float = 0.0, init: str = "default",
                 device=None, dtype=None):
        _check_sizes("BinaryLinear", in_features=in_features, out_features=out_features)
        nn.Linear.__init__(self, in_features, out_features, bias=bias, device=device, dtype=dtype)
        self._init_binary(input_quantizer, weight_quantizer, scale, clip_weights, input_dropout, init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.quantized_input(x), self.quantized_weight(), self.bias)

    def extra_repr(self) -> str:
        return f"{nn.Linear.extra_repr(self)}, scale={self.scale}, clip_weights={self.clip_weights}"


class BinaryConv2d(_BinaryMixin, nn.Conv2d):
    """``y = conv(pad(q_in(x), pad_value), alpha ⊙ q_w(W)) + b`` — a conv with quantized input and weights.

    ``pad_value`` states what the border holds once the input is binarized (methods.md §0.5):
    ``0`` is PyTorch's zero padding (a third value; the deploy engine reproduces it exactly with
    a correction term), ``+1`` or ``-1`` pad with a binary value (one-padding, free at deploy).
    For a real-valued input (``q_in`` not binary) the padding is always zeros.
    Other arguments as :class:`BinaryLinear`.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, groups: int = 1, bias: bool = False, *,
                 input_quantizer: quant.QuantizerSpec = "ste_sign",
                 weight_quantizer: quant.QuantizerSpec = "identity_ste_sign",
                 scale: ScaleSpec = "none", clip_weights: bool | None = None,
                 pad_value: float = 0.0, input_dropout: float = 0.0, init: str = "default",
                 device=None, dtype=None):
        if pad_value not in (0, 1, -1):
            raise ValueError(f"pad_value must be 0, +1 or -1, not {pad_value!r}")
        if isinstance(padding, str):
            raise ValueError("BinaryConv2d takes an explicit integer padding, not a string")
        _check_sizes("BinaryConv2d", in_channels=in_channels, out_channels=out_channels)
        for what, v, lo in (("kernel_size", kernel_size, 1), ("stride", stride, 1), ("padding", padding, 0),
                            ("dilation", dilation, 1)):
            pair = _pair(v)
            if any(e < lo for e in pair):
                raise ValueError(f"BinaryConv2d {what} must be >= {lo}, got {what}={pair}")
        nn.Conv2d.__init__(self, in_channels, out_channels, kernel_size, stride=stride,
                           padding=padding, dilation=dilation, groups=groups, bias=bias,
                           device=device, dtype=dtype)
        self.pad_value = float(pad_value)
        self._init_binary(input_quantizer, weight_quantizer, scale, clip_weights, input_dropout, init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xq = self.quantized_input(x)
        w = self.quantized_weight()
        ph, pw = self.padding
        if self.pad_value != 0 and (ph or pw) and self.binary_input:
            xq = F.pad(xq, (pw, pw, ph, ph), value=self.pad_value)
            return F.conv2d(xq, w, self.bias, self.stride, 0, self.dilation, self.groups)
        return F.conv2d(xq, w, self.bias, self.stride, self.padding, self.dilation, self.groups)

    def extra_repr(self) -> str:
        return (f"{nn.Conv2d.extra_repr(self)}, pad_value={self.pad_value:g}, scale={self.scale}, "
                f"clip_weights={self.clip_weights}")


def glorot_lr_scale(module: nn.Module) -> float:
    """BinaryConnect's per-layer learning-rate scale ``gamma = 1 / sqrt(1.5 / (fan_in + fan_out))``.

    For a conv, ``fan_in = C_in·k_h·k_w`` and ``fan_out = C_out·k_h·k_w`` (methods.md §1.4).
    """
    w = module.weight
    receptive = math.prod(w.shape[2:]) if w.dim() > 2 else 1
    fan_in, fan_out = w.shape[1] * receptive, w.shape[0] * receptive
    return 1.0 / math.sqrt(1.5 / (fan_in + fan_out))
