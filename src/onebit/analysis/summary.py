"""Per-layer accounting: precision, parameters, memory, binary/float MACs, OPs (methods.md §0.6).

* Memory (bits) = 32 · #real params + 1 · #binary weights + 32 · #per-channel weight scales.
* OPs = FLOPs + BOPs/64, FLOPs = real multiply–accumulates, BOPs = binary ones (XNOR-Net's and
  Bi-Real's convention: a 64-bit CPU does 64 XNOR-popcounts per instruction).
* A layer's MACs are binary only if both its input and its weights are binary; BNN's first
  layer (real input, binary weights) counts as float MACs.
* BN counts its weight and bias as real parameters (running statistics are not parameters).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..nn import BinaryConv2d, BinaryLinear
from ..quant import is_binary


@dataclass
class LayerRow:
    name: str
    kind: str
    input: str       # "binary" | "real" | "-"
    weight: str      # "binary" | "real" | "-"
    params: int
    memory_bits: int
    binary_macs: int
    float_macs: int

    @property
    def ops(self) -> float:
        return self.float_macs + self.binary_macs / 64


@dataclass
class Summary:
    rows: list[LayerRow]
    input_shape: tuple[int, ...]

    @property
    def params(self) -> int:
        return sum(r.params for r in self.rows)

    @property
    def memory_bits(self) -> int:
        return sum(r.memory_bits for r in self.rows)

    @property
    def fp32_bits(self) -> int:
        return 32 * self.params

    @property
    def binary_macs(self) -> int:
        return sum(r.binary_macs for r in self.rows)

    @property
    def float_macs(self) -> int:
        return sum(r.float_macs for r in self.rows)

    @property
    def ops(self) -> float:
        return self.float_macs + self.binary_macs / 64

    @property
    def compression(self) -> float:
        return self.fp32_bits / max(self.memory_bits, 1)

    @property
    def speedup(self) -> float:
        """Real-network MACs over OPs (every MAC counted as a FLOP in the real network)."""
        return (self.binary_macs + self.float_macs) / max(self.ops, 1)

    def to_dict(self) -> dict:
        return {"rows": [asdict(r) | {"ops": r.ops} for r in self.rows], "params": self.params,
                "memory_bits": self.memory_bits, "fp32_bits": self.fp32_bits, "binary_macs": self.binary_macs,
                "float_macs": self.float_macs, "ops": self.ops, "compression": self.compression,
                "speedup": self.speedup}

    def __str__(self) -> str:
        head = f"{'layer':28s} {'kind':14s} {'in':6s} {'w':6s} {'params':>11s} {'mem(Mbit)':>10s} {'bMACs':>12s} {'fMACs':>12s} {'OPs':>12s}"
        lines = [head, "-" * len(head)]
        for r in self.rows:
            lines.append(f"{r.name[:28]:28s} {r.kind[:14]:14s} {r.input:6s} {r.weight:6s} {r.params:11,d} "
                         f"{r.memory_bits / 1e6:10.3f} {r.binary_macs:12,d} {r.float_macs:12,d} {r.ops:12.4g}")
        lines.append("-" * len(head))
        lines.append(f"{'total':28s} {'':14s} {'':6s} {'':6s} {self.params:11,d} {self.memory_bits / 1e6:10.3f} "
                     f"{self.binary_macs:12,d} {self.float_macs:12,d} {self.ops:12.4g}")
        lines.append(f"memory {self.memory_bits / 1e6:.2f} Mbit vs {self.fp32_bits / 1e6:.2f} Mbit in fp32 "
                     f"(compression {self.compression:.2f}×); OPs {self.ops:.3e} = FLOPs {self.float_macs:.3e} "
                     f"+ BOPs {self.binary_macs:.3e}/64 (speed-up {self.speedup:.2f}× over the real network)")
        return "\n".join(lines)


_NORM = (nn.BatchNorm1d, nn.BatchNorm2d)


def summary(model: nn.Module, input_shape: tuple[int, ...]) -> Summary:
    """Account ``model`` for one input of shape ``input_shape`` (without batch), e.g. (3, 224, 224)."""
    rows: list[LayerRow] = []
    hooks = []

    def on_layer(name):
        def hook(m, inp, out):
            rows.append(_row(name, m, inp[0], out))
        return hook

    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)) or (len(list(m.children())) == 0 and any(
                p is not None for p in m.parameters(recurse=False))):
            hooks.append(m.register_forward_hook(on_layer(name)))
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_shape))
    finally:
        for h in hooks:
            h.remove()
        model.train(was)
    return Summary(rows, tuple(input_shape))


def _row(name: str, m: nn.Module, x: torch.Tensor, out: torch.Tensor) -> LayerRow:
    params = sum(p.numel() for p in m.parameters(recurse=False))
    if isinstance(m, (nn.Conv2d, nn.Linear)):
        per_out = m.weight[0].numel()
        macs = out.numel() * per_out  # batch 1
        bin_w = isinstance(m, (BinaryConv2d, BinaryLinear)) and is_binary(m.weight_quantizer)
        bin_in = isinstance(m, (BinaryConv2d, BinaryLinear)) and is_binary(m.input_quantizer)
        wn = m.weight.numel()
        mem = (wn if bin_w else 32 * wn) + 32 * (params - wn)
        if bin_w and (getattr(m, "scale", "none") not in (None, "none")
                      or getattr(m.weight_quantizer, "scaled", False)):
            mem += 32 * m.weight.shape[0]  # one fp32 scale per output channel (α of α·sign(W))
        kind = type(m).__name__
        return LayerRow(name, kind, "binary" if bin_in else "real", "binary" if bin_w else "real", params, mem,
                        macs if (bin_in and bin_w) else 0, 0 if (bin_in and bin_w) else macs)
    if isinstance(m, _NORM):
        params = (m.weight.numel() + m.bias.numel()) if m.affine else 0
    return LayerRow(name, type(m).__name__, "-", "real" if params else "-", params, 32 * params, 0, 0)
