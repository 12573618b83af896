"""BONN / PCNN kernel binarizer (Gu et al., ICCV 2019; methods.md §4.2, §4.5–4.6).

One learned **reconstruction vector** ``w ∈ R^{H·W}`` per layer (shared by every 2-D kernel of
the layer) projects the latent kernel ``k`` before binarisation::

    u   = w ∘ k                        (w broadcast over C_out and C_in)
    k̂   = m · sign(u)                  the binary code (``m`` = code magnitude, see below)
    K   = k̂ / w̄                        the kernel the convolution uses (w̄ = mean of all w entries)

so the forward pass is a true binary convolution followed by one per-layer scalar
``c = m / w̄`` (§4.5), and the backward pass is the hard-tanh STE evaluated on ``u = w∘k``
(§4.6, eq. 3.113)::

    ∂L/∂k = ∂L/∂k̂ ∘ 1[|w∘k| <= 1] ∘ w          ∂L/∂w = Σ_{i,n} ∂L/∂k̂ ∘ 1[|w∘k| <= 1] ∘ k

— the full ``w`` in the backward although the forward only uses its mean (§4.9 pitfall 3).
Both follow from autograd through ``u = w∘k`` and :func:`onebit.quant.sign.ste_sign`.

Options (every choice the spec leaves open):

* ``code_scale`` — the magnitude ``m`` of the binary code (§4.5 ambiguity):
  ``"one"`` (default: ``k̂ = ±1`` as eqs. 3.111/3.113, effective scale ``c = 1/w̄``),
  ``"mean_w"`` (Algorithm 5 line 5: ``k̂ = w̄·sign``, so ``c = 1``) or
  ``"mean_abs_k"`` (PCNN: ``k̂ = mean|k|·sign`` with one mean over the layer, ``c = mean|k|/w̄``).
  The effective kernel is ``c · sign(k)`` in every case; the choice changes the reconstruction
  target of the Bayesian kernel loss (:meth:`BonnKernelSign.code`) and the per-layer scale.
  With ±1 codes that target is ``|k| = 1/w̄ ≈ 1``, about 30× PyTorch-initialised kernels, so the
  kernel loss drives every latent weight outwards and (with ν = 1) freezes the signs; ``"mean_abs_k"``
  keeps it at the kernels' own scale, where the paper's λ = 1e-4 with a weak prior (ν = 1e-3) splits
  the kernels gradually into two modes (docs/benchmarks.md §7, twenty-second session).
* ``scale_grad`` — ``False`` (default): ``c`` is a constant for autograd, so ``w`` gets exactly
  the §4.6 gradient (through the STE only); ``True`` also back-propagates through ``1/w̄``
  (with BN after the conv this extra term is ≈ 0 anyway).
* ``clip`` — the STE window on ``|w∘k|`` (1, the paper's hard-tanh).
* ``recon_init`` — initial value of every entry of ``w`` (1.0: ``k̂ = sign(k)``, ``c = 1``, so an
  untrained BONN conv equals a plain sign conv; the book says "randomly", which only matters for
  ``w̄``, absorbed by BN).
* ``recon_lr_scale`` — ``w``'s learning rate relative to the recipe's (PCNN updates the
  projection with its own rate η₂, §4.2; its value is not given [?]). Default 0.01: ``w``'s
  gradient is a sum over all ``C_out·C_in`` kernels of the layer, and with the recipe's
  SGD 0.1 at full rate ``w̄`` grew by ≈ 2 per epoch in our WRN-22 runs, so ``|w∘k|`` left the
  STE window and the latent kernels stopped learning; 1.0 is plain joint SGD.
  :func:`onebit.optim.param_groups` reads it from the layer's ``lr_scale`` tag (:mod:`onebit.nn.tags`).
* ``recon_min`` — ``w`` is kept ``>= recon_min > 0`` by a constraint applied after every optimizer
  step (:mod:`onebit.nn.constraints`). Positive ``w`` makes ``sign(w∘k) = sign(k)``, which is what
  the exporter packs, and keeps the scale ``m/w̄`` positive. ``None`` switches the clamp off; the
  quantizer then refuses to :meth:`~BonnKernelSign.scale` (export) once any entry is ``<= 0``.

The quantizer is ``binary`` (±1 up to a per-layer scale), ``scaled`` (the exporter folds
:meth:`BonnKernelSign.scale` into the output transform, as for ``magnitude_aware_sign``) and
exports as ``"sign"``. ``w`` is stored flat (shape ``(H·W,)``): a rank-1 tensor, so the optimizer
helpers never apply weight decay to it (:func:`onebit.optim.param_groups`); :meth:`~BonnKernelSign.recon_matrix`
gives it as ``(H, W)``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .registry import Quantizer, register
from .sign import sign, ste_sign

CODE_SCALES = ("one", "mean_w", "mean_abs_k")


def _pair(k) -> tuple[int, int]:
    if isinstance(k, int):
        return (k, k)
    k = tuple(int(v) for v in k)
    if len(k) != 2:
        raise ValueError(f"kernel_size must be an int or a pair, got {k!r}")
    return k  # type: ignore[return-value]


@register("bonn_sign")
class BonnKernelSign(Quantizer):
    """``K = (m/w̄) · sign(w∘k)`` with the hard-tanh STE on ``w∘k`` (BONN/PCNN kernels, §4.5–4.6).

    Args:
        kernel_size: ``(H, W)`` of the kernels it binarizes (the size of ``w``).
        code_scale: ``"one"`` | ``"mean_w"`` | ``"mean_abs_k"`` — the code magnitude (module docstring).
        scale_grad: back-propagate through the forward scale ``m/w̄`` too (default False).
        clip: STE window ``1[|w∘k| <= clip]`` (default 1).
        recon_init: initial value of every entry of ``w`` (default 1).
        recon_min: lower bound of ``w`` kept by a post-step constraint (default 1e-3; None: off).
        recon_lr_scale: learning-rate factor of ``w`` (default 0.01; module docstring).
    """

    binary = True
    scaled = True
    export_as = "sign"

    def __init__(self, kernel_size=3, code_scale: str = "one", scale_grad: bool = False, clip: float = 1.0,
                 recon_init: float = 1.0, recon_min: float | None = 1e-3, recon_lr_scale: float = 0.01):
        super().__init__()
        if not (math.isfinite(recon_lr_scale) and recon_lr_scale >= 0):
            raise ValueError(f"recon_lr_scale must be a finite number >= 0, got {recon_lr_scale!r}")
        if code_scale not in CODE_SCALES:
            raise ValueError(f"unknown code_scale {code_scale!r}; use one of {CODE_SCALES}")
        if recon_min is not None and not recon_min > 0:
            raise ValueError(f"recon_min must be positive (or None), got {recon_min!r}")
        if not (math.isfinite(recon_init) and recon_init > 0):  # w̄ divides the codes (k̂/w̄ in the forward)
            raise ValueError(f"recon_init must be a finite number > 0, got {recon_init!r}")
        self.kernel_size = _pair(kernel_size)
        self.code_scale, self.scale_grad, self.clip = code_scale, bool(scale_grad), float(clip)
        self.recon_min = None if recon_min is None else float(recon_min)
        self.recon_init = float(recon_init)
        #: the reconstruction vector w, stored flat ``(H·W,)`` — :meth:`recon_matrix` gives ``(H, W)``
        self.recon = nn.Parameter(torch.full((math.prod(self.kernel_size),), self.recon_init))
        self.recon_lr_scale = float(recon_lr_scale)
        if self.recon_lr_scale != 1.0:
            from ..nn.tags import tag  # here, not at import: onebit.nn imports onebit.quant

            tag(self, "recon", lr_scale=self.recon_lr_scale)
        if self.recon_min is not None:
            from ..nn.constraints import Clip, constrain  # here, not at import: onebit.nn imports onebit.quant

            constrain(self, "recon", Clip(self.recon_min, math.inf))

    # -- pieces ------------------------------------------------------------------------------
    def recon_matrix(self) -> torch.Tensor:
        """``w`` shaped ``(H, W)`` (a view: gradients flow to the parameter)."""
        return self.recon.view(self.kernel_size)

    def mean_recon(self) -> torch.Tensor:
        """``w̄``: the mean of all entries of ``w`` (0-dim, not detached)."""
        return self.recon.mean()

    def magnitude(self, k: torch.Tensor) -> torch.Tensor:
        """The code magnitude ``m`` (0-dim, detached): 1, ``w̄`` or the layer's ``mean|k|``."""
        if self.code_scale == "one":
            return torch.ones((), dtype=k.dtype, device=k.device)
        if self.code_scale == "mean_w":
            return self.recon.detach().mean().to(k.dtype)
        return k.detach().abs().mean()

    def _check_shape(self, k: torch.Tensor) -> None:
        if k.dim() != 4 or tuple(k.shape[2:]) != self.kernel_size:
            raise ValueError(f"bonn_sign built for {self.kernel_size} kernels got a weight of shape {tuple(k.shape)}")

    def project(self, k: torch.Tensor) -> torch.Tensor:
        """``u = w ∘ k`` (w broadcast over output and input channels)."""
        self._check_shape(k)
        return self.recon_matrix().to(k.dtype) * k

    @torch.no_grad()
    def code(self, k: torch.Tensor) -> torch.Tensor:
        """The binary code ``k̂ = m · sign(w∘k)``, detached (the target of the kernel loss, §4.9 pitfall 1)."""
        return sign(self.project(k)) * self.magnitude(k)

    def scale_factor(self, k: torch.Tensor) -> torch.Tensor:
        """The per-layer forward scale ``c = m / w̄`` (0-dim; detached unless ``scale_grad``)."""
        wbar = self.mean_recon().to(k.dtype)
        if not self.scale_grad:
            wbar = wbar.detach()
        return self.magnitude(k) / wbar

    # -- quantizer API -----------------------------------------------------------------------
    def forward(self, k: torch.Tensor) -> torch.Tensor:
        """The kernel the convolution uses: ``(m/w̄) · sign(w∘k)``, STE ``1[|w∘k| <= clip]`` on ``w∘k``."""
        return ste_sign(self.project(k), self.clip) * self.scale_factor(k)

    def scale(self, k: torch.Tensor) -> torch.Tensor:
        """The factor the exporter folds, per output channel (1-D, length ``k.shape[0]``): ``m/w̄`` repeated.

        The deploy form is ``sign(k)`` (bit-packed) times this scale, exact while ``w > 0``
        (then ``sign(w∘k) = sign(k)``); raises ``ValueError`` otherwise.
        """
        with torch.no_grad():
            if (self.recon <= 0).any():
                raise ValueError("bonn_sign: the reconstruction vector has entries <= 0, so sign(w∘k) differs "
                                 "from sign(k) and the layer has no 'sign(k) × scale' deploy form "
                                 "(train with recon_min > 0)")
            c = self.magnitude(k) / self.recon.mean().to(k.dtype)
            return c.reshape(1).expand(k.shape[0]).clone()

    def config(self) -> dict:
        return {"name": self.name, "kernel_size": list(self.kernel_size), "code_scale": self.code_scale,
                "scale_grad": self.scale_grad, "clip": self.clip, "recon_init": self.recon_init,
                "recon_min": self.recon_min, "recon_lr_scale": self.recon_lr_scale}
