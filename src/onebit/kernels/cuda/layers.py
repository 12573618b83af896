"""Binary layers that run on the XNOR-popcount kernels: inference of trained onebit models on a GPU.

:func:`convert` swaps every :class:`~onebit.nn.BinaryLinear` / :class:`~onebit.nn.BinaryConv2d`
whose input and weights are binarized by sign for an :class:`XnorLinear` / :class:`XnorConv2d`
that packs the signed input and runs :func:`onebit.kernels.cuda.bgemm` with the layer's scale and
bias fused into the output transform. The rest of the model (BatchNorm, pooling, real layers)
stays as it is. Outputs equal the PyTorch layer's: the ±1 products summed exactly, then
``acc·alpha + b`` in float32.

:func:`xnor_linear` is the training form: forward on the kernels, backward as
``F.linear(x_b, w_b)`` would (the gradients flow to ``x_b`` and ``w_b``, i.e. through the
quantizers' straight-through estimators).
"""

from __future__ import annotations

import torch
from torch import nn

from ...nn import BinaryConv2d, BinaryLinear
from . import bconv2d, bgemm, conv_correction, gemm_words, pack_bits, pack_conv_weight, words_for


def _signed_weight(layer: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``alpha ⊙ sign`` of the layer's quantized weight → (the ±1 signs, per-row alpha or None)."""
    wq = layer.quantized_weight().detach().float()
    flat = wq.reshape(wq.shape[0], -1).abs()
    alpha = flat[:, 0]
    if not torch.equal(flat, alpha[:, None].expand_as(flat)):
        raise ValueError(f"{type(layer).__name__}: quantized weights are not alpha·sign per output channel")
    if (alpha == 0).any():
        raise ValueError(f"{type(layer).__name__}: a zero weight scale cannot be packed")
    signs = torch.where(wq < 0, -1.0, 1.0)
    return signs, (None if torch.all(alpha == 1) else alpha)


def _check_sign_input(layer: nn.Module) -> None:
    q = layer.input_quantizer
    if q is None or getattr(q, "export_as", None) != "sign":
        raise ValueError(f"{type(layer).__name__}: input quantizer {type(q).__name__} is not a sign "
                         "at inference, so the layer cannot run on XNOR-popcount")


class _XnorLayer(nn.Module):
    """What both twins share: the layer's sign quantizer, its packed signs, alpha and bias."""

    def __init__(self, layer: BinaryLinear | BinaryConv2d, algo: str, pack) -> None:
        super().__init__()
        _check_sign_input(layer)
        self.input_quantizer = layer.input_quantizer
        signs, alpha = _signed_weight(layer)
        self.register_buffer("weight_bits", pack(signs))
        self.register_buffer("alpha", alpha)
        self.register_buffer("bias", None if layer.bias is None else layer.bias.detach().float().clone())
        self.algo = algo


class XnorLinear(_XnorLayer):
    """Inference twin of a sign-input :class:`BinaryLinear`: ``acc·alpha + b`` from packed bits."""

    def __init__(self, layer: BinaryLinear, algo: str = "auto"):
        self.in_features, self.out_features = layer.in_features, layer.out_features
        self.stride = gemm_words(layer.in_features)
        super().__init__(layer, algo, lambda signs: pack_bits(signs, self.stride))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xb = pack_bits(self.input_quantizer(x).reshape(-1, self.in_features), self.stride)
        y = bgemm(xb, self.weight_bits, self.in_features, output="float", mult=self.alpha, bias=self.bias,
                  algo=self.algo)
        return y.reshape(*x.shape[:-1], self.out_features)


class XnorConv2d(_XnorLayer):
    """Inference twin of a sign-input :class:`BinaryConv2d` (NCHW in and out, packed NHWC inside)."""

    def __init__(self, layer: BinaryConv2d, algo: str = "auto"):
        if layer.groups != 1 or tuple(layer.dilation) != (1, 1):
            raise ValueError("XnorConv2d supports groups=1 and dilation=1")
        words = words_for(layer.in_channels)
        super().__init__(layer, algo, lambda signs: pack_conv_weight(signs, words))
        self.c_in, self.c_out, self.words = layer.in_channels, layer.out_channels, words
        self.kernel, self.stride, self.padding = tuple(layer.kernel_size), tuple(layer.stride), tuple(layer.padding)
        self.pad_value = int(layer.pad_value)
        self._corr: dict[tuple, torch.Tensor] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xb = pack_bits(self.input_quantizer(x).permute(0, 2, 3, 1), self.words)
        corr = None
        if self.pad_value == 0 and any(self.padding):
            key = (x.shape[2], x.shape[3], x.device)
            if key not in self._corr:
                self._corr[key] = conv_correction(self.weight_bits, self.c_in, x.shape[2:], self.kernel,
                                                  self.stride, self.padding)
            corr = self._corr[key]
        y = bconv2d(xb, self.weight_bits, self.c_in, self.kernel, self.stride, self.padding, self.pad_value,
                    output="float", mult=self.alpha, bias=self.bias, corr=corr, algo=self.algo)
        return y.permute(0, 3, 1, 2)


def convert(model: nn.Module, algo: str = "auto") -> nn.Module:
    """Replace, in place, every sign-input binary layer of an eval-mode ``model`` by its XNOR twin.

    Layers with a real input (the first layer of BinaryNet, Bi-Real's stem) are left as they are.
    Returns ``model``. Move the model to the GPU before or after; the twins hold their packed
    weights as buffers.
    """
    if model.training:
        raise ValueError("convert() builds inference layers: call model.eval() first")
    for name, child in list(model.named_children()):
        if isinstance(child, (BinaryLinear, BinaryConv2d)) and child.binary_input and child.binary_weight \
                and getattr(child.input_quantizer, "export_as", None) == "sign":
            twin = XnorLinear(child, algo) if isinstance(child, BinaryLinear) else XnorConv2d(child, algo)
            setattr(model, name, twin.to(child.weight.device))
        else:
            convert(child, algo)
    return model


class _XnorMatmul(torch.autograd.Function):
    """``x_b @ w_bᵀ`` for ±1 tensors: forward on the kernels, backward in float."""

    @staticmethod
    def forward(ctx, xb: torch.Tensor, wb: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(xb, wb)
        k = xb.shape[1]
        stride = gemm_words(k)
        return bgemm(pack_bits(xb, stride), pack_bits(wb, stride), k, output="float").to(xb.dtype)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        xb, wb = ctx.saved_tensors
        return g @ wb.to(g.dtype), g.t() @ xb.to(g.dtype)


def xnor_linear(xb: torch.Tensor, wb: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(xb, wb, bias)`` for ±1 ``xb`` (B, K) and ``wb`` (N, K), forward on XNOR-popcount.

    Exact: the forward equals ``F.linear`` bit for bit (sums of ±1 are integers). Gradients are
    those of ``F.linear``. Values other than ±1 are read by their sign, so pass quantized tensors.
    """
    y = _XnorMatmul.apply(xb, wb)
    return y if bias is None else y + bias


__all__ = ["XnorConv2d", "XnorLinear", "convert", "xnor_linear"]
