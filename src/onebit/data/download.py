"""Fetching data-set files from their official URLs, with checksum verification.

A download goes to a temporary file next to its destination, is checked
against its MD5 / SHA-256 and only then moved into place with
:func:`os.replace`, so a half-written file is never mistaken for data.

Downloads are off when the environment variable ``ONEBIT_NO_DOWNLOAD`` is set
to a true value (``1``, ``true``, ``yes``); tests may also replace
:func:`fetch_url`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .errors import CorruptDataError

__all__ = ["RemoteFile", "DownloadFailed", "downloads_disabled", "fetch_url", "download_file", "extract_members"]

log = logging.getLogger("onebit.data")

TIMEOUT_S = 10.0
_CHUNK = 1 << 20


@dataclass(frozen=True)
class RemoteFile:
    """One file to fetch: mirrors tried in order, expected checksum(s), and
    (for archives) the member files to take out of it."""

    filename: str
    urls: tuple[str, ...]
    md5: str | None = None
    sha256: str | None = None
    members: tuple[str, ...] = ()  # non-empty: a .tar(.gz) whose members with these base names are extracted

    def provides(self) -> tuple[str, ...]:
        """The file names this download leaves in the data-set folder."""
        return self.members or (self.filename,)


class DownloadFailed(Exception):
    """Network-level failure (offline, HTTP error, timeout): the caller falls through."""


def downloads_disabled() -> bool:
    """True when ``$ONEBIT_NO_DOWNLOAD`` is set to a true value."""
    return os.environ.get("ONEBIT_NO_DOWNLOAD", "").strip().lower() in {"1", "true", "yes", "on"}


def fetch_url(url: str, out: BinaryIO, timeout: float = TIMEOUT_S) -> None:
    """Stream ``url`` into the open binary file ``out``; raise DownloadFailed on network errors."""
    try:
        req = urllib.request.Request(url, headers={"User-Agent": "onebit"})
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - fixed https/http URLs
            shutil.copyfileobj(resp, out, _CHUNK)
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise DownloadFailed(f"{url}: {e}") from e


def _digest(path: Path, algo: str) -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def verify(path: Path, md5: str | None, sha256: str | None) -> str | None:
    """Return None if the checksums match, else a description of the mismatch."""
    for algo, want in (("md5", md5), ("sha256", sha256)):
        if want:
            got = _digest(path, algo)
            if got.lower() != want.lower():
                return f"{algo.upper()} is {got}, expected {want}"
    return None


def download_file(remote: RemoteFile, dest_dir: Path, timeout: float = TIMEOUT_S) -> Path:
    """Download ``remote`` into ``dest_dir`` (trying each mirror), verified, atomically.

    Raises DownloadFailed if no mirror could be reached, CorruptDataError if
    data arrived but never with the right checksum.
    """
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / remote.filename
    failures: list[str] = []
    mismatches: list[str] = []
    for url in remote.urls:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{remote.filename}.", suffix=".part", dir=dest_dir)
        tmp = Path(tmp_name)
        try:
            log.info("downloading %s", url)
            with os.fdopen(fd, "wb") as out:
                fetch_url(url, out, timeout)
            bad = verify(tmp, remote.md5, remote.sha256)
            if bad:
                mismatches.append(f"{url}: {bad}")
                continue
            os.replace(tmp, dest)
            return dest
        except DownloadFailed as e:
            failures.append(str(e))
        finally:
            tmp.unlink(missing_ok=True)
    if mismatches:
        raise CorruptDataError(
            f"{dest}: downloaded data failed checksum verification ({'; '.join(mismatches)}). "
            "The server returned a damaged or different file; try again later or get the file by hand."
        )
    raise DownloadFailed("; ".join(failures) or f"no URL for {remote.filename}")


def extract_members(archive: Path, dest_dir: Path, members: tuple[str, ...]) -> None:
    """Copy the regular files of a tar archive whose base names are in ``members``
    into ``dest_dir`` (flat; no path from the archive is ever used)."""
    wanted = set(members)
    found: set[str] = set()
    try:
        with tarfile.open(archive, "r:*") as tar:
            for m in tar:
                base = m.name.rsplit("/", 1)[-1]
                if base not in wanted or not m.isfile():
                    continue
                src = tar.extractfile(m)
                if src is None:
                    continue
                fd, tmp_name = tempfile.mkstemp(prefix=f".{base}.", suffix=".part", dir=dest_dir)
                try:
                    with os.fdopen(fd, "wb") as out:
                        shutil.copyfileobj(src, out, _CHUNK)
                    os.replace(tmp_name, dest_dir / base)
                finally:
                    Path(tmp_name).unlink(missing_ok=True)
                found.add(base)
    except (tarfile.TarError, EOFError, OSError) as e:
        raise CorruptDataError(f"{archive}: cannot extract the archive ({e}). Delete it and download it again.") from e
    missing = wanted - found
    if missing:
        raise CorruptDataError(f"{archive}: the archive lacks {sorted(missing)}. Delete it and download it again.")
