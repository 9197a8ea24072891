"""Drop folders: the host side of devices that deliver by writing files.

A 3D scanner workstation or a camera writes into a folder; the folder driver
decides when an entry is complete, streams it into the spool, and only then, as
the acknowledgement, moves it into ``FOLDER/.processed/``. An entry the gateway
refuses goes to ``FOLDER/.refused/`` with a ``NAME.reason.txt`` beside it saying
why in plain words (never patient data). A name too long to take that suffix
(file names may have 255 bytes) gets a reason file named by the start of the
name, ``~``, 8 hex digits of the SHA-256 of the name's bytes, and ``.reason.txt``
(:func:`reason_file_name`); a second entry of the same name gets a numbered name
that also fits. Entries whose names start with ``.`` are never touched (hidden
files, half-written copies many tools make, our own folders).

Only regular files with a single name are ever read, and they are opened without
following links (:func:`open_regular`): a symbolic link (to a file or folder
anywhere, or dangling), a named pipe, a socket, a device node or a file with a
second hard link is described by :func:`special_kind` and refused by the driver,
never opened. A pipe is checked with ``lstat`` before, and opened with
``O_NONBLOCK`` in case it replaced the file in between, so nothing blocks on it.

A file set aside that changes afterwards (a copy that stalled at 0 bytes and
resumed into the file it still held open) is noticed (:meth:`DropFolder.changed_refusals`)
and moved back to be looked at again (:meth:`DropFolder.take_back`), while the
service runs.

Every move is a rename inside one filesystem followed by fsyncs of both
directories, so after a power cut an entry is either still waiting (it will be
offered again, and intake recognises it) or moved, never lost. These functions are
blocking; drivers run them on a worker thread.
"""

from __future__ import annotations

import errno
import hashlib
import os
import secrets
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final

from gateway.core.files import fsync_dir

__all__ = [
    "ONLY_REGULAR_FILES",
    "DropFolder",
    "EntrySnapshot",
    "NotARegularFile",
    "open_regular",
    "reason_file_name",
    "special_kind",
    "too_large",
]

PROCESSED = ".processed"
REFUSED = ".refused"
REASON_SUFFIX = ".reason.txt"
#: Why a special entry is refused, in words for the technician.
ONLY_REGULAR_FILES: Final = (
    "DermGate reads only regular files with a single name and never follows links "
    "(no symbolic or hard links, pipes, sockets or devices)"
)
_NAME_MAX: Final = 255
_OPEN_FLAGS: Final = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_DIR_FLAGS: Final = _OPEN_FLAGS | os.O_DIRECTORY


class NotARegularFile(Exception):
    """An entry that is not a regular file with one name; ``str(err)`` is what it is
    ("a symbolic link", …), without its name. It was never opened (or, when it
    replaced a file between a look and the open, closed unread)."""


def special_kind(st: os.stat_result) -> str | None:
    """What an entry is when DermGate must not read it (from ``lstat``), else None.

    Folders are not special here (drivers decide what a folder means).
    """
    mode = st.st_mode
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device node"
    if stat.S_ISREG(mode) and st.st_nlink != 1:
        return f"a file with {st.st_nlink} hard links (names)"
    if not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
        return "not a regular file"
    return None


def too_large(size: int, limit: int) -> str:
    """Why a file of ``size`` bytes is refused under a capture limit of ``limit`` bytes
    (``[spool] max_capture_mb``), in words for a reason file; the caller says what."""
    return f"{size} bytes, the limit is {limit // (1 << 20)} MiB ([spool] max_capture_mb)"


def open_regular(path: Path, *, under: Path | None = None) -> BinaryIO:
    """Open a regular file with a single name for reading, following no link (blocking).

    Without ``under``, only the last part of ``path`` is a folder entry (its folder,
    the configured one, may be reached through a link the administrator set up).
    With ``under`` (itself an entry of the watched folder), ``path`` lies inside it
    and ``under`` and every folder between them are opened without following links
    too (a linked sub-folder is refused). Raises
    :class:`NotARegularFile` for anything else, :class:`OSError` when it cannot be
    read (``FileNotFoundError`` when it is not there). Never blocks on a pipe.
    """
    parts = path.relative_to(under).parts if under is not None else (path.name,)
    start = under if under is not None else path.parent
    if not parts:
        raise IsADirectoryError(f"{path} is the folder itself")
    dir_fd = os.open(start, _DIR_FLAGS if under is not None else _DIR_FLAGS & ~os.O_NOFOLLOW)
    try:
        for part in parts[:-1]:
            st = os.stat(part, dir_fd=dir_fd, follow_symlinks=False)
            kind = special_kind(st)
            if kind is not None:
                raise NotARegularFile(kind)
            if not stat.S_ISDIR(st.st_mode):
                raise NotADirectoryError(errno.ENOTDIR, "a part of the path is not a folder")
            inner = os.open(part, _DIR_FLAGS, dir_fd=dir_fd)
            os.close(dir_fd)
            dir_fd = inner
        name = parts[-1]
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        kind = special_kind(st)
        if kind is not None:
            raise NotARegularFile(kind)
        if stat.S_ISDIR(st.st_mode):
            raise NotARegularFile("a folder")
        try:
            fd = os.open(name, _OPEN_FLAGS, dir_fd=dir_fd)
        except OSError as err:
            if err.errno in (errno.ELOOP, errno.EMLINK):
                raise NotARegularFile("a symbolic link") from err
            raise
    finally:
        os.close(dir_fd)
    try:
        _check_opened(os.fstat(fd))
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _check_opened(st: os.stat_result) -> None:
    """What was opened is a regular file with one name (it may have been swapped)."""
    kind = special_kind(st)
    if kind is None and not stat.S_ISREG(st.st_mode):
        kind = "not a regular file"
    if kind is not None:
        raise NotARegularFile(kind)


def reason_file_name(name: str, name_max: int = _NAME_MAX) -> str:
    """The name of the reason file of the entry ``name`` in ``.refused/``.

    ``NAME.reason.txt`` when that fits in ``name_max`` bytes; otherwise the start
    of the name, ``~``, 8 hex digits of the SHA-256 of its bytes and ``.reason.txt``.
    """
    raw = os.fsencode(name)
    suffix = REASON_SUFFIX.encode()
    if len(raw) + len(suffix) <= name_max:
        return os.fsdecode(raw + suffix)
    tag = b"~" + hashlib.sha256(raw).hexdigest()[:8].encode() + suffix
    return os.fsdecode(_shortened(raw, name_max - len(tag)) + tag)


def _shortened(raw: bytes, limit: int) -> bytes:
    """The longest start of ``raw`` within ``limit`` bytes, not cutting a UTF-8 character."""
    text = os.fsdecode(raw[: max(0, limit) + 4])
    while len(os.fsencode(text)) > limit:
        text = text[:-1]
    return os.fsencode(text)


@dataclass(frozen=True, slots=True)
class EntrySnapshot:
    """Sizes and modification times of every file of one entry, to tell if it still moves."""

    files: tuple[tuple[str, int, int], ...]


@dataclass(frozen=True, slots=True)
class _Refusal:
    """A regular file this run set aside: its name in the folder and how it looked."""

    original: str
    inode: int
    size: int
    mtime_ns: int


class DropFolder:
    """One watched folder with its ``.processed`` and ``.refused`` sub-folders."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.processed = root / PROCESSED
        self.refused = root / REFUSED
        #: name in .refused -> the regular file set aside there by this run
        self._refusals: dict[str, _Refusal] = {}

    def prepare(self) -> None:
        """Create the sub-folders (the folder itself must exist: it is the device's)."""
        if not self.root.is_dir():
            raise FileNotFoundError(f"drop folder {self.root} does not exist")
        for sub in (self.processed, self.refused):
            sub.mkdir(exist_ok=True)

    def entries(self) -> list[Path]:
        """Waiting entries (files or folders, links not followed), oldest first,
        hidden ones skipped."""
        found: list[tuple[int, str]] = []
        with os.scandir(self.root) as it:
            for item in it:
                if item.name.startswith("."):
                    continue
                try:
                    mtime = item.stat(follow_symlinks=False).st_mtime_ns
                except FileNotFoundError:
                    continue
                found.append((mtime, item.name))
        return [self.root / name for _, name in sorted(found)]

    @staticmethod
    def snapshot(entry: Path) -> EntrySnapshot:
        """What the entry looks like now (a folder: everything under it), by ``lstat``."""
        st = entry.lstat()
        if not stat.S_ISDIR(st.st_mode):
            return EntrySnapshot(((entry.name, st.st_size, st.st_mtime_ns),))
        files: list[tuple[str, int, int]] = []
        _walk(entry, "", files)
        return EntrySnapshot(tuple(sorted(files)))

    @staticmethod
    def settled(unchanged_since: float, quiet_for: float, now: float | None = None) -> bool:
        """True when an entry has looked the same (names, sizes, times) for ``quiet_for``
        seconds since ``unchanged_since``, both on the box's monotonic clock.

        Never judged by the files' modification times against the box's clock: a file
        server's clock that runs ahead would hold every entry back by the difference,
        and one that runs behind would make a copy in progress look finished.
        """
        return (time.monotonic() if now is None else now) - unchanged_since >= quiet_for

    def mark_processed(self, entry: Path) -> Path:
        """Acknowledge ``entry``: move it into ``.processed/`` (durably)."""
        return self._move(entry, self.processed)

    def refuse(self, entry: Path, reason: str) -> Path:
        """Set ``entry`` aside in ``.refused/`` with a reason file beside it."""
        target = self._free_name(self.refused, entry.name)
        reason_path = self.refused / reason_file_name(target.name, self._name_max())
        _write_durably(reason_path, (reason.rstrip() + "\n").encode())
        try:
            moved = self._move(entry, self.refused, target)
        except BaseException:
            reason_path.unlink(missing_ok=True)  # no reason without its entry
            raise
        st = moved.lstat()
        if stat.S_ISREG(st.st_mode) and st.st_nlink == 1:
            self._refusals[moved.name] = _Refusal(entry.name, st.st_ino, st.st_size, st.st_mtime_ns)
        return moved

    def changed_refusals(self) -> list[str]:
        """Names in ``.refused/`` of files this run set aside that changed since
        (size, time or inode): a copy that went on. Files that are gone are forgotten."""
        changed = []
        for name, was in list(self._refusals.items()):
            try:
                st = (self.refused / name).lstat()
            except FileNotFoundError:
                del self._refusals[name]
                continue
            if (st.st_ino, st.st_size, st.st_mtime_ns) != (was.inode, was.size, was.mtime_ns):
                changed.append(name)
        return changed

    def take_back(self, name: str) -> bool:
        """Move a changed refused file back into the folder under its first name, and
        drop its reason; False (try later) while another entry holds that name."""
        was = self._refusals[name]
        target = self.root / was.original
        if os.path.lexists(target):
            return False
        os.rename(self.refused / name, target)
        del self._refusals[name]
        reason = self.refused / reason_file_name(name, self._name_max())
        reason.unlink(missing_ok=True)
        fsync_dir(self.root)
        fsync_dir(self.refused)
        return True

    def _move(self, entry: Path, into: Path, target: Path | None = None) -> Path:
        into.mkdir(exist_ok=True)
        target = target or self._free_name(into, entry.name)
        os.rename(entry, target)
        fsync_dir(into)
        fsync_dir(entry.parent)
        return target

    def _free_name(self, into: Path, name: str) -> Path:
        """``into/name``, or a numbered name (``name.2`` …, shortened to fit the
        file-name limit) when a same-named entry or reason file is already there."""
        name_max = self._name_max()
        raw = os.fsencode(name)
        candidate = name
        n = 2
        while os.path.lexists(into / candidate) or os.path.lexists(
            into / reason_file_name(candidate, name_max)
        ):
            tail = f".{n}".encode()
            if len(raw) + len(tail) > name_max:
                tail = b"~" + hashlib.sha256(raw).hexdigest()[:8].encode() + tail
            candidate = os.fsdecode(_shortened(raw, name_max - len(tail)) + tail)
            n += 1
        return into / candidate

    def _name_max(self) -> int:
        try:
            return min(_NAME_MAX, os.pathconf(self.root, "PC_NAME_MAX"))
        except (OSError, ValueError):
            return _NAME_MAX


def _write_durably(dest: Path, data: bytes) -> None:
    """Write ``dest`` atomically and durably through a short hidden temporary name
    (``dest``'s own name may already be as long as a name can be)."""
    tmp = dest.with_name(f".reason-{secrets.token_hex(8)}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.rename(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(dest.parent)


def _walk(folder: Path, prefix: str, into: list[tuple[str, int, int]]) -> None:
    """Every entry under ``folder`` (not following links), as (path, size, mtime)."""
    with os.scandir(folder) as it:
        items = list(it)
    for item in items:
        rel = f"{prefix}{item.name}"
        try:
            st = item.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue
        if stat.S_ISDIR(st.st_mode):
            _walk(folder / item.name, rel + "/", into)
        else:
            into.append((rel, st.st_size, st.st_mtime_ns))
