"""File handling shared by checkpoints and ``.onebit`` files: atomic writes, reads with clear errors,
the safetensors body and the SHA-256 checksum (no torch import)."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path


def check_folder_path(path: str | Path) -> None:
    """Raise a :class:`NotADirectoryError` naming the file if ``path`` or one of its parents is a
    file, so that ``path`` cannot be (or become) a folder; creates nothing."""
    path = Path(path)
    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                raise NotADirectoryError(f"cannot use folder {path}: {p} is a file, not a folder")
            return


def ensure_dir(path: str | Path) -> Path:
    """Create folder ``path`` (and its parents) unless it exists.

    A file in the way is a :class:`NotADirectoryError` naming it (``mkdir`` alone says
    "File exists" about the file, which reads as if the folder were the problem).
    """
    check_folder_path(path)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _about(path: Path, e: OSError) -> OSError:
    """``e`` naming ``path``, the file the user asked for (not our temp file, or no file at all)."""
    return type(e)(e.errno, e.strerror, str(path))


def atomic_write_bytes(path: str | Path, data: bytes, *, exclusive: bool = False) -> None:
    """Write ``data`` to ``path`` atomically: temp file in the same folder → fsync → rename.

    A crash leaves either the old file or the new one, never a half-written file; the new file
    gets normal permissions (``0666 & ~umask``). ``path`` being a folder is an
    :class:`IsADirectoryError`, a file among its parents a :class:`NotADirectoryError`.
    ``exclusive``: never replace a file — one that exists, or appears while this one is written,
    is a :class:`FileExistsError` (published with a hard link, which fails on an existing name).
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"cannot write {path}: it is a folder")
    ensure_dir(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise _about(path, e) from None
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp creates 0600
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if not exclusive:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # atomic, and refuses an existing name
            except FileExistsError:
                raise FileExistsError(f"{path} exists; it was not replaced") from None
            except OSError:  # a file system without hard links: check, then rename
                if path.exists():
                    raise FileExistsError(f"{path} exists; it was not replaced") from None
                os.replace(tmp, path)
            Path(tmp).unlink(missing_ok=True)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, FileExistsError) or e.errno is None:
            raise
        raise _about(path, e) from None  # a full disk, say
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def read_file_bytes(path: str | Path, error: type[Exception], what: str, missing: str,
                    folder_hint: str = "") -> bytes:
    """The bytes of the regular file ``path``; a folder, a missing or an unreadable file raises
    ``error`` naming it: "PATH is a folder, not a {what}{folder_hint}", "{missing} not found: PATH"."""
    path = Path(path)
    if path.is_dir():
        raise error(f"{path} is a folder, not a {what}{folder_hint}")
    if not path.is_file():
        if path.exists():  # a device, a pipe, a socket: reading could block or never end
            raise error(f"{path} is not a regular file, not a {what}")
        raise error(f"{missing} not found: {path}")
    try:
        return path.read_bytes()
    except OSError as e:
        raise error(f"cannot read {path}: {e}") from None


def safetensors_body(data: bytes) -> memoryview:
    """The tensor bytes of a safetensors buffer (after its 8-byte length and JSON header)."""
    return memoryview(data)[8 + int.from_bytes(data[:8], "little"):]


def json_and_body_sha256(doc_json: str, body: bytes | memoryview) -> str:
    """SHA-256 of a JSON document followed by tensor bytes: the checksum of ``.onebit`` files and
    checkpoints (surrogatepass: a hostile header may decode to a lone surrogate, which UTF-8 refuses)."""
    h = hashlib.sha256(doc_json.encode("utf-8", "surrogatepass"))
    h.update(body)
    return h.hexdigest()
