"""BONN's Bayesian losses (Gu et al., ICCV 2019; methods.md §4.3–4.6, §4.9).

``L_B = L_kernel + L_feature`` is added to the cross-entropy ``L_S``.

**Bayesian kernel loss** (§4.4), per binary conv layer ``l`` with latent kernel ``k``
(``C_out × C_in × H × W``), reconstruction vector ``w`` (``H × W``), binary code ``k̂`` and one
prior pair ``(μ_i, σ_i)`` per output channel::

    L_kernel = (λ/2) Σ_l Σ_i Σ_n { ‖k̂_{i,n} − w∘k_{i,n}‖²
                                   + ν Σ_{p: k≥0} (k_p − μ_i)²/σ_i² + ν Σ_{p: k<0} (k_p + μ_i)²/σ_i²
                                   + ν H·W·log σ_i² }

* **summed**, not averaged, over layers, output and input channels and kernel entries — the
  published λ = 1e−4 is calibrated for this form (§4.9 pitfall 6);
* ``k̂`` is detached (the asynchronous update, pitfall 1); the mode of each entry is the current
  sign of ``k`` (``k ≥ 0`` → the ``+μ`` mode; recomputed at every call, pitfall 4);
* with ``normalize_prior_grad`` (default, pitfall 5) the gradients reaching μ and σ are divided
  by ``C_in·H·W`` — the paper's δμ, δσ (§4.6) are the *mean* of the per-entry gradients — while
  the loss value and the gradients to ``k`` and ``w`` are untouched.

**Bayesian feature loss** (§4.4) on the features ``f`` entering the final FC layer, with per-class
centers ``c`` and per-class, per-dimension spreads ``σ``::

    L_feature = (θ/2) Σ_m { ‖f_m − c_{y_m}‖² + Σ_n [ (f_{m,n} − c_{y_m,n})² / σ²_{y_m,n} + log σ²_{y_m,n} ] }

* the centers are buffers, **not** trained by the optimizer (and never weight-decayed, pitfall 9):
  :meth:`FeaturePrior.update_centers` applies the center-loss rule of Wen et al. (2016),
  ``Δc_j = Σ_i 1[y_i=j](c_j − f_i) / (1 + Σ_i 1[y_i=j])``, ``c_j ← c_j − α Δc_j``; inside the loss
  the centers are constants, so ``f`` receives ``θ[(f − c) + σ⁻²(f − c)]`` and σ receives
  ``θ[−σ⁻³(f − c)² + σ⁻¹]`` (per sample; stationary point: the class-wise variance);
* ``reduction="mean"`` (default) divides the sum over samples by the batch size (what Wen et al.'s
  center-loss code does, so θ does not depend on the batch size); ``"sum"`` is the formula as
  printed. [?] the paper does not say which.

The prior parameters live in small modules owned by the layers they regularise:
:class:`KernelPrior` (μ, σ per output channel) as ``conv.prior`` of a BONN conv, and
:class:`FeaturePrior` (centers, σ) as ``fc.prior`` of the classifier. Neither is ever called in
the forward pass, so accounting (:func:`onebit.analysis.summary`) and the exporter ignore them.
Their parameters are tagged ``loss_only`` (:mod:`onebit.nn.tags`: only the Bayesian losses give
them a gradient).

σ parameterisation (``sigma_param``, both priors): ``"log"`` (default; σ = exp ρ: always
positive, and plain SGD on ρ is stable at any σ, whereas SGD on σ itself diverges once
σ² < η·λν — the stationary points are the same), ``"softplus"`` (σ = softplus ρ) or ``"direct"``
(σ is the parameter, the paper's update, kept ``>= sigma_min`` by a post-step clamp). μ is a direct
parameter kept ``>= mu_min > 0`` by a post-step clamp (pitfall 7).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from ..nn.constraints import Clip, constrain
from ..nn.tags import tag

SIGMA_PARAMS = ("log", "softplus", "direct")
PRIOR_INITS = ("abs", "moments")
REDUCTIONS = ("mean", "sum")


# ---------------------------------------------------------------------------------------------
# configuration


@dataclass
class BayesConfig:
    """The Bayesian-loss switches and weights of a BONN model (stored as ``model.bayes``).

    Attributes:
        lam: λ, weight of the kernel loss (paper's best: 1e-4, for the summed loss).
        nu: ν, weight of the prior terms inside the kernel loss (not stated in the paper [?];
            1 gives the reconstruction and the prior terms equal weight per entry at init).
        theta: θ, weight of the feature loss (paper: 1e-2, 1e-3, 1e-4 all help).
        kernel_loss, feature_loss: switches (a loss is on iff its switch is on and its weight > 0).
        feature_start_epoch: the feature loss is added from this epoch on (0: from the start) —
            the book updates the centers "in the fine-tuning process" [?]; centers are updated
            from epoch 0 regardless, so they are warm when the loss starts.
        feature_reduction: ``"mean"`` over the batch (default) or ``"sum"``.
        center_alpha: α of the center-loss update (Wen et al.: 0.5).
        normalize_prior_grad: divide the μ/σ gradients by C_in·H·W (§4.6; default True).
    """

    lam: float = 1e-4
    nu: float = 1.0
    theta: float = 1e-2
    kernel_loss: bool = True
    feature_loss: bool = True
    feature_start_epoch: int = 0
    feature_reduction: str = "mean"
    center_alpha: float = 0.5
    normalize_prior_grad: bool = True

    def __post_init__(self):
        for name in ("lam", "nu", "theta", "center_alpha"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"BONN {name} must be a finite number >= 0, got {v!r}")
        if self.feature_reduction not in REDUCTIONS:
            raise ValueError(f"unknown feature_reduction {self.feature_reduction!r}; use one of {REDUCTIONS}")
        if int(self.feature_start_epoch) != self.feature_start_epoch or self.feature_start_epoch < 0:
            raise ValueError(f"feature_start_epoch must be an integer >= 0, got {self.feature_start_epoch!r}")

    @property
    def kernel_on(self) -> bool:
        return bool(self.kernel_loss) and self.lam > 0

    @property
    def feature_on(self) -> bool:
        return bool(self.feature_loss) and self.theta > 0

    def feature_active(self, epoch: int) -> bool:
        """Whether the feature loss is added at ``epoch`` (0-based)."""
        return self.feature_on and epoch >= self.feature_start_epoch

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))


# ---------------------------------------------------------------------------------------------
# σ parameterisations


def _sigma_from_raw(raw: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "log":
        return raw.exp()
    if kind == "softplus":
        return F.softplus(raw)
    return raw


def _raw_from_sigma(sigma: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "log":
        return sigma.log()
    if kind == "softplus":  # softplus⁻¹(s) = s + log(1 − e^{−s})
        return sigma + torch.log(-torch.expm1(-sigma))
    return sigma


def _check_sigma_param(kind: str) -> None:
    if kind not in SIGMA_PARAMS:
        raise ValueError(f"unknown sigma_param {kind!r}; use one of {SIGMA_PARAMS}")


def _loss_only(module: nn.Module, name: str) -> nn.Parameter:
    return tag(module, name, loss_only=True)


def _add_sigma(module: nn.Module, n: int, sigma_param: str, sigma_min: float) -> None:
    """Give ``module`` the loss-only parameter ``sigma_raw`` of ``n`` σ's, all 1 at start; the
    "direct" parameterisation is kept ≥ ``sigma_min`` by a clip after every step."""
    module.sigma_raw = nn.Parameter(_raw_from_sigma(torch.ones(n), sigma_param))
    _loss_only(module, "sigma_raw")
    if sigma_param == "direct":
        constrain(module, "sigma_raw", Clip(float(sigma_min), math.inf))


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by ``s`` (rescales one input's gradient only)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, s: float) -> torch.Tensor:
        ctx.s = s
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        return g * ctx.s, None


def scale_grad(x: torch.Tensor, s: float) -> torch.Tensor:
    """``x`` in the forward pass; its gradient times ``s`` in the backward pass."""
    return _ScaleGrad.apply(x, s) if s != 1.0 else x


# ---------------------------------------------------------------------------------------------
# priors (parameters)


class KernelPrior(nn.Module):
    """The two-mode Gaussian prior of one conv's kernels: modes ``±μ_i``, spread ``σ_i`` per output channel.

    Args:
        channels: C_out.
        sigma_param: ``"log"`` (default) | ``"softplus"`` | ``"direct"`` (module docstring).
        mu_min, sigma_min: lower bounds kept by post-step clamps (μ always; σ when ``"direct"``).
    """

    def __init__(self, channels: int, sigma_param: str = "log", mu_min: float = 1e-8, sigma_min: float = 1e-8):
        super().__init__()
        _check_sigma_param(sigma_param)
        self.sigma_param = sigma_param
        self.mu = nn.Parameter(torch.ones(channels))
        _loss_only(self, "mu")
        constrain(self, "mu", Clip(float(mu_min), math.inf))
        _add_sigma(self, channels, sigma_param, sigma_min)

    @property
    def sigma(self) -> torch.Tensor:
        """σ (per output channel), differentiable w.r.t. the raw parameter."""
        return _sigma_from_raw(self.sigma_raw, self.sigma_param)

    @torch.no_grad()
    def set(self, mu: torch.Tensor | float | None = None, sigma: torch.Tensor | float | None = None) -> None:
        """Write μ and/or σ (broadcast to the channel count)."""
        if mu is not None:
            self.mu.copy_(torch.as_tensor(mu, dtype=self.mu.dtype).expand_as(self.mu))
        if sigma is not None:
            s = torch.as_tensor(sigma, dtype=self.sigma_raw.dtype).expand_as(self.sigma_raw)
            self.sigma_raw.copy_(_raw_from_sigma(s, self.sigma_param))

    @torch.no_grad()
    def reset_from(self, kernel: torch.Tensor, how: str = "abs") -> None:
        """Initialise from a kernel (§4.6, "μ, σ from the mean and variance of k" [?]).

        ``"abs"`` (default): ``μ_i = mean|k_i|``, ``σ_i = std|k_i|`` — the maximum-likelihood fit of
        the two-mode prior with modes assigned by sign (so the σ-gradient starts at 0);
        ``"moments"``: ``μ_i = mean|k_i|``, ``σ_i = std(k_i)`` (the literal "variance of k").
        A channel whose spread is below a tenth of the layer's median spread (a constant or zero
        channel: its prior's stiffness ν/σ² would be huge) gets that tenth; spreads and means
        stay at least 1e-8.
        """
        if how not in PRIOR_INITS:
            raise ValueError(f"unknown prior init {how!r}; use one of {PRIOR_INITS}")
        k = kernel.detach().flatten(1).to(self.mu.dtype)
        mu = k.abs().mean(1)
        sigma = (k.abs() if how == "abs" else k).std(1, unbiased=False)
        if sigma.numel():  # tensor arithmetic, no .item(): a model is also built on the meta device (loading)
            sigma = torch.maximum(sigma, (0.1 * sigma.median()).clamp_min(1e-8))
        self.set(mu.clamp_min(1e-8), sigma.clamp_min(1e-8))

    def extra_repr(self) -> str:
        return f"channels={self.mu.numel()}, sigma_param={self.sigma_param}"


class FeaturePrior(nn.Module):
    """Class-conditional Gaussian of the features entering the classifier: ``N(c_m, diag σ²_m)``.

    ``centers`` is a buffer ``(num_classes, dim)`` (zeros at start), updated by
    :meth:`update_centers`; σ is a parameter (1 at start), stored flat ``(num_classes·dim,)`` so
    the optimizer helpers never weight-decay it; :attr:`sigma` gives it as ``(num_classes, dim)``.
    """

    def __init__(self, num_classes: int, dim: int, sigma_param: str = "log", sigma_min: float = 1e-8):
        super().__init__()
        _check_sigma_param(sigma_param)
        self.num_classes, self.dim, self.sigma_param = int(num_classes), int(dim), sigma_param
        self.register_buffer("centers", torch.zeros(self.num_classes, self.dim))
        _add_sigma(self, self.num_classes * self.dim, sigma_param, sigma_min)

    @property
    def sigma(self) -> torch.Tensor:
        return _sigma_from_raw(self.sigma_raw, self.sigma_param).view(self.num_classes, self.dim)

    @torch.no_grad()
    def set_sigma(self, sigma: torch.Tensor | float) -> None:
        s = torch.as_tensor(sigma, dtype=self.sigma_raw.dtype).expand(self.num_classes, self.dim).reshape(-1)
        self.sigma_raw.copy_(_raw_from_sigma(s, self.sigma_param))

    def loss(self, features: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        """The bracket of the feature loss (without θ/2), see :func:`bayes_feature_loss`."""
        return bayes_feature_loss(features, targets, self.centers, self.sigma, reduction=reduction)

    @torch.no_grad()
    def update_centers(self, features: torch.Tensor, targets: torch.Tensor, alpha: float = 0.5,
                       reduce=None) -> None:
        """Center-loss update (Wen et al. 2016), in place: see :func:`center_update`."""
        self.centers.copy_(center_update(self.centers, features.detach().to(self.centers.dtype), targets, alpha,
                                         reduce=reduce))

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, dim={self.dim}, sigma_param={self.sigma_param}"


# ---------------------------------------------------------------------------------------------
# the losses (functional)


def bayes_kernel_loss(k: torch.Tensor, w: torch.Tensor, khat: torch.Tensor, mu: torch.Tensor,
                      sigma: torch.Tensor, nu: float, *, normalize_prior_grad: bool = True) -> torch.Tensor:
    """One layer's bracket of the §4.4 kernel loss, **summed**, without the factor λ/2.

    Args:
        k: latent kernel ``(C_out, C_in, H, W)``.
        w: reconstruction vector, ``(H, W)`` (or anything broadcasting against ``k``).
        khat: the binary code (detached here whatever is passed).
        mu, sigma: ``(C_out,)`` prior parameters (σ > 0).
        nu: ν.
        normalize_prior_grad: divide the gradients reaching ``mu`` and ``sigma`` by ``C_in·H·W``.

    Returns ``Σ ‖k̂ − w∘k‖² + ν Σ (|k| − μ)²/σ² + ν C_in·H·W Σ_i log σ_i²`` (0-dim). For the
    two-mode prior ``(k − μ)`` on ``k ≥ 0`` and ``(k + μ)`` on ``k < 0`` are written ``±(|k| − μ)``.
    """
    if k.dim() != 4:
        raise ValueError(f"the kernel loss expects a (C_out, C_in, H, W) kernel, got shape {tuple(k.shape)}")
    per_channel = k[0].numel()  # C_in·H·W
    if normalize_prior_grad:
        mu, sigma = scale_grad(mu, 1.0 / per_channel), scale_grad(sigma, 1.0 / per_channel)
    recon = (khat.detach() - w * k).pow(2).sum()
    pos = (k >= 0).detach()  # mode assignment by the current sign (not differentiated)
    m = mu.view(-1, 1, 1, 1)
    dev = torch.where(pos, k - m, k + m)
    s2 = sigma.view(-1, 1, 1, 1).pow(2)
    prior = (dev.pow(2) / s2).sum()
    logdet = per_channel * torch.log(sigma.pow(2)).sum()
    return recon + nu * (prior + logdet)


def bayes_feature_loss(features: torch.Tensor, targets: torch.Tensor, centers: torch.Tensor,
                       sigma: torch.Tensor, *, reduction: str = "mean") -> torch.Tensor:
    """The bracket of the §4.4 feature loss, without the factor θ/2.

    ``Σ_m ‖f_m − c_{y_m}‖² + Σ_{m,n} [(f − c)²/σ² + log σ²]`` over the batch (``"sum"``) or that
    divided by the batch size (``"mean"``). ``centers`` are treated as constants (detached).
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"unknown reduction {reduction!r}; use one of {REDUCTIONS}")
    if features.dim() != 2:
        features = features.flatten(1)
    f = features.float() if features.dtype in (torch.float16, torch.bfloat16) else features
    c = centers.detach()[targets].to(f.dtype)
    s = sigma[targets].to(f.dtype)
    d2 = (f - c).pow(2)
    total = d2.sum() + (d2 / s.pow(2) + torch.log(s.pow(2))).sum()
    return total / max(len(targets), 1) if reduction == "mean" else total


@torch.no_grad()
def center_update(centers: torch.Tensor, features: torch.Tensor, targets: torch.Tensor,
                  alpha: float = 0.5, reduce=None) -> torch.Tensor:
    """New centers by the center-loss rule (Wen et al. 2016, Algorithm 1).

    ``Δc_j = Σ_i 1[y_i = j](c_j − f_i) / (1 + Σ_i 1[y_i = j])`` and ``c_j − α Δc_j`` (classes absent
    from the batch are unchanged). Returns a new tensor. ``reduce`` (distributed training: a sum
    over all ranks) is applied to the per-class counts and feature sums, so every rank computes the
    update of the global batch.
    """
    f = features.detach().flatten(1).to(centers.dtype)
    n = torch.zeros(centers.shape[0], dtype=centers.dtype, device=centers.device)
    n.index_add_(0, targets, torch.ones_like(targets, dtype=centers.dtype))
    fsum = torch.zeros_like(centers).index_add_(0, targets, f)
    if reduce is not None:
        both = reduce(torch.cat([n[:, None], fsum], 1))
        n, fsum = both[:, 0], both[:, 1:]
    delta = (n[:, None] * centers - fsum) / (1.0 + n[:, None])
    return centers - alpha * delta


# ---------------------------------------------------------------------------------------------
# model-level sums


def kernel_priors(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, layer) of every layer with a :class:`KernelPrior` (``layer.prior``) — BONN convs."""
    return [(n, m) for n, m in model.named_modules() if isinstance(getattr(m, "prior", None), KernelPrior)]


def feature_prior(model: nn.Module) -> tuple[nn.Module, FeaturePrior] | None:
    """(layer, prior) of the layer whose *input* carries a :class:`FeaturePrior` (the classifier), or None."""
    found = [(m, m.prior) for m in model.modules() if isinstance(getattr(m, "prior", None), FeaturePrior)]
    if len(found) > 1:
        raise ValueError("the model has more than one FeaturePrior")
    return found[0] if found else None


def model_kernel_loss(model: nn.Module, lam: float, nu: float, *, normalize_prior_grad: bool = True) -> torch.Tensor:
    """``(λ/2) Σ_l`` of :func:`bayes_kernel_loss` over every BONN conv of ``model`` (0-dim; 0 if none).

    Each layer provides its own bracket through ``layer.kernel_loss(nu)`` (``k`` = ``layer.weight``,
    ``w`` and ``k̂`` from its ``bonn_sign`` weight quantizer, μ and σ from ``layer.prior``).
    """
    total = None
    for _, layer in kernel_priors(model):
        term = layer.kernel_loss(nu, normalize_prior_grad=normalize_prior_grad)
        total = term if total is None else total + term
    if total is None:
        p = next(model.parameters(), None)
        return torch.zeros((), device=p.device if p is not None else None)
    return 0.5 * lam * total
