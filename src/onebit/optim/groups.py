"""Parameter groups: the per-layer Glorot learning-rate scale and no weight decay where it hurts.

BinaryConnect/BNN multiply the *update* of each binary layer's latent weights by
``gamma = 1/sqrt(1.5/(fan_in + fan_out))`` (methods.md §1.4, pitfall 5). With Adam that is a
per-group learning rate, not a gradient scale. The Torch7 CIFAR model rounds it to a power of 2.
"""

from __future__ import annotations

from torch import nn

from ..nn.binary import BinaryConv2d, BinaryLinear, glorot_lr_scale
from ..nn.tags import tagged
from ..quant import ap2, is_binary
import torch


def param_groups(model: nn.Module, lr: float, *, glorot: bool = False, pow2: bool = False,
                 weight_decay: float = 0.0) -> list[dict]:
    """Groups for an optimizer.

    Binary-weight layers get their own group when ``glorot`` (``lr · gamma``; ``gamma`` rounded
    by AP2 when ``pow2``) and never weight decay; a parameter that carries an
    ``lr_scale`` tag (:mod:`onebit.nn.tags`; e.g. BONN's reconstruction vector, whose own learning rate is
    PCNN's η₂) gets a group with ``lr · lr_scale`` and no weight decay; everything else
    shares one group with ``weight_decay`` applied to tensors of rank > 1 only (not BN parameters
    or biases). Each group records its factor as ``lr_factor``: the group's ``lr`` already includes
    it, so no optimizer applies it again; :class:`ShiftAdaMax` divides it out before its
    power-of-two rounding and multiplies it back after, so only the base rate is rounded.
    """
    groups: list[dict] = []
    seen: set[int] = set()
    for name, m in model.named_modules():
        if isinstance(m, (BinaryLinear, BinaryConv2d)) and is_binary(m.weight_quantizer):
            scale = glorot_lr_scale(m) if glorot else 1.0
            if pow2 and glorot:
                scale = float(ap2(torch.tensor(scale)))
            groups.append({"params": [m.weight], "lr": lr * scale, "lr_factor": scale,
                           "weight_decay": 0.0, "name": f"{name}.weight"})
            seen.add(id(m.weight))
    scaled: dict[float, list] = {}
    for p, s in tagged(model, "lr_scale"):
        if id(p) not in seen and p.requires_grad:
            scaled.setdefault(float(s), []).append(p)
            seen.add(id(p))
    for s, ps in scaled.items():
        groups.append({"params": ps, "lr": lr * s, "lr_factor": s, "weight_decay": 0.0, "name": f"lr_x{s:g}"})
    decay, no_decay = [], []
    for p in model.parameters():
        if id(p) in seen or not p.requires_grad:
            continue
        (decay if p.dim() > 1 and weight_decay else no_decay).append(p)
    if decay:
        groups.append({"params": decay, "lr": lr, "lr_factor": 1.0, "weight_decay": weight_decay, "name": "decay"})
    if no_decay:
        groups.append({"params": no_decay, "lr": lr, "lr_factor": 1.0, "weight_decay": 0.0, "name": "other"})
    return groups
