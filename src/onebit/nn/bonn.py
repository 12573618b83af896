"""The BONN binary convolution (Gu et al., ICCV 2019; methods.md §4.5–4.6).

``BonnConv2d`` is a :class:`~onebit.nn.BinaryConv2d` whose weight quantizer is
:class:`~onebit.quant.bonn.BonnKernelSign` (``"bonn_sign"``)::

    y = conv(pad(q_in(x)), sign(w∘k)) · (m / w̄)

* ``q_in``: binary activations, ``"ste_sign"`` by default (sign with the hard-tanh STE; the book
  names no activation surrogate, §4.5 step 2 [?]);
* the kernel: ``sign(w∘k)`` with the hard-tanh STE on ``w∘k`` and one learned reconstruction
  vector ``w`` per layer (``layer.weight_quantizer.recon``); the forward scales by ``m/w̄`` (its
  mean), the backward uses the full ``w`` (§4.9 pitfalls 2–3);
* ``layer.prior``: the :class:`~onebit.losses.bayes.KernelPrior` (μ, σ per output channel) of the
  Bayesian kernel loss, initialised from the kernel (``prior_init``), used only by that loss.

Existing tooling reads it as any binary conv: ``input_quantizer`` / ``weight_quantizer`` are
binary, the weight quantizer is ``scaled`` and its ``scale(k)`` is the per-layer factor ``m/w̄``
repeated per output channel (the exporter folds it into the output transform; the deployed layer
is ``sign(k)`` bit-packed, exact because ``w`` is kept positive). No latent-weight clipping (the
STE window on ``w∘k`` plays that role), no bias (a BN follows).
"""

from __future__ import annotations

import math

import torch

from .. import quant
from ..losses.bayes import KernelPrior, bayes_kernel_loss
from ..quant.bonn import BonnKernelSign
from .binary import BinaryConv2d


class BonnConv2d(BinaryConv2d):
    """Binary conv with BONN kernels ``(m/w̄)·sign(w∘k)`` and a two-mode kernel prior (see the module docstring).

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, groups: as ``nn.Conv2d``.
        input_quantizer: activation binarizer spec (default ``"ste_sign"``).
        code_scale, scale_grad, clip, recon_init, recon_min, recon_lr_scale: options of
            :class:`~onebit.quant.bonn.BonnKernelSign` (defaults ``"one"``, False, 1.0, 1.0, 1e-3, 0.01).
        prior: create the kernel prior (μ, σ) — default True.
        sigma_param: σ parameterisation of the prior, ``"log"`` (default) | ``"softplus"`` | ``"direct"``.
        prior_init: ``"abs"`` (μ = mean|k|, σ = std|k| per output channel; default) or ``"moments"``.
        pad_value: border value of the binarized input (0 = zero padding, ±1 = one-padding).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = False, *, input_quantizer: quant.QuantizerSpec = "ste_sign",
                 code_scale: str = "one", scale_grad: bool = False, clip: float = 1.0, recon_init: float = 1.0,
                 recon_min: float | None = 1e-3, recon_lr_scale: float = 0.01, prior: bool = True, sigma_param: str = "log",
                 prior_init: str = "abs", pad_value: float = 0.0, init: str = "default", device=None, dtype=None):
        ks = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
        wq = BonnKernelSign(ks, code_scale=code_scale, scale_grad=scale_grad, clip=clip,
                            recon_init=recon_init, recon_min=recon_min, recon_lr_scale=recon_lr_scale)
        super().__init__(in_channels, out_channels, ks, stride=stride, padding=padding, dilation=dilation,
                         groups=groups, bias=bias, input_quantizer=input_quantizer, weight_quantizer=wq,
                         scale="none", clip_weights=False, pad_value=pad_value, init=init,
                         device=device, dtype=dtype)
        self.prior_init = prior_init
        if prior:
            self.prior = KernelPrior(out_channels, sigma_param=sigma_param)
            self.reset_prior()
        else:
            self.prior = None

    def quantized_weight(self) -> torch.Tensor:
        """``(m/w̄)·sign(w∘k)``. The quantizer's ``forward`` is called directly (not through ``__call__``)
        so that accounting hooks do not count the training-only vector ``w`` as a deployed tensor:
        what is deployed is the folded scale ``m/w̄``, which accounting counts as a per-channel scale."""
        return self.weight_quantizer.forward(self.weight)

    @torch.no_grad()
    def reset_prior(self, how: str | None = None) -> None:
        """Re-initialise μ, σ from the current kernel (e.g. after loading or copying weights)."""
        if self.prior is not None:
            self.prior.reset_from(self.weight, how or self.prior_init)

    def kernel_code(self) -> torch.Tensor:
        """The binary code ``k̂ = m·sign(w∘k)`` (detached)."""
        return self.weight_quantizer.code(self.weight)

    def kernel_loss(self, nu: float, *, normalize_prior_grad: bool = True) -> torch.Tensor:
        """This layer's bracket of the Bayesian kernel loss (summed, without λ/2): see
        :func:`onebit.losses.bayes.bayes_kernel_loss`."""
        if self.prior is None:
            raise ValueError("this BonnConv2d was built with prior=False: it has no kernel prior")
        if not (isinstance(nu, (int, float)) and math.isfinite(nu) and nu >= 0):
            raise ValueError(f"nu must be a finite number >= 0, got {nu!r}")
        q = self.weight_quantizer
        return bayes_kernel_loss(self.weight, q.recon_matrix().to(self.weight.dtype), self.kernel_code(),
                                 self.prior.mu, self.prior.sigma, nu, normalize_prior_grad=normalize_prior_grad)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, code_scale={self.weight_quantizer.code_scale}"
