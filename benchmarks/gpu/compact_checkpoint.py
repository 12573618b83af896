"""Shrink a trained checkpoint for the trip back from a lent GPU machine (16 MiB per file there).

Every binary-weight layer's latent weights W are replaced by sign(W) · mean|W| per output channel:
the forward pass only reads the signs and per-channel (or per-layer) means of |W|, so the layer
computes what it did up to float rounding of its scale: each layer's ``quantized_weight()`` is
compared with the original (equal signs, scales within 1e-6 relative: the mean of n equal values
can differ from them in the last bit, so this is *not* bit-exact — downstream signs near zero can
flip; the exported ``.onebit`` file is the exact artifact, this is the fallback), else the layer
keeps its latent weights. Two values per channel compress well
(``.safetensors.gz``); the result evaluates, exports and runs like the original, but it cannot
resume training (no optimizer state, no latent magnitudes).

    python benchmarks/gpu/compact_checkpoint.py RUN/best.safetensors OUT.safetensors.gz
"""

from __future__ import annotations

import gzip
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
from onebit.train import load_for_eval  # noqa: E402
from onebit.train.checkpoint import save_checkpoint  # noqa: E402


@torch.no_grad()
def compact(model: torch.nn.Module) -> tuple[int, int]:
    """In place; returns (layers compacted, layers kept as they were)."""
    done = kept = 0
    for m in model.modules():
        if not getattr(m, "binary_weight", False) or not hasattr(m, "quantized_weight"):
            continue
        w = m.weight
        before = m.quantized_weight().clone()
        dims = tuple(range(1, w.dim()))
        a = w.abs().mean(dim=dims, keepdim=True)
        old, target = w.clone(), a.clone()
        for _ in range(4):  # make mean|W'| land on the original mean
            w.copy_(torch.where(old < 0, -a, a))
            a = a + (target - w.abs().mean(dim=dims, keepdim=True))
        after = m.quantized_weight()
        if torch.equal(torch.sign(after), torch.sign(before)) and \
                float((after - before).abs().max()) <= 1e-6 * float(before.abs().max()):
            done += 1
        else:
            w.copy_(old)
            kept += 1
    return done, kept


def main() -> None:
    src, dst = Path(sys.argv[1]), Path(sys.argv[2])
    model, meta = load_for_eval(src)
    done, kept = compact(model)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d) / "c.safetensors"
        save_checkpoint(tmp, model, dict(meta, compacted=True))
        data = gzip.compress(tmp.read_bytes(), 6)
    part = dst.with_name(dst.name + ".part")
    part.write_bytes(data)
    part.replace(dst)
    print(f"{src} → {dst}: {done} binary layers compacted, {kept} kept, {len(data) / 2 ** 20:.2f} MiB")


if __name__ == "__main__":
    main()
