"""onebit.fileio.atomic_write_bytes: a crash leaves the old file or the new one; ``exclusive`` never
replaces a file, even one that appears while the new one is written."""

import os

import pytest

from onebit import fileio


def test_atomic_write_replaces_and_leaves_no_temp_file(tmp_path):
    p = tmp_path / "f.bin"
    fileio.atomic_write_bytes(p, b"one")
    fileio.atomic_write_bytes(p, b"two")
    assert p.read_bytes() == b"two" and [q.name for q in tmp_path.iterdir()] == ["f.bin"]


@pytest.mark.parametrize("hard_links", [True, False])
def test_exclusive_write_never_replaces(tmp_path, monkeypatch, hard_links):
    if not hard_links:  # a file system without hard links: check, then rename
        def no_link(src, dst):
            raise PermissionError(1, "Operation not permitted")
        monkeypatch.setattr(os, "link", no_link)
    p = tmp_path / "f.bin"
    fileio.atomic_write_bytes(p, b"new", exclusive=True)
    assert p.read_bytes() == b"new"
    with pytest.raises(FileExistsError, match="was not replaced"):
        fileio.atomic_write_bytes(p, b"newer", exclusive=True)
    assert p.read_bytes() == b"new" and [q.name for q in tmp_path.iterdir()] == ["f.bin"]


def test_exclusive_write_refuses_a_file_that_appears_meanwhile(tmp_path, monkeypatch):
    p = tmp_path / "f.bin"
    real_fsync = os.fsync

    def fsync_then_someone_writes(fd):
        real_fsync(fd)
        if not p.exists():
            p.write_bytes(b"theirs")

    monkeypatch.setattr(os, "fsync", fsync_then_someone_writes)
    with pytest.raises(FileExistsError):
        fileio.atomic_write_bytes(p, b"mine", exclusive=True)
    assert p.read_bytes() == b"theirs" and [q.name for q in tmp_path.iterdir()] == ["f.bin"]


def test_a_device_or_pipe_is_not_read_as_a_file(tmp_path):
    """/dev/zero would never end; a FIFO would block: both are named as what they are."""
    from pathlib import Path

    from onebit.fileio import read_file_bytes

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    for p in (fifo, Path("/dev/null")):
        with pytest.raises(ValueError, match=f"{p} is not a regular file, not a checkpoint file"):
            read_file_bytes(p, ValueError, "checkpoint file", "checkpoint")
    with pytest.raises(ValueError, match="checkpoint not found: "):
        read_file_bytes(tmp_path / "absent", ValueError, "checkpoint file", "checkpoint")


def test_a_full_disk_names_the_file_and_leaves_no_temp_file(tmp_path, monkeypatch):
    import errno

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fileio.os, "fsync", full)
    with pytest.raises(OSError) as e:
        fileio.atomic_write_bytes(tmp_path / "f.bin", b"data")
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(tmp_path / "f.bin")
    assert list(tmp_path.iterdir()) == []
