"""Run a ``.onebit`` file on a GPU: the CPU engine's graph on PyTorch CUDA tensors, with the binary
layers on the XNOR-popcount kernels of :mod:`onebit.kernels.cuda`.

The same file, the same folded BatchNorm thresholds and the same arithmetic as
:class:`onebit.deploy.Engine`: binary convs/dense layers give identical integers and bits; real
layers run in float64 (so a sign decision cannot differ from the exact model) and float outputs
agree with the CPU engine to float32 rounding. Values between binary layers stay packed: 32-bit
words along channels (two per uint64 word of the file), ``2·ceil(C/64)`` per pixel.

On a machine without CUDA it runs on the CPU through the kernels' PyTorch reference twins
(slow; that is how the graph code is tested everywhere).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..kernels import cuda as ck
from . import format as fmt
from .engine import check_batch
from .errors import DeployError


def _words32(c: int) -> int:
    """32-bit words per pixel for ``c`` channels in the file's layout (whole uint64 words)."""
    return 2 * ((c + 63) // 64)


def _int32(a: np.ndarray, device) -> torch.Tensor:
    """A uint64 word array of the file as int32 words (low half first)."""
    return torch.from_numpy(np.ascontiguousarray(a).view(np.int32).copy()).to(device)


def _as_float(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.float32) / 127.5 - 1 if x.dtype == torch.uint8 else x


class GPUEngine:
    """``GPUEngine(path, device="cuda").run(x)`` → float32 logits (a torch tensor on ``device``).

    ``x``: (N, C, H, W) or (N, F) float, NumPy or torch; or uint8 pixels of a model trained with
    the ``pm1`` preprocessing (then a first layer with binary weights runs on exact integers).
    ``backend``: "auto" (CUDA kernels on CUDA tensors), "cuda" or "torch" (reference twins).
    """

    def __init__(self, path: str | Path, device: str | torch.device = "cuda", backend: str = "auto",
                 algo: str = "auto"):
        self.path = Path(path)
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise DeployError(f"GPUEngine on {self.device}: this PyTorch sees no CUDA device "
                              f"(torch {torch.__version__}); use the CPU engine, onebit.deploy.Engine")
        self.backend, self.algo = backend, algo
        self.graph, tensors = fmt.read(self.path)
        self.input_shape = tuple(self.graph["input"]["shape"])
        self._channels: dict[str, int] = {"input": self.input_shape[0]}
        self._ops = []
        try:
            for op in self.graph["ops"]:
                t = {role: tensors[key] for role, key in op.get("tensors", {}).items()}
                self._ops.append((op, self._prepare(op, t)))
                if op["op"] in ("conv", "bconv", "dense", "bdense"):
                    self._channels[op["output"]] = t["weight"].shape[0]
                else:
                    self._channels[op["output"]] = self._channels[op["input"]]
        except (ValueError, KeyError, TypeError) as e:
            raise DeployError(f"{self.path}: cannot prepare op {op.get('op')!r} for the GPU: {e}") from None

    # -- preparation: tensors to the device, once ------------------------------------------------------------
    def _prepare(self, op: dict, t: dict[str, np.ndarray]) -> dict:
        d = self.device
        kind = op["op"]
        p: dict = {}
        if kind in ("conv", "dense"):
            w = t["weight"]
            if w.dtype == np.uint64:  # binary weights on a real input (BinaryNet's first layer)
                c = op["in_channels"] if kind == "conv" else op["in_features"]
                bits = ck.reference.unpack_rows(torch.from_numpy(w.view(np.int32).copy()), c)
                p["binary"] = True
                w64 = (1 - 2 * bits).double()
            else:
                p["binary"] = False
                w64 = torch.from_numpy(np.asarray(w, np.float64))
            cout = w64.shape[0]
            p["w"] = (w64.permute(0, 3, 1, 2) if kind == "conv" else w64).contiguous().to(d)  # OIHW / (N, K)
            p["mult"] = torch.from_numpy(np.asarray(t["mult"], np.float64)).to(d) if "mult" in t else torch.ones(cout, dtype=torch.float64, device=d)
            p["bias"] = torch.from_numpy(np.asarray(t["bias"], np.float64)).to(d) if "bias" in t else torch.zeros(cout, dtype=torch.float64, device=d)
        elif kind in ("bconv", "bdense"):
            w = _int32(t["weight"], d)
            out = op.get("out", "float")
            if out == "bits":
                p["thresh"] = torch.from_numpy(t["thresh"].astype(np.int32)).to(d)
                p["flip"] = torch.from_numpy(t["flip"].astype(np.uint8)).to(d)
            else:
                for role in ("mult", "bias"):
                    p[role] = torch.from_numpy(t[role].astype(np.float32)).to(d) if role in t else None
            if kind == "bdense":
                k_words = ck.gemm_words(w.shape[1] * 32)
                w = F.pad(w, (0, k_words - w.shape[1]))
                p["k_words"] = k_words
            p["w"] = w.contiguous()
            p["corr"] = {}
        elif kind == "bmaxpool" and "min_mask" in t:
            p["min_mask"] = _int32(t["min_mask"], d)
        elif kind == "affine":
            p["mult"] = torch.from_numpy(t["mult"].astype(np.float32)).to(d)
            p["bias"] = torch.from_numpy(t["bias"].astype(np.float32)).to(d)
        return p

    # -- ops ------------------------------------------------------------------------------------------------
    def _real_linear(self, op: dict, p: dict, x: torch.Tensor, residual) -> torch.Tensor:
        conv = op["op"] == "conv"
        exact8 = x.dtype == torch.uint8 and p["binary"]
        xf = x.double() if exact8 else _as_float(x).double()
        if conv:
            ph, pw = op["padding"]
            xn = xf.permute(0, 3, 1, 2)
            acc = F.conv2d(xn, p["w"], None, tuple(op["stride"]), (ph, pw)).permute(0, 2, 3, 1)
        else:
            acc = xf @ p["w"].T
        if exact8:  # w·(x/127.5 − 1) = (w·x8)/127.5 − Σ_valid w, as the CPU engine computes it
            if conv:
                ones = torch.ones(1, *xn.shape[1:], dtype=torch.float64, device=x.device)
                valid = F.conv2d(ones, p["w"], None, tuple(op["stride"]), (ph, pw)).permute(0, 2, 3, 1)[0]
            else:
                valid = p["w"].sum(1)
            y = acc * (p["mult"] / 127.5) + (p["bias"] - valid * p["mult"])
        else:
            y = acc * p["mult"] + p["bias"]
        if residual is not None:
            y = y + residual.double()
        if op.get("out") == "bits":
            return ck.pack_bits(torch.where(y >= 0, 1.0, -1.0).float(), _words32(y.shape[-1]), backend=self.backend)
        return y.float()

    def _binary_linear(self, op: dict, p: dict, x: torch.Tensor, residual) -> torch.Tensor:
        out = op.get("out", "float")
        cout = p["w"].shape[0]
        kw = dict(output=out, algo=self.algo, backend=self.backend)
        if out == "bits":
            kw.update(thresh=p["thresh"], flip=p["flip"])
        else:
            kw.update(mult=p["mult"], bias=p["bias"])
        if op["op"] == "bconv":
            c_in = op["in_channels"]
            h, w = x.shape[1:3]
            corr = None
            if int(op["pad_value"]) == 0 and any(op["padding"]):
                if (h, w) not in p["corr"]:
                    p["corr"][(h, w)] = ck.conv_correction(p["w"], c_in, (h, w), op["kernel"], op["stride"], op["padding"])
                corr = p["corr"][(h, w)]
            return ck.bconv2d(x, p["w"], c_in, tuple(op["kernel"]), tuple(op["stride"]), tuple(op["padding"]),
                              int(op["pad_value"]), residual=residual, corr=corr,
                              out_words=_words32(cout) if out == "bits" else None, **kw)
        a = F.pad(x, (0, p["k_words"] - x.shape[1]))
        return ck.bgemm(a, p["w"], op["in_features"], residual=residual,
                        out_stride=_words32(cout) if out == "bits" else None, **kw)

    def _bmaxpool(self, op: dict, p: dict, x: torch.Tensor) -> torch.Tensor:
        (kh, kw), (sh, sw) = op["kernel"], op["stride"]
        n, h, w, words = x.shape
        oh, ow = (h - kh) // sh + 1, (w - kw) // sw + 1
        hi, wi = (oh - 1) * sh + 1, (ow - 1) * sw + 1
        taps = [x[:, i:i + hi:sh, j:j + wi:sw] for i in range(kh) for j in range(kw)]
        both = taps[0].clone(), taps[0].clone()
        for v in taps[1:]:
            both[0].bitwise_and_(v)  # max of ±1: −1 (bit 1) only where every tap is −1
            both[1].bitwise_or_(v)   # min (channels with a negative BN scale)
        if "min_mask" not in p:
            return both[0]
        m = p["min_mask"]
        return (both[0] & ~m) | (both[1] & m)

    def _run_op(self, op: dict, p: dict, x: torch.Tensor, residual) -> torch.Tensor:
        kind = op["op"]
        if kind in ("conv", "dense"):
            return self._real_linear(op, p, x, residual)
        if kind in ("bconv", "bdense"):
            return self._binary_linear(op, p, x, residual)
        if kind == "quantize":
            xf = _as_float(x)
            return ck.pack_bits(xf, _words32(xf.shape[-1]), backend=self.backend)
        if kind in ("maxpool", "avgpool"):
            xn = _as_float(x).permute(0, 3, 1, 2)
            k, s, pad = tuple(op["kernel"]), tuple(op["stride"]), tuple(op.get("padding", (0, 0)))
            ceil = bool(op.get("ceil_mode", False))
            if kind == "maxpool":
                y = F.max_pool2d(xn, k, s, pad, ceil_mode=ceil)
            else:
                y = F.avg_pool2d(xn.double(), k, s, pad, ceil_mode=ceil, count_include_pad=False).float()
            return y.permute(0, 2, 3, 1).contiguous()
        if kind == "gavgpool":
            return _as_float(x).double().mean((1, 2)).float()
        if kind == "bmaxpool":
            return self._bmaxpool(op, p, x)
        if kind == "flatten":
            return x.reshape(x.shape[0], -1)
        if kind == "affine":
            return _as_float(x) * p["mult"] + p["bias"]
        if kind == "act":
            xf = _as_float(x)
            return xf.clamp(-1, 1) if op["fn"] == "htanh" else xf.clamp_min(0)
        raise DeployError(f"unknown op {kind!r}")

    def check_input(self, x) -> torch.Tensor:
        """Validate an input batch (NumPy or torch); return it on the device (uint8 kept, else float32)."""
        if isinstance(x, np.ndarray):
            if x.dtype.kind not in "fiu":
                raise TypeError(f"GPUEngine.run expects real numbers, got dtype {x.dtype}")
            x = torch.from_numpy(np.ascontiguousarray(x))
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"GPUEngine.run expects a numpy array or a torch tensor, got {type(x).__name__}")
        if x.is_complex() or x.dtype == torch.bool:
            raise TypeError(f"GPUEngine.run expects real numbers, got dtype {x.dtype}")
        if not x.is_floating_point() and x.dtype != torch.uint8:
            raise TypeError(f"GPUEngine.run expects float32 input (or uint8 pixels where the file records their "
                            f"preprocessing), got dtype {x.dtype}: convert and preprocess it as in training")
        check_batch(tuple(x.shape), x.dtype == torch.uint8, self.input_shape, self.graph)
        if x.dtype == torch.uint8:
            return x.to(self.device)
        x = x.to(device=self.device, dtype=torch.float32)
        if not torch.isfinite(x).all():
            raise ValueError("input holds NaN or Inf values")
        return x

    @torch.no_grad()
    def run(self, x) -> torch.Tensor:
        """Logits (N, classes) float32 on ``self.device``."""
        x = self.check_input(x)
        if x.dim() == 4:
            x = x.permute(0, 2, 3, 1).contiguous()  # NCHW → NHWC
        values = {"input": x}
        for op, p in self._ops:
            res = op.get("residual")
            values[op["output"]] = self._run_op(op, p, values[op["input"]], None if res is None else values[res])
        return values[self.graph["output"]]

    def __repr__(self) -> str:
        return f"GPUEngine({str(self.path)!r}, ops={len(self._ops)}, device={self.device})"
