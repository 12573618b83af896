"""BONN networks (Gu et al., ICCV 2019; methods.md §4.7): 1-bit WRN-22/40 for CIFAR, ResNet-18 for ImageNet.

Every binary conv is a :class:`~onebit.nn.bonn.BonnConv2d` (binary activations, BONN kernels
``(m/w̄)·sign(w∘k)``, a kernel prior μ, σ per output channel) and the classifier ``fc`` carries the
:class:`~onebit.losses.bayes.FeaturePrior` of the features entering it (``fc.prior``: class
centers, per-class per-dimension σ). The Bayesian losses' weights and switches are stored on the
model as ``model.bayes`` (a :class:`~onebit.losses.bayes.BayesConfig`, set from the builder's
``lam``, ``nu``, ``theta``, … keyword arguments, i.e. from a recipe's ``model_kwargs``);
:func:`onebit.methods.bonn.hook_for` reads it. The λ = θ = 0 baseline is the *same* network
(``lam=0, theta=0``): identical modules and state dict, losses off.

Blocks: the plain 1-bit ResNet basic block (:class:`~onebit.models.resnet.BinaryBasicBlock`),
``x → BN(BonnConv(sign(BN(BonnConv(sign(x)))))) + shortcut(x)`` — post-BN order, no ReLU (XNOR /
Bi-Real convention; the original WRN is pre-activation BN-ReLU-conv, which the exporter's fused
``conv → BN → +residual`` form cannot express). Shortcut: identity, or — when the stride or the
width changes — a real strided 1×1 conv → BN (``downsample="conv"``, XNOR-Net/ResNet) or
AvgPool → real 1×1 conv → BN (``"avgpool"``, Bi-Real).

* ``bonn-wrn22`` / ``bonn-wrn40``: WRN-d has ``(d − 4)/6`` basic blocks per stage (3 and 6), a
  real 3×3 stem conv → BN, three stages (strides 1, 2, 2), global average pooling and a real FC.
  ``widths = (stem, stage1, stage2, stage3)``; default ``(16, 16, 32, 64)``; the wide setting of
  the same group's PCNN/MCN/RBCN papers is ``(64, 64, 128, 256)`` (the BONN tables do not say
  which they used [?]; the narrow one is the default because BONN's accuracies, 85–87 % on
  CIFAR-10, are those of a narrow 1-bit net).
* ``bonn-resnet18``: ResNet-18 with XNOR-Net's real layers (7×7 stem conv, the three 1×1
  down-sampling convs, FC), 16 binary 3×3 convs (§4.7; accounting ≈ 11.1× compression, §0.6).

Real-valued layers (``real_input_layers`` / ``real_weight_layers``): ``conv1``, the 1×1 shortcut
convs and ``fc``; BN layers and the shortcut sums are real too.

``forward(x, return_features=True)`` returns ``(logits, f)`` with ``f`` the features entering
``fc`` (what the feature loss is applied to; the book: "only at the fully connected layer").
"""

from __future__ import annotations

import torch
from torch import nn

from .. import quant
from ..losses.bayes import BayesConfig, FeaturePrior
from ..nn.bonn import BonnConv2d
from .registry import register_model
from .resnet import (STAGE_CONVS, BinaryBasicBlock, ResNet, _real_conv, add_head, declare_real_layers,
                     real_shortcut, stage)

WRN_DEPTHS = (22, 40)


class _BonnOpts:
    """What every binary conv of a BONN model shares; the interface :class:`BinaryBasicBlock` expects."""

    def __init__(self, activation, activation_kwargs, pad_value, downsample, conv_kwargs):
        if downsample not in ("avgpool", "conv"):
            raise ValueError(f"unknown downsample {downsample!r}; use 'conv' (strided 1×1) or 'avgpool'")
        self.activation, self.activation_kwargs = activation, dict(activation_kwargs or {})
        self.pad_value, self.downsample, self.conv_kwargs = pad_value, downsample, dict(conv_kwargs)

    def _activation(self) -> nn.Module:
        spec = self.activation
        if isinstance(spec, str) or spec is None:
            return quant.get(spec, **self.activation_kwargs)
        return quant.get(spec)

    def conv3x3(self, cin: int, cout: int, stride: int) -> BonnConv2d:
        return BonnConv2d(cin, cout, 3, stride=stride, padding=1, input_quantizer=self._activation(),
                          pad_value=self.pad_value, **self.conv_kwargs)

    def shortcut(self, cin: int, cout: int, stride: int) -> nn.Module:
        return real_shortcut(cin, cout, stride, self.downsample)


class _BonnModel:
    """What both BONN networks share: the feature prior on ``fc``, ``model.bayes``, the real-layer lists."""

    def _finish_bonn(self, num_classes: int, bayes: BayesConfig, feature_sigma_param: str) -> None:
        self.fc.prior = FeaturePrior(num_classes, self.fc.in_features, sigma_param=feature_sigma_param)
        self.bayes = bayes
        declare_real_layers(self)

    def bonn_convs(self) -> list[tuple[str, BonnConv2d]]:
        """(name, conv) of every BONN binary conv."""
        return [(n, m) for n, m in self.named_modules() if isinstance(m, BonnConv2d)]

    def blocks(self) -> list[nn.Module]:
        return [m for m in self.modules() if isinstance(m, BinaryBasicBlock)]

    @torch.no_grad()
    def reset_priors(self) -> None:
        """Re-initialise every kernel prior from its current kernel (after loading/copying weights)."""
        for _, conv in self.bonn_convs():
            conv.reset_prior()


class WideResNet(_BonnModel, nn.Module):
    """1-bit WRN-d: real 3×3 stem → BN → 3 stages of basic blocks → global avg-pool → real FC."""

    real_input_layers: tuple[str, ...] = ()
    real_weight_layers: tuple[str, ...] = ()
    #: forward applies the children in registration order: the exporter may lower them as a chain
    export_chain = True

    def __init__(self, num_classes: int, in_channels: int, depth: int, widths: tuple[int, int, int, int],
                 opts: _BonnOpts):
        super().__init__()
        n = (depth - 4) // 6
        self.conv1 = _real_conv(in_channels, widths[0], 3, stride=1, padding=1)
        self.bn1 = nn.BatchNorm2d(widths[0])
        c = widths[0]
        for i, cout in enumerate(widths[1:]):
            stride = 1 if i == 0 else 2
            self.add_module(f"layer{i + 1}", stage(BinaryBasicBlock, c, cout, stride, n, opts))
            c = cout
        add_head(self, c, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The features entering ``fc``: ``(N, widths[3])``."""
        x = self.bn1(self.conv1(x))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.flatten(self.avgpool(x))

    def forward(self, x: torch.Tensor, return_features: bool = False):
        f = self.features(x)
        out = self.fc(f)
        return (out, f) if return_features else out


class BonnResNet(_BonnModel, ResNet):
    """ResNet (plain basic blocks) with BONN binary convs; ``forward`` can also return the FC input."""

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.flatten(self.avgpool(x))

    def forward(self, x: torch.Tensor, return_features: bool = False):
        f = self.features(x)
        out = self.fc(f)
        return (out, f) if return_features else out


def _split_bonn_kwargs(code_scale, scale_grad, ste_clip, recon_init, recon_min, recon_lr_scale, sigma_param, prior_init,
                       lam, nu, theta, kernel_loss, feature_loss, feature_start_epoch, feature_reduction,
                       center_alpha, normalize_prior_grad) -> tuple[dict, BayesConfig]:
    conv_kwargs = dict(code_scale=code_scale, scale_grad=scale_grad, clip=ste_clip, recon_init=recon_init,
                       recon_min=recon_min, recon_lr_scale=recon_lr_scale, prior=True, sigma_param=sigma_param, prior_init=prior_init)
    bayes = BayesConfig(lam=lam, nu=nu, theta=theta, kernel_loss=kernel_loss, feature_loss=feature_loss,
                        feature_start_epoch=feature_start_epoch, feature_reduction=feature_reduction,
                        center_alpha=center_alpha, normalize_prior_grad=normalize_prior_grad)
    return conv_kwargs, bayes


_BONN_ARGS_DOC = """
    BONN options (methods.md §4; every open choice, with its default):
        code_scale: magnitude of the binary code — ``"one"`` (±1 codes, forward scale 1/w̄; default),
            ``"mean_w"`` (Algorithm 5: w̄·sign, scale 1) or ``"mean_abs_k"`` (PCNN: mean|k|·sign).
        scale_grad: back-propagate through the forward scale 1/w̄ too (default False: §4.6's δw).
        ste_clip: STE window on |w∘k| (1).
        recon_init, recon_min: initial value (1) and post-step lower bound (1e-3) of w's entries.
        recon_lr_scale: learning-rate factor of w (0.01: PCNN's separate η₂ [?]; 1: joint SGD).
        sigma_param: σ parameterisation of both priors — ``"log"`` (default), ``"softplus"``, ``"direct"``.
        prior_init: μ, σ from the kernel — ``"abs"`` (mean|k|, std|k|; default) or ``"moments"``.
        lam, nu, theta: λ (1e-4), ν (1.0 [?]), θ (1e-2) — stored in ``model.bayes``.
        kernel_loss, feature_loss: switches (True, True).
        feature_start_epoch: first epoch of the feature loss (0).
        feature_reduction: ``"mean"`` over the batch (default) or ``"sum"``.
        center_alpha: α of the center update (0.5).
        normalize_prior_grad: divide μ/σ gradients by C_in·H·W (True, §4.6).
        activation: activation binarizer of the binary convs (``"ste_sign"``: hard-tanh STE).
        pad_value: border value of binarized conv inputs (0 = zero padding; ±1 = one-padding).
        downsample: ``"conv"`` (strided real 1×1 conv → BN; default) or ``"avgpool"``.
"""


def bonn_wrn(num_classes: int = 10, in_channels: int = 3, image_size: int = 32, depth: int = 22,
             widths=(16, 16, 32, 64), activation: quant.QuantizerSpec = "ste_sign",
             activation_kwargs: dict | None = None, pad_value: float = 0.0, downsample: str = "conv",
             code_scale: str = "one", scale_grad: bool = False, ste_clip: float = 1.0, recon_init: float = 1.0,
             recon_min: float | None = 1e-3, recon_lr_scale: float = 0.01, sigma_param: str = "log",
             prior_init: str = "abs",
             lam: float = 1e-4, nu: float = 1.0, theta: float = 1e-2, kernel_loss: bool = True,
             feature_loss: bool = True, feature_start_epoch: int = 0, feature_reduction: str = "mean",
             center_alpha: float = 0.5, normalize_prior_grad: bool = True) -> WideResNet:
    """Build a 1-bit BONN WRN-``depth`` for CIFAR-sized input.

    Args:
        depth: 22 or 40 (``(depth − 4)/6`` basic blocks per stage).
        widths: ``(stem, stage1, stage2, stage3)`` channels; ``(16, 16, 32, 64)`` (default) or
            ``(64, 64, 128, 256)`` (the wide setting), any 4 positive ints.
        image_size: only checked (global pooling makes the net size-agnostic).
    """
    if depth not in WRN_DEPTHS:
        raise ValueError(f"unknown WRN depth {depth!r}; use one of {WRN_DEPTHS}")
    widths = tuple(int(w) for w in widths)
    if len(widths) != 4 or min(widths) < 1:
        raise ValueError(f"widths must be 4 positive ints (stem, stage1, stage2, stage3), got {widths!r}")
    if image_size < 1:
        raise ValueError(f"image_size must be positive, got {image_size}")
    conv_kwargs, bayes = _split_bonn_kwargs(code_scale, scale_grad, ste_clip, recon_init, recon_min, recon_lr_scale, sigma_param,
                                            prior_init, lam, nu, theta, kernel_loss, feature_loss,
                                            feature_start_epoch, feature_reduction, center_alpha,
                                            normalize_prior_grad)
    opts = _BonnOpts(activation, activation_kwargs, pad_value, downsample, conv_kwargs)
    model = WideResNet(num_classes, in_channels, depth, widths, opts)
    model._finish_bonn(num_classes, bayes, sigma_param)
    return model


bonn_wrn.__doc__ += _BONN_ARGS_DOC


def bonn_resnet(num_classes: int = 1000, in_channels: int = 3, image_size: int = 224, width: int = 64,
                depth: int = 18, stem: str = "imagenet", activation: quant.QuantizerSpec = "ste_sign",
                activation_kwargs: dict | None = None, pad_value: float = 0.0, downsample: str = "conv",
                code_scale: str = "one", scale_grad: bool = False, ste_clip: float = 1.0, recon_init: float = 1.0,
                recon_min: float | None = 1e-3, recon_lr_scale: float = 0.01, sigma_param: str = "log",
                prior_init: str = "abs",
                lam: float = 1e-4, nu: float = 1.0, theta: float = 1e-3, kernel_loss: bool = True,
                feature_loss: bool = True, feature_start_epoch: int = 0, feature_reduction: str = "mean",
                center_alpha: float = 0.5, normalize_prior_grad: bool = True) -> BonnResNet:
    """Build a 1-bit BONN ResNet (XNOR-Net real layers: stem conv, 1×1 down-sampling convs, FC).

    Args:
        width: base width (stages ``width·(1, 2, 4, 8)``); 64 is ResNet-18's.
        depth: 18 or 34.
        stem: ``"imagenet"`` (7×7/2 conv → BN → max-pool) or ``"cifar"`` (3×3/1 conv → BN).
        theta: default 1e-3 for ImageNet (not stated for BONN-18 [?]; the value the extension uses
            for its ImageNet feature-loss runs).
    """
    if depth not in STAGE_CONVS:
        raise ValueError(f"unknown depth {depth!r}; use one of {sorted(STAGE_CONVS)}")
    if width < 1 or image_size < 1:
        raise ValueError(f"width and image_size must be positive, got {width}, {image_size}")
    conv_kwargs, bayes = _split_bonn_kwargs(code_scale, scale_grad, ste_clip, recon_init, recon_min, recon_lr_scale, sigma_param,
                                            prior_init, lam, nu, theta, kernel_loss, feature_loss,
                                            feature_start_epoch, feature_reduction, center_alpha,
                                            normalize_prior_grad)
    opts = _BonnOpts(activation, activation_kwargs, pad_value, downsample, conv_kwargs)
    model = BonnResNet(num_classes, in_channels, width, STAGE_CONVS[depth], stem, "basic", opts)
    model._finish_bonn(num_classes, bayes, sigma_param)
    return model


bonn_resnet.__doc__ += _BONN_ARGS_DOC

_CIFAR = dict(family="wrn", default_data="cifar10", in_channels=3, image_size=32)

register_model("bonn-wrn22", bonn_wrn, **_CIFAR, depth=22,
               description="BONN 1-bit WRN-22 (ICCV 2019), stage widths 16-16-32-64 (widths=(64,64,128,256): wide); "
               "Bayesian kernel + feature losses (lam=0, theta=0: the plain baseline)")
register_model("bonn-wrn40", bonn_wrn, **_CIFAR, depth=40,
               description="BONN 1-bit WRN-40 (ICCV 2019), stage widths 16-16-32-64 (widths=(64,64,128,256): wide); "
               "Bayesian kernel + feature losses (lam=0, theta=0: the plain baseline)")
register_model("bonn-resnet18", bonn_resnet, family="resnet", default_data="imagefolder", in_channels=3,
               image_size=224, depth=18, stem="imagenet",
               description="BONN 1-bit ResNet-18 (ICCV 2019), XNOR-Net real layers (stem, 1×1 shortcuts, FC)")
