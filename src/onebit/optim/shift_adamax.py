"""Shift-based AdaMax (BNN paper §1.5 and its algorithm box; methods.md §1.6).

AdaMax with every multiplication/division replaced by a power-of-two shift::

    m_t = β1·m_{t-1} + (1 - β1)·g_t
    v_t = max(β2·v_{t-1}, |g_t|)
    θ_t = θ_{t-1} - AP2(α / (1 - β1^t)) · m_t · AP2(v_t)^{-1}

Defaults are the paper's: ``α = 2^-10``, ``1 - β1 = 2^-3``, ``1 - β2 = 2^-10``. ``eps = 2^-27`` is
added to ``AP2(v_t)`` (Torch7 reference). ``shift=False`` gives plain AdaMax with the same ε
placement (denominator ``v_t + ε``), for tests and ablations. ``overwrite_v=True`` stores
``AP2(v_t)`` as the state like the Torch7 code (off by default: the paper does not say so).
A param group's per-layer factor γ (the Glorot scale, or a tagged parameter's own lr scale) stays
*out* of the rounding: :func:`onebit.optim.param_groups` puts ``lr = α·γ`` and ``lr_factor = γ`` in
the group, and the step is ``AP2(α / (1 - β1^t)) · γ`` — the Torch7 code multiplies its AP2 step by
the Glorot scale ``GLR`` afterwards (methods.md §1.6), and rounding ``α·γ`` together would change
a non-power-of-two γ by up to 2^±½, differently whenever α or the bias correction moves. A group
may also carry ``lr_scale``, one more multiplier of its step, and ``weight_decay`` λ, an L2 term
added to the gradient (``g_t + λ·θ_{t-1}``, as PyTorch's Adamax; the paper uses none).
"""

from __future__ import annotations

import torch

from ..quant.pow2 import ap2


class ShiftAdaMax(torch.optim.Optimizer):
    """Shift-based AdaMax (BNN paper §1.5, Algorithm 4): AdaMax whose multiplications by the step
    size and divisions by ``v_t`` are power-of-two shifts (AP2)::

        m_t = β1·m_{t-1} + (1 - β1)·g_t;  v_t = max(β2·v_{t-1}, |g_t|)
        θ_t = θ_{t-1} - AP2(α / (1 - β1^t)) · m_t · (AP2(v_t) + ε)^{-1}

    ``lr`` = α (2⁻¹⁰), ``betas`` = (1 − 2⁻³, 1 − 2⁻¹⁰), ``eps`` = 2⁻²⁷ (the Torch7 reference);
    ``shift=False``: exact AdaMax with the same ε placement; ``overwrite_v``: keep AP2(v_t) as the
    state, as the Torch7 code does. A group's ``lr_factor`` γ (already inside its ``lr``) is divided
    out before AP2 and multiplied back after it: ``AP2(lr/γ / (1 - β1^t)) · γ``. A param group's
    ``lr_scale`` multiplies its step;
    ``weight_decay`` λ adds ``λ·θ`` to the gradient (L2, as ``torch.optim.Adamax``).
    """

    def __init__(self, params, lr: float = 2.0 ** -10, betas: tuple[float, float] = (1 - 2.0 ** -3, 1 - 2.0 ** -10),
                 eps: float = 2.0 ** -27, shift: bool = True, overwrite_v: bool = False, weight_decay: float = 0.0):
        if lr <= 0:
            raise ValueError(f"ShiftAdaMax: lr must be > 0, got {lr}")
        if not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"ShiftAdaMax: betas must be in [0, 1), got {betas}")
        if not weight_decay >= 0:
            raise ValueError(f"ShiftAdaMax: weight_decay must be >= 0, got {weight_decay}")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, shift=shift, overwrite_v=overwrite_v,
                                      weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        """One update of every parameter with a gradient (the class docstring's equations)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            b1, b2 = group["betas"]
            q = ap2 if group["shift"] else (lambda t: t)
            scale = group.get("lr_scale", 1.0)
            factor = float(group.get("lr_factor", 1.0))
            if not factor > 0:
                raise ValueError(f"ShiftAdaMax: a group's lr_factor must be > 0, got {factor}")
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if group.get("weight_decay", 0.0):  # (state dicts saved before the option lack it)
                    g = g.add(p, alpha=group["weight_decay"])
                st = self.state[p]
                if not st:
                    st["step"] = torch.zeros((), dtype=torch.float64)
                    st["exp_avg"] = torch.zeros_like(p)
                    st["exp_inf"] = torch.zeros_like(p)
                st["step"] += 1
                t = int(st["step"].item())
                m, v = st["exp_avg"], st["exp_inf"]
                m.mul_(b1).add_(g, alpha=1 - b1)
                torch.maximum(v.mul_(b2), g.abs(), out=v)
                vq = q(v)
                if group["overwrite_v"] and group["shift"]:
                    v.copy_(vq)
                # round the base rate only: the group's factor γ (lr = α·γ) is multiplied back unrounded
                step_size = float(q(torch.tensor(group["lr"] / factor / (1 - b1 ** t), dtype=torch.float64))) * factor
                p.add_(m / (vq + group["eps"]), alpha=-step_size * scale)
        return loss
