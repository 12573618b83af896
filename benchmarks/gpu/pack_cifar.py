"""Carry CIFAR-10 to a lent GPU machine whose upload limit (64 MiB) is below the data set's 176 MB.

``pack`` writes each binary batch as one JPEG mosaic of its 10 000 images (100 × 100 tiles of 32 × 32,
4:4:4 chroma, quality 95 by default: ≈ 850 bytes per image, PSNR ≈ 40 dB against the originals on
``data_batch_1``) plus its labels; ``unpack`` decodes them back into ``cifar-10-batches-bin`` files
that the loaders read as usual. The tiles sit on JPEG's 8 × 8 block grid, so no image's pixels leak
into another's; the round trip is lossy, so accuracies measured on the unpacked *test* batch are
only a progress signal: score the exported model on the original test set (``onebit run``).

    python benchmarks/gpu/pack_cifar.py pack ../shared/data/cifar-10-batches-bin .cifar_pack
    python benchmarks/gpu/pack_cifar.py unpack .cifar_pack data/cifar-10-batches-bin
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
from onebit.data.formats import read_cifar_bin, write_cifar_bin  # noqa: E402

BATCHES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
SIDE = 100  # tiles per mosaic row


def mosaic(images: np.ndarray) -> np.ndarray:
    """(N, 3, 32, 32) uint8, N ≤ SIDE² → (rows·32, SIDE·32, 3), unused tiles black."""
    n = len(images)
    rows = -(-n // SIDE)
    tiles = np.zeros((rows * SIDE, 32, 32, 3), np.uint8)
    tiles[:n] = images.transpose(0, 2, 3, 1)
    return tiles.reshape(rows, SIDE, 32, 32, 3).transpose(0, 2, 1, 3, 4).reshape(rows * 32, SIDE * 32, 3)


def unmosaic(m: np.ndarray, n: int) -> np.ndarray:
    rows = m.shape[0] // 32
    tiles = m.reshape(rows, 32, SIDE, 32, 3).transpose(0, 2, 1, 3, 4).reshape(rows * SIDE, 32, 32, 3)
    return np.ascontiguousarray(tiles[:n].transpose(0, 3, 1, 2))


def pack(src: Path, dst: Path, quality: int) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    total = 0
    for b in BATCHES:
        images, labels = read_cifar_bin(src / f"{b}.bin")
        buf = io.BytesIO()
        Image.fromarray(mosaic(images)).save(buf, "JPEG", quality=quality, subsampling=0)
        (dst / f"{b}.jpg").write_bytes(buf.getvalue())
        np.save(dst / f"{b}_labels.npy", labels.astype(np.uint8))
        back = unmosaic(np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")), len(images))
        mse = float(((back.astype(np.float64) - images) ** 2).mean())
        total += buf.tell()
        print(f"{b}: {len(images)} images, {buf.tell() / len(images):.0f} B/image, "
              f"PSNR {10 * np.log10(255 ** 2 / mse):.1f} dB")
    meta = src / "batches.meta.txt"
    if meta.exists():
        (dst / "batches.meta.txt").write_bytes(meta.read_bytes())
    print(f"total {total / 2 ** 20:.1f} MiB")


def unpack(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for b in BATCHES:
        labels = np.load(src / f"{b}_labels.npy", allow_pickle=False)
        images = unmosaic(np.asarray(Image.open(src / f"{b}.jpg").convert("RGB")), len(labels))
        write_cifar_bin(dst / f"{b}.bin", images, labels)
    if (src / "batches.meta.txt").exists():
        (dst / "batches.meta.txt").write_bytes((src / "batches.meta.txt").read_bytes())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack")
    p.add_argument("src", type=Path)
    p.add_argument("dst", type=Path)
    p.add_argument("--quality", type=int, default=95)
    u = sub.add_parser("unpack")
    u.add_argument("src", type=Path)
    u.add_argument("dst", type=Path)
    a = ap.parse_args()
    pack(a.src, a.dst, a.quality) if a.cmd == "pack" else unpack(a.src, a.dst)


if __name__ == "__main__":
    main()
