"""1-bit ResNets: Bi-Real Net (Liu et al., ECCV 2018; methods.md §2), its plain binary baseline and float twins.

Blocks
  * :class:`BiRealBlock` — one per binary 3×3 conv: ``x → BN(BinConv3x3(q_a(x))) + shortcut(x)``.
    The shortcut is the identity, or — when the conv has stride 2 or changes the channel count —
    Bi-Real's real down-sampling path ``AvgPool2d(2) → real 1×1 conv → BN`` (``downsample="avgpool"``,
    both official codes) or a strided real 1×1 conv → BN (``downsample="conv"``, plain ResNet).
    A Bi-Real ResNet basic block is two of these: a real identity shortcut around *every* binary conv.
  * :class:`BinaryBasicBlock` — the plain 1-bit ResNet block ("1-bit CNN" of the Bi-Real ablation,
    XNOR-style): ``x → BN(BinConv(q_a(BN(BinConv(q_a(x)))))) + shortcut(x)``, a shortcut every two convs.
  * Float twins use the same two blocks with real weights (``weight="identity"``) and a real
    activation where the binary net has sign: ``"htanh"`` (``clip(x, -1, 1)``, Bi-Real's clip
    pre-training, the default), ``"relu"`` or ``"leaky_clip"`` (§2.5). Same module names and shapes
    as the binary net, so :func:`onebit.methods.bireal.init_from_real` copies every tensor.

No ReLU anywhere in the binary nets (§2.2): stem ``conv → BN [→ maxpool]``, blocks of
``sign → binary conv → BN → + shortcut``, head ``global avg-pool → real FC``. The shortcut
carries real values; sign is applied only at the input of each binary conv (§2.8 pitfall 1).

Stems: ``"imagenet"`` (real 7×7/2 conv → BN → max-pool 3×3/2, for 224×224) or ``"cifar"``
(real 3×3/1 conv → BN, no max-pool, for 32×32 / 28×28 — **our** adaptation, the paper reports
ImageNet only; label CIFAR results as such, §2.6).

Real-valued layers (``real_input_layers`` / ``real_weight_layers``): the stem conv ``conv1``,
the 1×1 down-sampling convs ``layer{2,3,4}.0.shortcut.*`` and the classifier ``fc`` — plus every
block conv whose chosen quantizer is real (float twins, or e.g. ``activation="htanh"`` ablations).
All BN layers and the shortcut sums are real too. Real layers are ``BinaryConv2d``/``BinaryLinear``
with identity quantizers, so accounting and tests can read them.

Binary convs have no bias, zero padding by default (``pad_value=0``, as the paper; ±1 for
deployable one-padding) and **no latent-weight clipping** by default (``clip_weights=False``: the
paper and the official PyTorch code do not clip; larq-zoo does — pass ``clip_weights=True``).
"""

from __future__ import annotations

import torch
from torch import nn

from .. import quant
from ..nn import BinaryConv2d, BinaryLinear
from .registry import register_model

#: binary 3×3 convs per stage (Bi-Real counts: 16 for 18 layers, 32 for 34 layers)
STAGE_CONVS = {18: (4, 4, 4, 4), 34: (6, 8, 12, 6)}


def _real_conv(cin: int, cout: int, k: int, stride: int = 1, padding: int = 0) -> BinaryConv2d:
    return BinaryConv2d(cin, cout, k, stride=stride, padding=padding, bias=False,
                        input_quantizer=None, weight_quantizer=None)


def _quantizer(spec, kwargs: dict | None) -> nn.Module:
    """A fresh quantizer module per layer (a module instance given by the caller is shared as is)."""
    if isinstance(spec, str) or spec is None:
        return quant.get(spec, **(kwargs or {}))
    if kwargs:
        raise ValueError(f"quantizer options {kwargs} need a registered quantizer name, not {spec!r}")
    return quant.get(spec)


class _Opts:
    """What every block conv of a model shares (quantizer choices, padding, clipping)."""

    def __init__(self, activation, weight, activation_kwargs, weight_kwargs, pad_value, clip_weights, downsample):
        if downsample not in ("avgpool", "conv"):
            raise ValueError(f"unknown downsample {downsample!r}; use 'avgpool' (Bi-Real) or 'conv' (strided 1×1)")
        self.activation, self.weight = activation, weight
        self.activation_kwargs, self.weight_kwargs = dict(activation_kwargs or {}), dict(weight_kwargs or {})
        self.pad_value, self.clip_weights, self.downsample = pad_value, clip_weights, downsample

    def conv3x3(self, cin: int, cout: int, stride: int) -> BinaryConv2d:
        # scale="none": a scaled weight quantizer (magnitude_aware_sign, xnor_weight) holds α itself
        return BinaryConv2d(cin, cout, 3, stride=stride, padding=1, bias=False,
                            input_quantizer=_quantizer(self.activation, self.activation_kwargs),
                            weight_quantizer=_quantizer(self.weight, self.weight_kwargs),
                            scale="none", clip_weights=self.clip_weights,
                            pad_value=self.pad_value)

    def shortcut(self, cin: int, cout: int, stride: int) -> nn.Module:
        return real_shortcut(cin, cout, stride, self.downsample)


def real_shortcut(cin: int, cout: int, stride: int, downsample: str) -> nn.Module:
    """Identity, or the real down-sampling path: ``AvgPool2d(stride) → real 1×1 conv → BN``
    (``"avgpool"``, Bi-Real) or ``strided real 1×1 conv → BN`` (``"conv"``, plain ResNet/XNOR)."""
    if stride == 1 and cin == cout:
        return nn.Identity()
    if downsample == "avgpool":
        pool: nn.Module = (nn.AvgPool2d(stride, stride, ceil_mode=True, count_include_pad=False)
                           if stride > 1 else nn.Identity())
        return nn.Sequential(pool, _real_conv(cin, cout, 1), nn.BatchNorm2d(cout))
    return nn.Sequential(nn.Identity(), _real_conv(cin, cout, 1, stride=stride), nn.BatchNorm2d(cout))


class BiRealBlock(nn.Module):
    """``x → BN(BinaryConv3x3(q_a(x))) + shortcut(x)``: a real shortcut around one binary conv (§2.2)."""

    def __init__(self, cin: int, cout: int, stride: int, opts: _Opts):
        super().__init__()
        self.conv = opts.conv3x3(cin, cout, stride)
        self.bn = nn.BatchNorm2d(cout)
        self.shortcut = opts.shortcut(cin, cout, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x)) + self.shortcut(x)

    def conv_bn_pairs(self) -> list[tuple[BinaryConv2d, nn.BatchNorm2d]]:
        """The block's chain as (conv, BN) pairs in order; the exporter lowers ``chain + shortcut``
        from these (the last pair's output transform adds the shortcut)."""
        return [(self.conv, self.bn)]


class BinaryBasicBlock(nn.Module):
    """Plain 1-bit ResNet basic block: ``BN(BinConv(q_a(BN(BinConv(q_a(x)))))) + shortcut(x)``.

    One shortcut every two binary convs; the intermediate BN output is binarized by the second
    conv's input quantizer, so its real values are lost (what Bi-Real's per-conv shortcut fixes).
    """

    def __init__(self, cin: int, cout: int, stride: int, opts: _Opts):
        super().__init__()
        self.conv1 = opts.conv3x3(cin, cout, stride)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = opts.conv3x3(cout, cout, 1)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = opts.shortcut(cin, cout, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn2(self.conv2(self.bn1(self.conv1(x)))) + self.shortcut(x)

    def conv_bn_pairs(self) -> list[tuple[BinaryConv2d, nn.BatchNorm2d]]:
        """The block's chain as (conv, BN) pairs in order (see :meth:`BiRealBlock.conv_bn_pairs`)."""
        return [(self.conv1, self.bn1), (self.conv2, self.bn2)]


def stage(make_block, cin: int, cout: int, stride: int, n: int, opts) -> nn.Sequential:
    """``n`` residual blocks; the first one changes the width and applies ``stride``."""
    return nn.Sequential(*[make_block(cin if j == 0 else cout, cout, stride if j == 0 else 1, opts)
                           for j in range(n)])


def add_head(model: nn.Module, channels: int, num_classes: int) -> None:
    """Global average pool → flatten → real FC (``model.avgpool``, ``.flatten``, ``.fc``)."""
    model.avgpool = nn.AdaptiveAvgPool2d(1)
    model.flatten = nn.Flatten()
    model.fc = BinaryLinear(channels, num_classes, bias=True, input_quantizer=None, weight_quantizer=None)


def declare_real_layers(model: nn.Module) -> None:
    """Set ``real_input_layers`` / ``real_weight_layers`` from the layers' quantizers."""
    layers = {n: m for n, m in model.named_modules() if isinstance(m, (BinaryConv2d, BinaryLinear))}
    model.real_input_layers = tuple(n for n, m in layers.items() if not quant.is_binary(m.input_quantizer))
    model.real_weight_layers = tuple(n for n, m in layers.items() if not quant.is_binary(m.weight_quantizer))


class ResNet(nn.Module):
    """stem → layer1..layer4 → global avg-pool → FC; states its real layers (see the module docstring)."""

    real_input_layers: tuple[str, ...] = ()
    real_weight_layers: tuple[str, ...] = ()
    #: forward applies the children in registration order: the exporter may lower them as a chain
    export_chain = True

    def __init__(self, num_classes: int, in_channels: int, width: int, stage_convs: tuple[int, ...],
                 stem: str, block: str, opts: _Opts):
        super().__init__()
        if stem == "imagenet":
            self.conv1 = _real_conv(in_channels, width, 7, stride=2, padding=3)
            self.bn1 = nn.BatchNorm2d(width)
            self.maxpool: nn.Module = nn.MaxPool2d(3, stride=2, padding=1)
        elif stem == "cifar":
            self.conv1 = _real_conv(in_channels, width, 3, stride=1, padding=1)
            self.bn1 = nn.BatchNorm2d(width)
            self.maxpool = nn.Identity()
        else:
            raise ValueError(f"unknown stem {stem!r}; use 'imagenet' or 'cifar'")
        if block == "bireal":
            make, per_block = BiRealBlock, 1
        elif block == "basic":
            make, per_block = BinaryBasicBlock, 2
        else:
            raise ValueError(f"unknown block {block!r}; use 'bireal' (shortcut per conv) or 'basic' (every two)")
        c = width
        for i, n in enumerate(stage_convs):
            if n % per_block:
                raise ValueError(f"stage {i + 1} has {n} convs, not a multiple of {per_block} ({block} blocks)")
            cout, stride = width * 2 ** i, 1 if i == 0 else 2
            self.add_module(f"layer{i + 1}", stage(make, c, cout, stride, n // per_block, opts))
            c = cout
        add_head(self, c, num_classes)
        declare_real_layers(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.flatten(self.avgpool(x)))

    def blocks(self) -> list[nn.Module]:
        """All residual blocks, in order."""
        return [m for m in self.modules() if isinstance(m, (BiRealBlock, BinaryBasicBlock))]

    def binary_convs(self) -> list[tuple[str, BinaryConv2d]]:
        """(name, conv) of every conv with binary input and binary weights."""
        return [(n, m) for n, m in self.named_modules() if isinstance(m, BinaryConv2d)
                and quant.is_binary(m.input_quantizer) and quant.is_binary(m.weight_quantizer)]


def resnet(num_classes: int = 1000, in_channels: int = 3, image_size: int = 224, width: int = 64,
           depth: int = 18, stem: str = "imagenet", block: str = "bireal",
           activation: quant.QuantizerSpec = "approx_sign", weight: quant.QuantizerSpec = "magnitude_aware_sign",
           activation_kwargs: dict | None = None, weight_kwargs: dict | None = None,
           pad_value: float = 0.0, clip_weights: bool = False, downsample: str = "avgpool",
           weight_init: str = "default") -> ResNet:
    """Build a (Bi-Real / plain binary / float) ResNet.

    Args:
        width: base width (stages have ``width·(1, 2, 4, 8)`` channels); 64 is the paper's.
        depth: 18 or 34 (16 / 32 binary 3×3 convs, :data:`STAGE_CONVS`).
        stem: ``"imagenet"`` (7×7/2 conv + max-pool) or ``"cifar"`` (3×3/1 conv, no max-pool).
        block: ``"bireal"`` (shortcut around every conv) or ``"basic"`` (every two convs).
        activation: input quantizer of the block convs — ``"approx_sign"`` (Bi-Real),
            ``"ste_sign"`` (hard-tanh STE: the ablation's "original"), or a real activation for
            float twins (``"htanh"``, ``"relu"``, ``"leaky_clip"``).
        weight: weight quantizer — ``"magnitude_aware_sign"`` (Bi-Real), ``"xnor_weight"``,
            ``"identity_ste_sign"`` / ``"ste_sign"`` (unscaled sign), or ``"identity"`` (float).
        activation_kwargs, weight_kwargs: passed to the quantizer factories, e.g.
            ``weight_kwargs={"grad": "pytorch"}`` for the official PyTorch code's weight gradient.
        pad_value: border value of the binarized conv inputs (0 = zero padding, ±1 = one-padding).
        clip_weights: clip binary latent weights to [-1, 1] after each step (off: the paper does not).
        downsample: ``"avgpool"`` (AvgPool 2×2 → 1×1 conv → BN, Bi-Real) or ``"conv"`` (strided 1×1).
        weight_init: ``"default"`` (PyTorch's symmetric init) or ``"bireal_pytorch"`` (the official
            PyTorch code's ``U[0, 0.001)`` latent binary weights: every binary weight starts at +1).
        image_size: only checked (global pooling makes the net size-agnostic).
    """
    if depth not in STAGE_CONVS:
        raise ValueError(f"unknown depth {depth!r}; use one of {sorted(STAGE_CONVS)}")
    if width < 1 or image_size < 1:
        raise ValueError(f"width and image_size must be positive, got {width}, {image_size}")
    if weight_init not in ("default", "bireal_pytorch"):
        raise ValueError(f"unknown weight_init {weight_init!r}; use 'default' or 'bireal_pytorch'")
    opts = _Opts(activation, weight, activation_kwargs, weight_kwargs, pad_value, clip_weights, downsample)
    model = ResNet(num_classes, in_channels, width, STAGE_CONVS[depth], stem, block, opts)
    if weight_init == "bireal_pytorch":
        with torch.no_grad():
            for blk in model.blocks():
                for conv, _ in blk.conv_bn_pairs():
                    if quant.is_binary(conv.weight_quantizer):
                        conv.weight.uniform_(0.0, 1e-3)
    return model


_BIREAL = dict(family="resnet", block="bireal", activation="approx_sign", weight="magnitude_aware_sign")
_PLAIN = dict(family="resnet", block="basic", activation="approx_sign", weight="magnitude_aware_sign")
_FLOAT = dict(family="resnet", block="bireal", activation="htanh", weight="identity")
_IMAGENET = dict(default_data="imagefolder", stem="imagenet", in_channels=3, image_size=224)
_CIFAR = dict(default_data="cifar10", stem="cifar", in_channels=3, image_size=32)

register_model("bireal-resnet18", resnet, **_BIREAL, **_IMAGENET, depth=18,
               description="Bi-Real Net-18 (ECCV 2018): shortcut per binary conv, ApproxSign, magnitude-aware weights")
register_model("bireal-resnet34", resnet, **_BIREAL, **_IMAGENET, depth=34,
               description="Bi-Real Net-34 (ECCV 2018): 32 binary convs, shortcut per conv")
register_model("bireal-resnet18-cifar", resnet, **_BIREAL, **_CIFAR, depth=18,
               description="Bi-Real Net-18 with a 3×3 stem, no max-pool (our small-input adaptation)")
register_model("bireal-resnet34-cifar", resnet, **_BIREAL, **_CIFAR, depth=34,
               description="Bi-Real Net-34 with a 3×3 stem, no max-pool (our small-input adaptation)")
register_model("binary-resnet18", resnet, **_PLAIN, **_IMAGENET, depth=18,
               description="plain 1-bit ResNet-18 (Bi-Real's '1-bit CNN' baseline): shortcut every two convs")
register_model("binary-resnet18-cifar", resnet, **_PLAIN, **_CIFAR, depth=18,
               description="plain 1-bit ResNet-18, 3×3 stem (small-input adaptation): shortcut every two convs")
register_model("resnet18-float", resnet, **_FLOAT, **_IMAGENET, depth=18,
               description="real-valued twin of bireal-resnet18 (clip(-1,1) activation; activation='relu' too)")
register_model("resnet18-cifar-float", resnet, **_FLOAT, **_CIFAR, depth=18,
               description="real-valued twin of bireal-resnet18-cifar (clip(-1,1); activation='relu' too)")
