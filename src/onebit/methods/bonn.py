"""BONN (Gu et al., ICCV 2019; methods.md §4): recipes as data and the training hook.

The hook
--------
BONN adds ``L_B = L_kernel + L_feature`` (:mod:`onebit.losses.bayes`) to the cross-entropy and
updates the class centers after each optimizer step. Everything it needs is on the model
(``model.bayes``: λ, ν, θ and switches, set from the recipe's ``model_kwargs``; the priors' μ, σ
and centers are model parameters/buffers, so they are optimized, checkpointed and resumed with the
model). The trainer needs four lines::

    hook = bonn.hook_for(model)                 # after build_model; None for non-BONN models
    ...                                         # per step, after the forward `out = model(x)`:
    loss = loss_fn(out.float(), y)
    if hook is not None:
        loss = loss + hook.extra_loss(y, epoch=epoch)
    ... loss.backward(); optimizer.step()
    if hook is not None:
        hook.after_step(y)                      # center update (no gradient, not the optimizer)

:class:`BonnHook` captures the features entering the classifier with a forward pre-hook on the
layer that owns the :class:`~onebit.losses.bayes.FeaturePrior` (``model.fc``), in training mode
only, so the trainer's forward call does not change. ``extra_loss`` returns a 0-dim tensor (0 when
both losses are off: the λ = θ = 0 baseline gets exactly the cross-entropy gradients);
``hook.last`` holds the last kernel/feature loss values for logging (detached 0-dim tensors: reading
them is the caller's choice, so a GPU step needs no host sync).

Parameters the optimizer must see: μ, σ (``conv.prior``), the feature σ (``fc.prior``) and ``w``
(``conv.weight_quantizer.recon``) are ordinary parameters of the model; all are rank-1, so
:func:`onebit.optim.param_groups` never weight-decays them; the centers are buffers (never
optimized, never decayed, §4.9 pitfall 9). μ, σ and the feature σ only get a gradient from the
Bayesian losses; they are tagged ``loss_only`` (:func:`loss_only_parameters`).

Recipes (§4.7)
--------------
CIFAR (WRN-22/40): 200 epochs and SGD [V]; lr, schedule, batch size and weight decay are not
given [?] — SGD lr 0.1, momentum 0.9, weight decay 5e-4 (real layers only: binary latent weights
are never decayed), batch 128, cosine to 0, crop+flip, mean/std normalisation (the usual CIFAR
WRN recipe). ImageNet (ResNet-18): ≈ 70 epochs, SGD [V/R]; lr 0.1, momentum 0.9, wd 1e-4,
batch 256, cosine [?]. λ, θ per recipe from the paper's Table 1 (:data:`PAPER_TABLE1`); ν = 1 [?].
The trainer's SGD is Nesterov (the paper says only "SGD").
"""

from __future__ import annotations

import torch
from torch import nn

from ..losses.bayes import BayesConfig, feature_prior, kernel_priors
from ..nn.tags import tagged
from .recipe import Recipe, register_recipe

# ---------------------------------------------------------------------------------------------
# the hook


class BonnHook:
    """The BONN training hook of one model (see the module docstring).

    Args:
        model: a BONN model (``model.bayes`` is a :class:`~onebit.losses.bayes.BayesConfig`).
        config: override ``model.bayes`` (e.g. for an ablation without rebuilding the model).
    """

    def __init__(self, model: nn.Module, config: BayesConfig | None = None):
        cfg = config if config is not None else getattr(model, "bayes", None)
        if not isinstance(cfg, BayesConfig):
            raise ValueError("BonnHook needs a BONN model (model.bayes) or an explicit BayesConfig")
        self.model, self.config = model, cfg
        self.features: torch.Tensor | None = None
        self.last: dict[str, float] = {"kernel": 0.0, "feature": 0.0}
        # distributed training (set by the trainer): a sum over ranks for the center update, and the
        # number of ranks (a "sum"-reduced feature loss is scaled by it, as DDP averages gradients)
        self.reduce = None
        self.world_size = 1
        self._handle = None
        self._convs = [m for _, m in kernel_priors(model)]
        fp = feature_prior(model)
        self._feature_prior = fp[1] if fp is not None else None
        if cfg.feature_on:
            if fp is None:
                raise ValueError("the feature loss is on (theta > 0) but the model has no FeaturePrior")
            self._handle = fp[0].register_forward_pre_hook(self._capture)
        if cfg.kernel_on and not self._convs:
            raise ValueError("the kernel loss is on (lam > 0) but the model has no BONN conv with a kernel prior")

    def _capture(self, module: nn.Module, args) -> None:
        if module.training:
            self.features = args[0]

    def extra_loss(self, targets: torch.Tensor, *, epoch: int = 0,
                   features: torch.Tensor | None = None, feature_loss: bool | None = None) -> torch.Tensor:
        """``L_B`` for this step: the kernel loss (if on) + the feature loss (if on and ``epoch`` has
        reached ``feature_start_epoch``; ``feature_loss`` given: the caller's decision on the epoch,
        still only if the loss is on). ``features`` defaults to those captured by the last
        training-mode forward pass."""
        cfg = self.config
        loss = zero = torch.zeros((), device=targets.device)
        self.last = {"kernel": zero, "feature": zero}
        if cfg.kernel_on:
            lk = 0.5 * cfg.lam * sum(c.kernel_loss(cfg.nu, normalize_prior_grad=cfg.normalize_prior_grad)
                                     for c in self._convs)  # = losses.bayes.model_kernel_loss
            self.last["kernel"] = lk.detach()
            loss = loss + lk
        if cfg.feature_active(epoch) if feature_loss is None else (feature_loss and cfg.feature_on):
            f = self._features(features)
            lf = 0.5 * cfg.theta * self._feature_prior.loss(f, targets, reduction=cfg.feature_reduction)
            if cfg.feature_reduction == "sum" and self.world_size > 1:
                lf = lf * self.world_size
            self.last["feature"] = lf.detach()
            loss = loss + lf
        return loss

    @torch.no_grad()
    def after_step(self, targets: torch.Tensor, *, features: torch.Tensor | None = None) -> None:
        """Update the class centers by the center-loss rule (when the feature loss is on, from epoch 0)."""
        if self.config.feature_on:
            self._feature_prior.update_centers(self._features(features), targets, self.config.center_alpha,
                                               reduce=self.reduce)
        self.features = None

    def _features(self, features: torch.Tensor | None) -> torch.Tensor:
        f = features if features is not None else self.features
        if f is None:
            raise RuntimeError("BonnHook: no features — run a training-mode forward pass of the model first "
                               "(or pass features=)")
        return f

    def remove(self) -> None:
        """Detach the feature capture from the model."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None


def hook_for(model: nn.Module) -> BonnHook | None:
    """The BONN hook of ``model``, or None if it is not a BONN model (no ``model.bayes``)."""
    return BonnHook(model) if isinstance(getattr(model, "bayes", None), BayesConfig) else None


def loss_only_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Parameters that only the Bayesian losses train (μ, σ, feature σ): no gradient from the cross-entropy."""
    return [p for p, on in tagged(model, "loss_only") if on]


# ---------------------------------------------------------------------------------------------
# recipes

#: ICCV Table 1 (= book Table 3.4): accuracy % by (λ, θ) for WRN-22/40 on CIFAR-10/100 [V]
PAPER_TABLE1: dict[tuple[float, float], dict[str, float]] = {
    (1e-3, 0.0): {"wrn22-cifar10": 85.82, "wrn22-cifar100": 59.32, "wrn40-cifar10": 85.79, "wrn40-cifar100": 58.84},
    (1e-4, 0.0): {"wrn22-cifar10": 86.23, "wrn22-cifar100": 59.77, "wrn40-cifar10": 87.12, "wrn40-cifar100": 60.32},
    (1e-5, 0.0): {"wrn22-cifar10": 85.74, "wrn22-cifar100": 57.73, "wrn40-cifar10": 86.22, "wrn40-cifar100": 59.93},
    (0.0, 0.0): {"wrn22-cifar10": 84.97, "wrn22-cifar100": 55.38, "wrn40-cifar10": 84.61, "wrn40-cifar100": 56.03},
    (1e-4, 1e-2): {"wrn22-cifar10": 87.34, "wrn22-cifar100": 60.31, "wrn40-cifar10": 87.23, "wrn40-cifar100": 60.83},
    (1e-4, 1e-3): {"wrn22-cifar10": 86.49, "wrn22-cifar100": 60.37, "wrn40-cifar10": 87.18, "wrn40-cifar100": 61.25},
    (1e-4, 1e-4): {"wrn22-cifar10": 86.27, "wrn22-cifar100": 60.91, "wrn40-cifar10": 87.41, "wrn40-cifar100": 61.03},
}


def cifar_recipe(model: str, lam: float, theta: float, *, data: str = "cifar10", nu: float = 1.0,
                 description: str = "", **model_kwargs) -> Recipe:
    """A BONN CIFAR recipe for any (λ, θ) — e.g. one row of :data:`PAPER_TABLE1`."""
    return Recipe(model=model, data=data, model_kwargs={"lam": lam, "nu": nu, "theta": theta, **model_kwargs},
                  loss="ce", optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4, lr_schedule="cosine",
                  lr_final=0.0, epochs=200, batch_size=128, val_size=5000, augment=True, normalize="meanstd",
                  description=description or f"BONN {model} on {data}: lam={lam:g}, theta={theta:g}, nu={nu:g}")


def imagenet_recipe(model: str, lam: float, theta: float, *, nu: float = 1.0, description: str = "",
                    **model_kwargs) -> Recipe:
    return Recipe(model=model, data="imagefolder",
                  model_kwargs={"lam": lam, "nu": nu, "theta": theta, **model_kwargs},
                  loss="ce", optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=1e-4, lr_schedule="cosine",
                  lr_final=0.0, epochs=70, batch_size=256, val_size=10000, augment=True, normalize="meanstd",
                  description=description or f"BONN {model} on ImageNet: lam={lam:g}, theta={theta:g}, nu={nu:g}")


def _paper(key: str, lam: float, theta: float) -> str:
    acc = PAPER_TABLE1[(lam, theta)][key]
    return f"{acc:.2f} % in the paper's Table 1"


RECIPES: dict[str, Recipe] = {
    "bonn-wrn22": cifar_recipe(
        "bonn-wrn22", 1e-4, 1e-2, description="BONN WRN-22 CIFAR-10, kernel + feature losses, lam=1e-4, theta=1e-2 "
        f"({_paper('wrn22-cifar10', 1e-4, 1e-2)}); 200 epochs SGD; lr/batch/wd/schedule [?]"),
    "bonn-wrn22-kernel": cifar_recipe(
        "bonn-wrn22", 1e-4, 0.0, description="BONN WRN-22 CIFAR-10, kernel loss only, lam=1e-4, theta=0 "
        f"({_paper('wrn22-cifar10', 1e-4, 0.0)})"),
    "bonn-wrn22-baseline": cifar_recipe(
        "bonn-wrn22", 0.0, 0.0, description="BONN WRN-22 CIFAR-10 baseline, lam=theta=0: the same 1-bit net "
        f"without Bayesian losses ({_paper('wrn22-cifar10', 0.0, 0.0)})"),
    "bonn-wrn40": cifar_recipe(
        "bonn-wrn40", 1e-4, 1e-4, description="BONN WRN-40 CIFAR-10, kernel + feature losses, lam=1e-4, theta=1e-4 "
        f"({_paper('wrn40-cifar10', 1e-4, 1e-4)})"),
    "bonn-wrn40-kernel": cifar_recipe(
        "bonn-wrn40", 1e-4, 0.0, description="BONN WRN-40 CIFAR-10, kernel loss only, lam=1e-4, theta=0 "
        f"({_paper('wrn40-cifar10', 1e-4, 0.0)})"),
    "bonn-wrn40-baseline": cifar_recipe(
        "bonn-wrn40", 0.0, 0.0, description="BONN WRN-40 CIFAR-10 baseline, lam=theta=0 "
        f"({_paper('wrn40-cifar10', 0.0, 0.0)})"),
    "bonn-resnet18": imagenet_recipe(
        "bonn-resnet18", 1e-4, 1e-3, description="BONN ResNet-18 ImageNet, lam=1e-4, theta=1e-3 [?] "
        "(paper: 59.3 / 81.6 top-1/top-5 [R]); ~70 epochs SGD; lr/batch/wd/schedule [?]"),
    "bonn-resnet18-baseline": imagenet_recipe(
        "bonn-resnet18", 0.0, 0.0, description="BONN ResNet-18 ImageNet baseline, lam=theta=0"),
}
for _name, _recipe in RECIPES.items():
    register_recipe(_name, _recipe)
