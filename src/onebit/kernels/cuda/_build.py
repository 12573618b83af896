"""Build ``xnor.cu`` with nvcc on first use and load it with ctypes.

The library has a plain C interface (raw device pointers and a CUDA stream), so it needs no
PyTorch headers and builds in seconds. It is cached per source hash and GPU architecture in
``$ONEBIT_CACHE`` (default ``~/.cache/onebit``)/``cuda``, written to a temp file and renamed, so
concurrent first uses never see a half-written library.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

SOURCE = Path(__file__).with_name("xnor.cu")

_lock = threading.Lock()
_libs: dict[str, ctypes.CDLL] = {}


class CudaBuildError(RuntimeError):
    """The CUDA kernels cannot be built or loaded here (no GPU, no nvcc, compile error)."""


def find_nvcc() -> str | None:
    """nvcc from ``$CUDA_HOME``/``$CUDA_PATH``, PyTorch's CUDA_HOME, then ``PATH``."""
    for var in ("CUDA_HOME", "CUDA_PATH"):
        root = os.environ.get(var)
        if root and (Path(root) / "bin" / "nvcc").is_file():
            return str(Path(root) / "bin" / "nvcc")
    try:
        from torch.utils.cpp_extension import CUDA_HOME

        if CUDA_HOME and (Path(CUDA_HOME) / "bin" / "nvcc").is_file():
            return str(Path(CUDA_HOME) / "bin" / "nvcc")
    except Exception:  # pragma: no cover - torch without cpp_extension
        pass
    return shutil.which("nvcc")


def cache_dir() -> Path:
    return Path(os.environ.get("ONEBIT_CACHE", Path.home() / ".cache" / "onebit")) / "cuda"


def _declare(lib: ctypes.CDLL) -> None:
    vp, i32, i64 = ctypes.c_void_p, ctypes.c_int, ctypes.c_longlong
    lib.onebit_pack_rows.argtypes = [vp, vp, i64, i32, i32, vp]
    lib.onebit_pack_rows.restype = i32
    lib.onebit_bgemm.argtypes = [i32, vp, vp, i32, i32, i32, i32, i32, vp, vp, vp, vp, vp, vp, i32, vp, i32, vp]
    lib.onebit_bgemm.restype = i32
    lib.onebit_sgemm_baseline.argtypes = [vp, vp, i32, i32, i32, vp, vp]
    lib.onebit_sgemm_baseline.restype = i32


def load(arch: str) -> ctypes.CDLL:
    """The kernel library for compute capability ``arch`` (e.g. ``"90"``), built if needed."""
    with _lock:
        if arch in _libs:
            return _libs[arch]
        src = SOURCE.read_bytes()
        tag = hashlib.sha256(src + arch.encode()).hexdigest()[:16]
        path = cache_dir() / f"xnor-sm{arch}-{tag}.so"
        if not path.is_file():
            nvcc = find_nvcc()
            if nvcc is None:
                raise CudaBuildError("the onebit CUDA kernels are compiled on first use and need nvcc "
                                     "(the CUDA toolkit): set CUDA_HOME or put nvcc on PATH")
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(suffix=".so", dir=path.parent)
            os.close(fd)
            cmd = [nvcc, "-O3", "-shared", "-Xcompiler", "-fPIC", "-std=c++17",
                   "-gencode", f"arch=compute_{arch},code=sm_{arch}", "-o", tmp, str(SOURCE)]
            try:
                r = subprocess.run(cmd, capture_output=True, text=True)
                if r.returncode != 0:
                    raise CudaBuildError(f"nvcc failed ({' '.join(cmd)}):\n{r.stderr[-4000:]}")
                os.replace(tmp, path)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        try:
            lib = ctypes.CDLL(str(path))
        except OSError as e:
            raise CudaBuildError(f"cannot load {path}: {e}") from None
        _declare(lib)
        _libs[arch] = lib
        return lib
