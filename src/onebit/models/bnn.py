"""BinaryNet models (Hubara, Courbariaux et al. 2016; methods.md §1.9–1.10).

* ``bnn-mlp``: the MNIST MLP — 3 hidden dense layers of width 4096 (2048 for the Torch7 variant
  ``bnn-mlp-2048``), each ``Dense → BN → sign``, and ``Dense(10) → BN`` (no sign), input dropout 0.2
  and dropout 0.5 on binary activations (Theano reference).
* ``bnn-convnet``: the CIFAR-10/SVHN ConvNet ``2×128C3 – MP2 – 2×256C3 – MP2 – 2×512C3 – MP2 –
  2×1024FC – 10``; block order ``BinaryConv → [MaxPool] → BN → sign`` (pooling on real
  pre-activations). ``bnn-convnet-svhn`` halves the conv widths.

Which layers are real (a tested property, §1.9): **every** weight layer has binary weights; only
the first layer's *input* is real (``real_input_layers``) and the last BN's output is the logit.
Binary activations are the *inputs* of the next layer (its ``input_quantizer``). Biases are
omitted because a BN follows every layer (a bias before BN cancels exactly).
The float twins (``*-float``) have the same topology, real weights and ``htanh`` activations.
"""

from __future__ import annotations

from torch import nn

from ..nn import BinaryConv2d, BinaryLinear, ShiftBatchNorm1d, ShiftBatchNorm2d
from .registry import register_model


def _bn(kind: str, n: int, dims: int) -> nn.Module:
    """``"standard"`` BN (ε = 1e-4, momentum 0.1: Theano) or ``"shift"`` (shift-based BN, §1.5)."""
    if kind == "standard":
        return (nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d)(n, eps=1e-4, momentum=0.1)
    if kind == "shift":
        return (ShiftBatchNorm1d if dims == 1 else ShiftBatchNorm2d)(n)
    raise ValueError(f"unknown bn {kind!r}; use 'standard' or 'shift'")


class BNNModel(nn.Sequential):
    """A Sequential that states which of its layers keep real-valued inputs/weights."""

    real_input_layers: tuple[str, ...] = ()
    real_weight_layers: tuple[str, ...] = ()


def _declare(model: BNNModel, *, first: str, binary: bool) -> BNNModel:
    """State the real layers: BNN keeps only the first layer's input real; a float twin is all real."""
    if binary:
        model.real_input_layers, model.real_weight_layers = (first,), ()
    else:
        names = tuple(n for n, m in model.named_children() if isinstance(m, (BinaryConv2d, BinaryLinear)))
        model.real_input_layers = model.real_weight_layers = names
    return model


def bnn_mlp(num_classes: int = 10, in_channels: int = 1, image_size: int = 28, hidden: int = 4096,
            depth: int = 3, bn: str = "standard", input_dropout: float = 0.2, dropout: float = 0.5,
            activation: str = "ste_sign", binary: bool = True, last_bn: str | None = "standard") -> BNNModel:
    """The BNN MNIST MLP. ``activation`` may be ``"stochastic_sign"`` (Torch7 default).

    ``last_bn`` is the final layer's BN kind (Torch7 uses vanilla BN there even with shift-BN).
    """
    wq = "identity_ste_sign" if binary else "identity"
    aq = activation if binary else "htanh"
    layers: list[nn.Module] = [nn.Flatten()]
    width = in_channels * image_size * image_size
    for i in range(depth + 1):
        out = hidden if i < depth else num_classes
        layers.append(BinaryLinear(width, out, input_quantizer=None if i == 0 else aq, weight_quantizer=wq,
                                   input_dropout=input_dropout if i == 0 else dropout,
                                   init="uniform" if binary else "default"))
        layers.append(_bn(bn if i < depth or last_bn is None else last_bn, out, 1))
        width = out
    return _declare(BNNModel(*layers), first="1", binary=binary)


def bnn_convnet(num_classes: int = 10, in_channels: int = 3, image_size: int = 32,
                widths: tuple[int, int, int] = (128, 256, 512), fc: int = 1024, bn: str = "standard",
                activation: str = "ste_sign", binary: bool = True, pad_value: float = 0.0,
                last_bn: str | None = "standard") -> BNNModel:
    """The BNN CIFAR-10 ConvNet (VGG-Small). ``pad_value``: border of binarized inputs (0, +1, -1)."""
    if image_size % 8:
        raise ValueError(f"bnn-convnet needs an image size divisible by 8, got {image_size}")
    widths = tuple(widths)
    if len(widths) != 3 or not all(isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in widths):
        raise ValueError(f"widths must be 3 positive ints (the three stages of two 3×3 convs, each ending in a "
                         f"2×2 max-pool), got {widths!r}")
    wq = "identity_ste_sign" if binary else "identity"
    aq = activation if binary else "htanh"
    init = "uniform" if binary else "default"
    layers: list[nn.Module] = []
    c = in_channels
    first = True
    for w in widths:
        for pool in (False, True):
            layers.append(BinaryConv2d(c, w, 3, padding=1, input_quantizer=None if first else aq,
                                       weight_quantizer=wq, pad_value=pad_value, init=init))
            if pool:
                layers.append(nn.MaxPool2d(2))
            layers.append(_bn(bn, w, 2))
            c, first = w, False
    layers.append(nn.Flatten())
    width = c * (image_size // 8) ** 2
    for i, out in enumerate((fc, fc, num_classes)):
        layers.append(BinaryLinear(width, out, input_quantizer=aq, weight_quantizer=wq, init=init))
        layers.append(_bn(bn if i < 2 or last_bn is None else last_bn, out, 1))
        width = out
    return _declare(BNNModel(*layers), first="0", binary=binary)


register_model("bnn-mlp", bnn_mlp, family="bnn", default_data="fashion-mnist",
               description="BinaryNet MNIST MLP, 3×4096 (Theano reference)", hidden=4096)
register_model("bnn-mlp-2048", bnn_mlp, family="bnn", default_data="fashion-mnist",
               description="BinaryNet MNIST MLP, 3×2048, no dropout (Torch7 variant)", hidden=2048,
               input_dropout=0.0, dropout=0.0)
register_model("bnn-mlp-float", bnn_mlp, family="bnn", default_data="fashion-mnist",
               description="float twin of bnn-mlp (real weights, htanh)", hidden=4096, binary=False)
register_model("bnn-convnet", bnn_convnet, family="bnn", default_data="cifar10",
               description="BinaryNet CIFAR-10 ConvNet 2×128C3-MP-2×256C3-MP-2×512C3-MP-2×1024FC")
register_model("bnn-convnet-svhn", bnn_convnet, family="bnn", default_data="svhn",
               description="BinaryNet SVHN ConvNet (half conv widths)", widths=(64, 128, 256))
register_model("bnn-convnet-float", bnn_convnet, family="bnn", default_data="cifar10",
               description="float twin of bnn-convnet (real weights, htanh)", binary=False)
