"""Crash-safe file operations for the spool.

Every file that must survive a power cut is written the same way: to a temporary
name in the destination directory, fsynced, renamed over the final name, and the
directory fsynced so that the rename itself is durable. These helpers are blocking;
callers run them on a worker thread.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

TMP_SUFFIX = ".tmp"


def fsync_dir(directory: Path) -> None:
    """Make the entries of ``directory`` (creations, renames, unlinks) durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def tmp_path_for(dest: Path) -> Path:
    """The temporary name used while ``dest`` is being written."""
    return dest.with_name(f".{dest.name}{TMP_SUFFIX}")


@contextlib.contextmanager
def atomic_writer(dest: Path) -> Iterator[BinaryIO]:
    """Open a file that appears at ``dest`` only once it is complete and durable.

    On a clean exit of the ``with`` block the data is fsynced, renamed to ``dest``
    and the directory fsynced. On an exception the temporary file is removed and
    ``dest`` is left as it was.
    """
    tmp = tmp_path_for(dest)
    fh = open(tmp, "wb")  # noqa: SIM115 - closed below on every path
    try:
        yield fh
        fh.flush()
        os.fsync(fh.fileno())
        fh.close()
        os.replace(tmp, dest)
        fsync_dir(dest.parent)
    except BaseException:
        fh.close()
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def atomic_write_bytes(dest: Path, data: bytes) -> None:
    """Write ``data`` to ``dest`` atomically and durably."""
    with atomic_writer(dest) as fh:
        fh.write(data)


def copy_stream(src: BinaryIO, dst: BinaryIO, *, chunk_size: int = 1 << 20) -> int:
    """Copy ``src`` to ``dst`` in bounded chunks; return the number of bytes copied."""
    total = 0
    while chunk := src.read(chunk_size):
        dst.write(chunk)
        total += len(chunk)
    return total


class SpoolDirs:
    """The spool's folders under ``<state_dir>/spool``.

    ``staging``: bytes still arriving from a device (never acknowledged);
    ``raw``: durable device captures, named by SOP Instance UID;
    ``dicom``: the Part 10 files built from them.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.staging = root / "staging"
        self.raw = root / "raw"
        self.dicom = root / "dicom"

    def create(self) -> None:
        """Create the folders (and make their creation durable)."""
        for folder in (self.root, self.staging, self.raw, self.dicom):
            folder.mkdir(parents=True, exist_ok=True)
        fsync_dir(self.root)
        fsync_dir(self.root.parent)
