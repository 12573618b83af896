"""VGG-9 for CIFAR and its binary-*weight* variants (BWN, BinaryConnect, BWNH; methods.md §3.5, §5).

Layer list — the BinaryConnect/BNN "VGG-like" net of §1.10 (6 conv + 3 FC; BWNH's VGG-9 is
presumably this net [?]) with **real activations** (ReLU), so every layer has a real input:

  ``C3(in→128) BN ReLU; C3(128→128) MP BN ReLU; C3(128→256) BN ReLU; C3(256→256) MP BN ReLU;
  C3(256→512) BN ReLU; C3(512→512) MP BN ReLU; FC(512·(s/8)²→1024) BN ReLU; FC(1024→1024) BN ReLU;
  FC(1024→classes) [BN]``

All convs 3×3, stride 1, zero padding 1, no bias (a BN follows). Block order
``conv → [MaxPool 2×2] → BN → ReLU`` as in the BNN/BinaryConnect net (pooling on pre-BN values).
``width`` scales every conv and FC width (``round(c·width)``, at least 1); ``last_bn`` (default
True, as §1.10) puts a BN after the classifier, otherwise the classifier gets a bias.

Weight layers are :class:`~onebit.nn.BinaryConv2d` / :class:`~onebit.nn.BinaryLinear` with
``input_quantizer=None`` (real inputs: binary-*weight* layers) and a weight quantizer:

==========================  ==================================  ====================  ============
model                       weight forward                      binary layers         clipping
==========================  ==================================  ====================  ============
``vgg9-float``              ``W``                               none                  —
``vgg9-bwn``                ``α·sign(W)``, α = mean|W| per      all but first conv    no
                            output channel (XNOR-Net's BWN,     and last FC
                            STE ``g·1[|W| <= 1]``)
``vgg9-bwnh``               same layers as ``vgg9-bwn``; meant to receive hashed weights: latent
                            ``W := B·diag(α)`` makes ``α·sign(W) = B·A`` (:mod:`onebit.methods.bwnh`)
``vgg9-binaryconnect``      ``sign(W)`` (no α), identity STE    all (as BinaryConnect) yes, [−1, 1]
==========================  ==================================  ====================  ============

First/last layers: BWN/XNOR-Net keep them real; whether BWNH binarises them is not known
(methods.md §3.4 (d)) — ``binary_first`` / ``binary_last`` switch them, and the model states its
real layers in ``real_input_layers`` (every layer: activations are real) and
``real_weight_layers``. Layer names are the ``nn.Sequential`` indices (``"0"`` = first conv).

``freeze_binary=True`` stops gradients to the latent weights of binary-weight layers (BWNH
fine-tuning protocol (a): the codes B stay fixed; α is then absorbed by the following BN's γ).

This file also registers binary-weight twins of the registry's float ResNets
(``resnet18-bwn``, ``resnet18-cifar-bwn``): same blocks and activation as ``resnet18(-cifar)-float``
(real ``clip(x, -1, 1)`` activations), ``α·sign(W)`` block convs, stem / 1×1 shortcuts / FC real.
"""

from __future__ import annotations

from torch import nn

from .. import quant
from ..nn import BinaryConv2d, BinaryLinear
from .registry import register_model
from .resnet import resnet

#: conv widths of the three stages and the FC width at ``width=1``
CONV_WIDTHS = (128, 256, 512)
FC_WIDTH = 1024


class VGG(nn.Sequential):
    """A Sequential that states which of its weight layers keep real-valued inputs/weights."""

    real_input_layers: tuple[str, ...] = ()
    real_weight_layers: tuple[str, ...] = ()

    def weight_layers(self) -> list[tuple[str, nn.Module]]:
        """(name, layer) of every conv/FC, in forward order."""
        return [(n, m) for n, m in self.named_children() if isinstance(m, (BinaryConv2d, BinaryLinear))]


def _scaled(c: int, width: float) -> int:
    return max(1, int(round(c * width)))


def vgg9(num_classes: int = 10, in_channels: int = 3, image_size: int = 32, width: float = 1.0,
         weight: quant.QuantizerSpec = "identity", weight_kwargs: dict | None = None,
         binary_first: bool = False, binary_last: bool = False, last_bn: bool = True,
         clip_weights: bool | None = None, freeze_binary: bool = False) -> VGG:
    """Build VGG-9 (see the module docstring).

    Args:
        width: multiplier of every conv/FC width (1.0 = 128-256-512 convs, 1024 FC).
        weight: weight quantizer of the binary layers — ``"identity"`` (float), ``"xnor_weight"``
            (α·sign(W), BWN/BWNH), ``"identity_ste_sign"`` (sign(W), BinaryConnect),
            ``"magnitude_aware_sign"``…
        weight_kwargs: options of that quantizer (e.g. ``{"per": "tensor"}``).
        binary_first, binary_last: also quantize the first conv / the classifier's weights
            (default: both real, the XNOR-Net/BWN convention).
        last_bn: BN after the classifier (default True, as the BNN/BinaryConnect net); without it
            the classifier has a bias.
        clip_weights: clip binary latent weights to [-1, 1] after each step (None: the layer
            default, i.e. clip when the weight quantizer is binary).
        freeze_binary: latent weights of binary-weight layers get ``requires_grad=False``.
    """
    if image_size % 8:
        raise ValueError(f"vgg9 needs an image size divisible by 8 (three 2×2 poolings), got {image_size}")
    if width <= 0:
        raise ValueError(f"width must be positive, got {width}")

    def wq(binary: bool) -> nn.Module:
        if not binary:
            return quant.get("identity")
        if isinstance(weight, str) or weight is None:
            return quant.get(weight, **(weight_kwargs or {}))
        return quant.get(weight)

    layers: list[nn.Module] = []
    c = in_channels
    first = True
    for w in CONV_WIDTHS:
        w = _scaled(w, width)
        for pool in (False, True):
            layers.append(BinaryConv2d(c, w, 3, padding=1, bias=False, input_quantizer=None,
                                       weight_quantizer=wq(binary_first or not first), scale="none",
                                       clip_weights=clip_weights))
            if pool:
                layers.append(nn.MaxPool2d(2))
            layers += [nn.BatchNorm2d(w), nn.ReLU(inplace=False)]
            c, first = w, False
    layers.append(nn.Flatten())
    feat = c * (image_size // 8) ** 2
    fc = _scaled(FC_WIDTH, width)
    for i, out in enumerate((fc, fc, num_classes)):
        last = i == 2
        layers.append(BinaryLinear(feat, out, bias=last and not last_bn, input_quantizer=None,
                                   weight_quantizer=wq(binary_last or not last), scale="none",
                                   clip_weights=clip_weights))
        if not last:
            layers += [nn.BatchNorm1d(out), nn.ReLU(inplace=False)]
        elif last_bn:
            layers.append(nn.BatchNorm1d(out))
        feat = out
    model = VGG(*layers)
    wl = model.weight_layers()
    model.real_input_layers = tuple(n for n, m in wl if not quant.is_binary(m.input_quantizer))
    model.real_weight_layers = tuple(n for n, m in wl if not quant.is_binary(m.weight_quantizer))
    if freeze_binary:
        for _, m in wl:
            if quant.is_binary(m.weight_quantizer):
                m.weight.requires_grad_(False)
    return model


_VGG = dict(family="vgg", default_data="cifar10", in_channels=3, image_size=32)

register_model("vgg9-float", vgg9, **_VGG, weight="identity",
               description="VGG-9 (2×128C3-MP-2×256C3-MP-2×512C3-MP-2×1024FC, BN, ReLU), real weights")
register_model("vgg9-bwn", vgg9, **_VGG, weight="xnor_weight", clip_weights=False,
               description="VGG-9 binary-weight network (XNOR-Net BWN): α·sign(W), α = mean|W| per filter; "
               "first conv and last FC real; real ReLU activations")
register_model("vgg9-bwnh", vgg9, **_VGG, weight="xnor_weight", clip_weights=False,
               description="VGG-9 for BWNH (hashing, AAAI 2018): layers of vgg9-bwn, weights set by "
               "onebit.methods.bwnh.hash_network (latent W = B·α)")
register_model("vgg9-binaryconnect", vgg9, **_VGG, weight="identity_ste_sign", clip_weights=True,
               binary_first=True, binary_last=True,
               description="VGG-9 BinaryConnect (deterministic): sign(W) in every layer, no α, latent "
               "weights clipped to [-1, 1]; real ReLU activations")

# binary-weight twins of the registry's float ResNets (resnet.py builder; same blocks/activation)
_RESNET_BWN = dict(family="resnet", block="bireal", activation="htanh", weight="xnor_weight", depth=18)
register_model("resnet18-bwn", resnet, **_RESNET_BWN, default_data="imagefolder", stem="imagenet",
               in_channels=3, image_size=224,
               description="binary-weight twin of resnet18-float: α·sign(W) block convs, real clip(-1,1) "
               "activations; stem, 1×1 shortcuts and FC real (BWN / BWNH target)")
register_model("resnet18-cifar-bwn", resnet, **_RESNET_BWN, default_data="cifar10", stem="cifar",
               in_channels=3, image_size=32,
               description="binary-weight twin of resnet18-cifar-float: α·sign(W) block convs, real "
               "clip(-1,1) activations; stem, 1×1 shortcuts and FC real (BWN / BWNH target)")
