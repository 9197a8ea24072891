"""Crash-safe file operations for the spool.

Every file that must survive a power cut is written the same way: to a temporary
name in the destination directory, fsynced, renamed over the final name, and the
directory fsynced so that the rename itself is durable. A long file written in
blocks may have the disk start on each block at once (:func:`start_writeback`), so
that its fsync waits only for the last of it. These helpers are blocking; callers
run them on a worker thread.

Spool files hold patient data: they are created with mode :data:`SPOOL_FILE_MODE`
(0640: the service's user and its group, for backups), set explicitly so that no
umask can widen it.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Final

from gateway.core.libc import c_function

TMP_SUFFIX = ".tmp"
SPOOL_FILE_MODE = 0o640


def fsync_dir(directory: Path) -> None:
    """Make the entries of ``directory`` (creations, renames, unlinks) durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_SYNC_FILE_RANGE = c_function(
    "sync_file_range", (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
)
_SYNC_FILE_RANGE_WRITE: Final = 2


def start_writeback(fd: int) -> None:
    """Ask the kernel to start writing ``fd``'s dirty pages to disk now, without
    waiting (Linux ``sync_file_range(SYNC_FILE_RANGE_WRITE)``): a later ``fsync``
    then waits only for what is left. Durability still comes from that ``fsync``;
    where the call is unavailable this does nothing."""
    if _SYNC_FILE_RANGE is not None:
        _SYNC_FILE_RANGE(fd, 0, 0, _SYNC_FILE_RANGE_WRITE)


def tmp_path_for(dest: Path) -> Path:
    """The temporary name used while ``dest`` is being written."""
    return dest.with_name(f".{dest.name}{TMP_SUFFIX}")


def _open_for_writing(path: Path, flags: int, mode: int | None) -> BinaryIO:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | flags, 0o666)
    try:
        if mode is not None:
            os.fchmod(fd, mode)  # exactly ``mode``, whatever the umask
        return os.fdopen(fd, "wb")
    except BaseException:
        os.close(fd)
        raise


def create_new(path: Path, mode: int = SPOOL_FILE_MODE) -> BinaryIO:
    """Create ``path`` (which must not exist) for writing, with exactly ``mode``."""
    return _open_for_writing(path, os.O_EXCL, mode)


@contextlib.contextmanager
def atomic_writer(dest: Path, mode: int | None = SPOOL_FILE_MODE) -> Iterator[BinaryIO]:
    """Open a file that appears at ``dest`` only once it is complete and durable.

    On a clean exit of the ``with`` block the data is fsynced, renamed to ``dest``
    and the directory fsynced. On an exception the temporary file is removed and
    ``dest`` is left as it was. The file gets exactly ``mode`` (spool files: DICOM
    files, exported copies); ``None``: what the umask allows.
    """
    tmp = tmp_path_for(dest)
    fh = _open_for_writing(tmp, os.O_TRUNC, mode)
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


def atomic_write_bytes(dest: Path, data: bytes, mode: int | None = None) -> None:
    """Write ``data`` to ``dest`` atomically and durably.

    For small files outside the spool (device status, a folder driver's notes):
    their mode is what the umask allows unless ``mode`` says otherwise.
    """
    with atomic_writer(dest, mode) as fh:
        fh.write(data)


def copy_stream(src: BinaryIO, dst: BinaryIO, *, chunk_size: int = 1 << 20) -> int:
    """Copy ``src`` to ``dst`` in bounded chunks; return the number of bytes copied."""
    total = 0
    while chunk := src.read(chunk_size):
        dst.write(chunk)
        total += len(chunk)
    return total


def copy_range(fd: int, dst: BinaryIO, offset: int, length: int, chunk_size: int = 1 << 20) -> None:
    """Copy ``length`` bytes of ``fd`` from ``offset`` to ``dst`` in bounded chunks;
    OSError (EIO) if the file ends first."""
    while length:
        block = os.pread(fd, min(length, chunk_size), offset)
        if not block:
            raise OSError(errno.EIO, "file shorter than expected")
        dst.write(block)
        offset, length = offset + len(block), length - len(block)
