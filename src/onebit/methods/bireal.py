"""Bi-Real Net (Liu et al., ECCV 2018; methods.md §2.5–2.6): recipes as data and the procedures between stages.

Paper procedure (ImageNet), as stages — each a registered recipe; ``PIPELINES`` chains them:

1. ``pretrain`` — train the real-valued twin (same structure, ``clip(x, -1, 1)`` where the binary
   net has sign; ``resnet18-float``) (§2.5, paper §3.4). The paper gives no hyper-parameters for
   this stage; the Caffe README says "standard ResNet hyper-parameters" (for its ReLU stage), so
   the recipe uses He et al.'s: SGD 0.1, momentum 0.9, weight decay 1e-4, batch 256, 90 epochs,
   ×0.1 at 30/60. (The Caffe README's three sub-stages ReLU → leaky-clip → clip are available with
   ``model_kwargs={"activation": "relu" | "leaky_clip" | "htanh"}``.)
2. ``binary`` — initialise the 1-bit net with :func:`init_from_real` and train it with α·sign(W)
   weights: SGD, momentum 0.9, **weight decay 0**; Bi-Real-18: batch 128, lr 0.01, 20 epochs, ×0.1
   at 10 and 15; Bi-Real-34: batch 1024, lr 0.08, 40 epochs, ×0.1 at 20 and 30 (README/paper text,
   §2.6; the released solver files differ and are not followed).
3. ``bn-retrain`` — drop α (absorbed into BN: :func:`absorb_scale`), freeze the convs and retrain
   only BN for 1 epoch (:func:`prepare_bn_retraining`). The lr of this stage is not given; the
   recipe uses the last lr of stage 2 (1e-4) [?].

CIFAR variants (``*-cifar``, our adaptation — the paper reports ImageNet only): the same stages
with a shorter budget: pre-training SGD 0.1, wd 5e-4, batch 128, 100 epochs, cosine to 0 (the usual
CIFAR ResNet recipe, shortened); binary stage SGD 0.01, momentum 0.9, wd 0, batch 128, 60 epochs,
×0.1 at 30 and 45 (the paper's 2:1:1 step shape); crop+flip augmentation throughout.

Stages are recipes chained by ``init_from`` / ``init`` (``"real"``: copy the previous stage's
tensors; ``"bn_retrain"``: fold α into BN and train BN only), run in order by ``onebit train
--pipeline`` (:data:`PIPELINES`). Not expressible today: the official PyTorch recipe's label
smoothing and linear lr decay. The binary ImageNet stages use the paper's
plain momentum SGD (``nesterov=False``) and its augmentation, resize to 256 and a random 224 crop
with flip (``crop="resize"``); the real-valued pre-training stages keep the trainer's defaults
(Nesterov momentum, random-resized crops: the paper gives no recipe for them). The CIFAR stages
use plain momentum too, with the 4-pixel pad-and-crop of the array data sets.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .. import quant
from ..nn import BinaryConv2d
from .recipe import Recipe, register_recipe

# ---------------------------------------------------------------------------------------------
# recipes


def _imagenet_binary(model: str, *, batch: int, lr: float, epochs: int, milestones: tuple[int, ...],
                     **kw) -> Recipe:
    return Recipe(model=model, data="imagefolder", loss="ce", optimizer="sgd", lr=lr, momentum=0.9,
                  nesterov=False, weight_decay=0.0, lr_schedule="step", milestones=milestones, epochs=epochs,
                  batch_size=batch, val_size=10000, augment=True, crop="resize", normalize="meanstd", **kw)


def _imagenet_pretrain(model: str, **kw) -> Recipe:
    return Recipe(model=model, data="imagefolder", loss="ce", optimizer="sgd", lr=0.1, momentum=0.9,
                  weight_decay=1e-4, lr_schedule="step", milestones=(30, 60), epochs=90, batch_size=256,
                  val_size=10000, augment=True, normalize="meanstd", **kw)


def _cifar_binary(model: str, **kw) -> Recipe:
    return Recipe(model=model, data="cifar10", loss="ce", optimizer="sgd", lr=0.01, momentum=0.9,
                  nesterov=False, weight_decay=0.0, lr_schedule="step", milestones=(30, 45), epochs=60, batch_size=128,
                  val_size=5000, augment=True, normalize="meanstd", **kw)


def _cifar_pretrain(model: str, **kw) -> Recipe:
    return Recipe(model=model, data="cifar10", loss="ce", optimizer="sgd", lr=0.1, momentum=0.9,
                  weight_decay=5e-4, lr_schedule="cosine", lr_final=0.0, epochs=100, batch_size=128,
                  val_size=5000, augment=True, normalize="meanstd", **kw)


_BN_ONLY = "needs the previous stage's weights and BN-only training (prepare_bn_retraining); "

RECIPES: dict[str, Recipe] = {
    # ImageNet, paper procedure
    "resnet18-float": _imagenet_pretrain(
        "resnet18-float", description="Bi-Real stage 1: clip(-1,1) real-valued twin of Bi-Real-18 "
        "(standard ResNet hyper-parameters; the paper gives none for this stage)"),
    "bireal-resnet34-pretrain": _imagenet_pretrain(
        "resnet18-float", model_kwargs={"depth": 34},
        description="Bi-Real stage 1 for 34 layers: clip(-1,1) real-valued twin of Bi-Real-34"),
    "bireal-resnet18": _imagenet_binary(
        "bireal-resnet18", batch=128, lr=0.01, epochs=20, milestones=(10, 15),
        description="Bi-Real-18 stage 2 (paper/README): SGD 0.01, wd 0, 20 epochs, ×0.1 at 10/15; "
        "initialise from resnet18-float with init_from_real (paper: 56.4 % top-1)"),
    "bireal-resnet34": _imagenet_binary(
        "bireal-resnet34", batch=1024, lr=0.08, epochs=40, milestones=(20, 30),
        description="Bi-Real-34 stage 2 (paper/README): batch 1024, SGD 0.08, wd 0, 40 epochs, "
        "×0.1 at 20/30; initialise from bireal-resnet34-pretrain (paper: 62.2 % top-1)"),
    "binary-resnet18": _imagenet_binary(
        "binary-resnet18", batch=128, lr=0.01, epochs=20, milestones=(10, 15),
        description="plain 1-bit ResNet-18 ('1-bit CNN' of the Bi-Real ablation) with Bi-Real-18's "
        "stage-2 recipe; initialise from resnet18-float with block='basic'"),
    "bireal-resnet18-bn-retrain": _imagenet_binary(
        "bireal-resnet18", batch=128, lr=1e-4, epochs=1, milestones=(),
        model_kwargs={"weight": "identity_ste_sign"},
        description="Bi-Real-18 stage 3: pure sign(W), α absorbed into BN, retrain only BN for 1 epoch; "
        + _BN_ONLY + "lr not given by the paper [?]"),
    "bireal-resnet34-bn-retrain": _imagenet_binary(
        "bireal-resnet34", batch=1024, lr=8e-4, epochs=1, milestones=(),
        model_kwargs={"weight": "identity_ste_sign"},
        description="Bi-Real-34 stage 3: pure sign(W), α absorbed into BN, retrain only BN for 1 epoch; "
        + _BN_ONLY + "lr not given by the paper [?]"),
    # CIFAR-10, our adaptation with a shorter budget
    "resnet18-cifar-float": _cifar_pretrain(
        "resnet18-cifar-float", description="Bi-Real stage 1 on CIFAR-10 (our adaptation, shorter budget): "
        "clip(-1,1) real twin, SGD 0.1, wd 5e-4, 100 epochs cosine"),
    "bireal-resnet34-cifar-pretrain": _cifar_pretrain(
        "resnet18-cifar-float", model_kwargs={"depth": 34},
        description="Bi-Real-34 stage 1 on CIFAR-10 (our adaptation, shorter budget)"),
    "bireal-resnet18-cifar": _cifar_binary(
        "bireal-resnet18-cifar", description="Bi-Real-18 stage 2 on CIFAR-10 (our adaptation, shorter budget "
        "than ImageNet's 20 long epochs): SGD 0.01, wd 0, 60 epochs, ×0.1 at 30/45; init from resnet18-cifar-float"),
    "bireal-resnet34-cifar": _cifar_binary(
        "bireal-resnet34-cifar", description="Bi-Real-34 stage 2 on CIFAR-10 (our adaptation, shorter budget): "
        "SGD 0.01, wd 0, 60 epochs, ×0.1 at 30/45; init from bireal-resnet34-cifar-pretrain"),
    "binary-resnet18-cifar": _cifar_binary(
        "binary-resnet18-cifar", description="plain 1-bit ResNet-18 on CIFAR-10 with Bi-Real-18-cifar's recipe "
        "(our adaptation, shorter budget)"),
    "bireal-resnet18-cifar-bn-retrain": _cifar_binary(
        "bireal-resnet18-cifar", model_kwargs={"weight": "identity_ste_sign"},
        description="Bi-Real-18 stage 3 on CIFAR-10: α absorbed into BN, BN-only retraining; "
        + _BN_ONLY + "lr [?]").replace(lr=1e-4, epochs=1, milestones=()),
}
for _name, _recipe in RECIPES.items():
    register_recipe(_name, _recipe)


@dataclass(frozen=True)
class Stage:
    """One stage of a multi-stage method: a registered recipe and how its model is initialised.

    ``init``: ``None`` (from scratch), ``"init_from_real"`` (copy the ``init_from`` stage's real
    twin) or ``"bn_retrain"`` (load the ``init_from`` stage, then :func:`prepare_bn_retraining`).
    """

    name: str
    recipe: str
    init: str | None = None
    init_from: str | None = None


def _pipeline(pretrain: str, binary: str, bn: str | None) -> tuple[Stage, ...]:
    stages = [Stage("pretrain", pretrain), Stage("binary", binary, "init_from_real", "pretrain")]
    if bn:
        stages.append(Stage("bn-retrain", bn, "bn_retrain", "binary"))
    return tuple(stages)


PIPELINES: dict[str, tuple[Stage, ...]] = {
    "bireal-resnet18": _pipeline("resnet18-float", "bireal-resnet18", "bireal-resnet18-bn-retrain"),
    "bireal-resnet34": _pipeline("bireal-resnet34-pretrain", "bireal-resnet34", "bireal-resnet34-bn-retrain"),
    "bireal-resnet18-cifar": _pipeline("resnet18-cifar-float", "bireal-resnet18-cifar",
                                       "bireal-resnet18-cifar-bn-retrain"),
    "bireal-resnet34-cifar": _pipeline("bireal-resnet34-cifar-pretrain", "bireal-resnet34-cifar", None),
}

# ---------------------------------------------------------------------------------------------
# procedures


class InitMismatchError(ValueError):
    """The real-valued network does not have the binary network's tensors (names and shapes)."""


def init_from_real(binary_model: nn.Module, real_model: nn.Module, *, strict: bool = True,
                   labels: tuple[str, str] = ("binary", "real")) -> list[str]:
    """Clip pre-training initialisation (§2.5): copy every same-name, same-shape tensor of ``real_model``.

    Parameters *and* buffers (BN running statistics) are copied; the real weights become the
    binary net's latent weights. With ``strict`` (default) nothing is copied unless every tensor of
    either model has a same-name, same-shape counterpart, and the error lists what does not match
    (``labels`` name the two models in it: the one copied into, the one copied from).
    Returns the names copied, in ``binary_model.state_dict()`` order.
    """
    dst, src = binary_model.state_dict(), real_model.state_dict()
    to, frm = labels
    missing = [k for k in dst if k not in src]
    extra = [k for k in src if k not in dst]
    shapes = [f"{k}: {tuple(dst[k].shape)} ({to}) vs {tuple(src[k].shape)} ({frm})"
              for k in dst if k in src and dst[k].shape != src[k].shape]
    if strict and (missing or extra or shapes):
        parts = []
        if missing:
            parts.append(f"missing in the {frm} model: {', '.join(missing)}")
        if extra:
            parts.append(f"not in the {to} model: {', '.join(extra)}")
        if shapes:
            parts.append(f"shape mismatch: {'; '.join(shapes)}")
        raise InitMismatchError("init_from_real: the two networks do not match (build the real twin with the "
                                "same depth/width/stem/block/num_classes) — " + " | ".join(parts))
    copied = [k for k in dst if k in src and dst[k].shape == src[k].shape]
    with torch.no_grad():
        for k in copied:
            dst[k].copy_(src[k])
    return copied


def _pairs(model: nn.Module) -> list[tuple[str, BinaryConv2d, nn.BatchNorm2d]]:
    names = {id(m): n for n, m in model.named_modules()}
    out = []
    for m in model.modules():
        if hasattr(m, "conv_bn_pairs"):
            out += [(names[id(c)], c, b) for c, b in m.conv_bn_pairs()]
    return out


def absorb_scale(model: nn.Module) -> list[str]:
    """Fold each scaled weight quantizer's α into the BN after its conv; the conv then uses ``sign(W)``.

    For ``z = α_c·z'`` an eval-mode BN ``γ(z − μ)/sqrt(σ² + ε) + β`` equals the same BN on ``z'``
    with ``μ' = μ/α_c`` and ``σ'² = (σ² + ε)/α_c² − ε`` (exact, γ and β untouched; methods.md §2.4).
    Where that variance would be negative (α_c² > 1 + σ²/ε) the channel uses ``σ'² = σ²/α_c²`` and
    rescales γ instead (still exact in eval mode). The weight quantizers become ``identity_ste_sign``
    (and ``model.onebit_config``, if present, says so). Returns the convs changed.
    """
    changed = []
    for name, conv, bn in _pairs(model):
        q = conv.weight_quantizer
        if not getattr(q, "scaled", False):
            continue
        if bn.running_mean is None or bn.running_var is None:
            raise ValueError(f"{name}: the BN after it has no running statistics to absorb α into")
        with torch.no_grad():
            a = q.scale(conv.weight).to(bn.running_var.dtype)
            mu, var, eps = bn.running_mean, bn.running_var, bn.eps
            new_var = (var + eps) / a ** 2 - eps
            bad = new_var < 0
            if bad.any():
                alt = var / a ** 2
                if bn.weight is None:
                    raise ValueError(f"{name}: cannot absorb α={a[bad].tolist()} into a BN without affine γ")
                fix = a * torch.sqrt(alt + eps) / torch.sqrt(var + eps)
                bn.weight[bad] *= fix[bad].to(bn.weight.dtype)
                new_var = torch.where(bad, alt, new_var)
            mu.div_(a)
            var.copy_(new_var)
        conv.weight_quantizer = quant.get("identity_ste_sign")
        changed.append(name)
    cfg = getattr(model, "onebit_config", None)
    if changed and isinstance(cfg, dict):
        cfg["weight"] = "identity_ste_sign"
        cfg.pop("weight_kwargs", None)
    return changed


def prepare_bn_retraining(model: nn.Module) -> list[str]:
    """Bi-Real stage 3 (§2.6 step 2): absorb α into BN, freeze everything but BN; returns the trainable names."""
    absorb_scale(model)
    return freeze_all_but_bn(model)


def freeze_all_but_bn(model: nn.Module) -> list[str]:
    """``requires_grad`` off for every parameter but BatchNorm's (the BN-retraining stage; also
    applied again when that stage is resumed: the flag is not part of a checkpoint). Returns the
    trainable names."""
    trainable = []
    bn_params = {id(p) for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
                 for p in m.parameters(recurse=False)}
    for n, p in model.named_parameters():
        p.requires_grad_(id(p) in bn_params)
        if id(p) in bn_params:
            trainable.append(n)
    return trainable
