"""``dermgate backup``: one tar that brings a box back whole (see backup_format.py).

Safe beside the running service: the ledger is copied with SQLite's online backup
API (a consistent snapshot of the committed state, never a file copy of a live WAL
database; in WAL mode the snapshot never blocks the service's writes, and a busy
ledger only makes the copy wait and retry). The other files are
small and written atomically by their owners. With ``with_spool`` the raw, DICOM
and derived files **that the snapshot names** are streamed in (never held in
memory), so the restored spool and ledger agree; a file purged between the
snapshot and its turn is left out (reconciliation then shows its capture).

The tar is written to a temporary name beside ``FILE.tar`` with mode 0600 (it holds
patient data), fsynced and renamed: ``FILE.tar`` is complete or absent.

Blocking (file I/O, sqlite3): a command-line process, or a worker thread.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import importlib.metadata
import io
import json
import os
import sqlite3
import stat
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from gateway.core.config import DermGateConfig
from gateway.core.files import fsync_dir
from gateway.service.backup_format import (
    FORMAT,
    FORMAT_VERSION,
    LEDGER_NAME,
    MANIFEST_NAME,
    SPOOL_FOLDERS,
    Entry,
    files_outside,
    not_state_files,
)
from gateway.service.state_lock import StateLock, StateLocked
from gateway.spool.schema import schema_version
from gateway.spool.spool_ids import high_water_path

__all__ = ["BACKUP_MODE", "BackupFailed", "BackupReport", "make_backup"]

BACKUP_MODE = 0o600
_CHUNK = 1 << 20
#: The online backup copies the whole ledger in one step: one read transaction, so the
#: copy is one consistent snapshot and never starts over. In WAL mode a reader never
#: blocks the service's writers; a step that meets a lock (SQLITE_BUSY) sleeps and
#: tries again.
_ALL_PAGES = -1


class BackupFailed(RuntimeError):
    """The backup could not be made; nothing was left at the target name."""


@dataclass
class BackupReport:
    """What went into a backup."""

    path: Path
    entries: list[Entry] = field(default_factory=list)
    schema_version: int = 0
    spool_files_gone: int = 0
    service_running: bool = False  # captures arriving after the snapshot are not in it
    not_held: list[Path] = field(default_factory=list)  # see backup_format.files_outside

    @property
    def total_bytes(self) -> int:
        """The size of the files in it."""
        return sum(e.size for e in self.entries)


class _Hashing(io.RawIOBase):
    """Reads exactly ``size`` bytes of ``source``, hashing them as tarfile takes them."""

    def __init__(self, source: BinaryIO) -> None:
        self._source = source
        self.digest = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self._source.read(size)
        self.digest.update(data)
        return data


def _version() -> str:
    try:
        return importlib.metadata.version("dermgate")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class _Writer:
    """Streams files into an open tar and records them for the manifest."""

    def __init__(self, tar: tarfile.TarFile, report: BackupReport) -> None:
        self._tar = tar
        self._report = report
        self._names: set[str] = set()

    def add(self, name: str, role: str, source: Path) -> bool:
        """Add ``source`` as ``name``; False when it is gone or not a regular file."""
        if name in self._names:
            return True
        try:
            fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            return False
        except OSError as err:
            if err.errno == errno.ELOOP:  # a symlink: never followed
                return False
            raise
        with os.fdopen(fd, "rb") as fh:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                return False
            # A file that grows meanwhile (the audit log) is taken up to its size now.
            member = tarfile.TarInfo(name)
            member.size = info.st_size
            member.mode = BACKUP_MODE
            member.mtime = int(info.st_mtime)
            reader = _Hashing(fh)
            self._tar.addfile(member, reader)
        entry = Entry(name, role, info.st_size, reader.digest.hexdigest(), info.st_mode & 0o770)
        self._report.entries.append(entry)
        self._names.add(name)
        return True

    def add_bytes(self, name: str, data: bytes) -> None:
        """Add ``data`` (the manifest) as ``name``."""
        member = tarfile.TarInfo(name)
        member.size = len(data)
        member.mode = BACKUP_MODE
        member.mtime = int(time.time())
        self._tar.addfile(member, io.BytesIO(data))


def _snapshot_ledger(ledger: Path, into: Path) -> int:
    """Copy the live ledger to ``into`` with the online backup API; its schema version.

    The copy is switched to a rollback journal, so it is one self-contained file.
    """
    if not ledger.is_file():
        raise BackupFailed(f"no ledger at {ledger}: is this the box's configuration?")
    source = sqlite3.connect(f"file:{ledger}?mode=rw", uri=True, isolation_level=None)
    try:
        source.execute("PRAGMA busy_timeout = 10000")
        fd = os.open(into, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, BACKUP_MODE)
        os.close(fd)
        target = sqlite3.connect(into, isolation_level=None)
        try:
            source.backup(target, pages=_ALL_PAGES, sleep=0.05)
            target.execute("PRAGMA journal_mode = DELETE")
            version = schema_version(target)
        finally:
            target.close()
    except sqlite3.Error as err:
        raise BackupFailed(f"the ledger could not be copied: {err}") from err
    finally:
        source.close()
    return version


def _spool_names(snapshot: Path) -> Iterator[tuple[str, str]]:
    """(folder, file name) of each spool file the snapshot's captures name."""
    conn = sqlite3.connect(f"file:{snapshot}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT raw_name, dicom_name FROM captures ORDER BY id").fetchall()
    finally:
        conn.close()
    for raw_name, dicom_name in rows:
        if raw_name:
            yield "raw", str(raw_name)
        if dicom_name:
            yield "dicom", str(dicom_name)
            yield "derived", str(dicom_name)


def _state_files(config: DermGateConfig) -> Iterator[tuple[str, Path]]:
    """(relative name, path) of the other regular files of the state folder."""
    state = config.gateway.state_dir
    skip = not_state_files(config)
    audit = config.audit_path()
    for folder, dirs, files in os.walk(state):
        here = Path(folder)
        if here == state:
            dirs[:] = [d for d in dirs if d not in ("spool", "status")]
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            path = here / name
            in_audit = here == audit.parent and (
                name == audit.name or name.startswith(audit.name + ".")
            )
            if name.startswith(".") or path in skip or in_audit:
                continue
            yield path.relative_to(state).as_posix(), path


def _audit_files(config: DermGateConfig) -> list[Path]:
    audit = config.audit_path()
    try:
        names = os.listdir(audit.parent)
    except FileNotFoundError:
        return []
    return [
        audit.parent / n
        for n in sorted(names)
        if n == audit.name or (n.startswith(audit.name + ".") and not n.endswith(".tmp"))
    ]


def _write(tar: tarfile.TarFile, report: BackupReport, config: DermGateConfig,
           config_file: Path, snapshot: Path, with_spool: bool) -> None:  # fmt: skip
    out = _Writer(tar, report)
    if not out.add("config.toml", "config", config_file):
        raise BackupFailed(f"cannot read the configuration file {config_file}")
    out.add(LEDGER_NAME, "ledger", snapshot)
    out.add("spool-ids.next", "spool_ids", high_water_path(config.gateway.state_dir))
    out.add("users.json", "users", config.users_path())
    out.add("api_tokens.json", "tokens", config.tokens_path())
    for path in _audit_files(config):
        out.add(f"audit/{path.name}", "audit", path)
    for relative, path in _state_files(config):
        out.add(f"state/{relative}", "state", path)
    if with_spool:
        spool = config.spool_dir()
        for folder, name in _spool_names(snapshot):
            if "/" in name or name.startswith(".") or folder not in SPOOL_FOLDERS:
                continue
            present = out.add(f"spool/{folder}/{name}", "spool", spool / folder / name)
            if not present and folder != "derived":
                report.spool_files_gone += 1
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "dermgate_version": _version(),
        "schema_version": report.schema_version,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "gateway_id": config.gateway.id,
        "with_spool": with_spool,
        "files": [e.as_json() for e in report.entries],
    }
    out.add_bytes(MANIFEST_NAME, json.dumps(manifest, indent=1).encode("utf-8"))


def _service_running(config: DermGateConfig) -> bool:
    """True when a service holds the state folder's lock (probed, never waited for)."""
    try:
        StateLock.acquire(config.gateway.state_dir).release()
    except StateLocked:
        return True
    except OSError:  # not ours to open (another user): unknown, say nothing
        return False
    return False


def make_backup(
    config: DermGateConfig, config_file: Path, target: Path, *, with_spool: bool = False
) -> BackupReport:
    """Write the backup of the box ``config`` describes to ``target`` (atomically, 0600).

    Raises :class:`BackupFailed` (or :class:`OSError`); ``target`` is then untouched.
    """
    target = target.absolute()
    if target.is_dir():
        raise BackupFailed(f"{target} is a folder; give the name of the tar to write")
    if target.is_relative_to(config.gateway.state_dir.absolute()):
        raise BackupFailed(
            f"{target} is inside the state folder: a backup there is lost with the card "
            "(and taken into the next backup); write it elsewhere (a USB stick, the network)"
        )
    report = BackupReport(target, service_running=_service_running(config))
    report.not_held = files_outside(config)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    snapshot = target.with_name(f".{target.name}.{os.getpid()}.ledger")
    try:
        report.schema_version = _snapshot_ledger(config.ledger_path(), snapshot)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, BACKUP_MODE)
        os.fchmod(fd, BACKUP_MODE)  # whatever the umask
        with os.fdopen(fd, "wb") as fh:
            with tarfile.open(fileobj=fh, mode="w", format=tarfile.PAX_FORMAT) as tar:
                _write(tar, report, config, config_file, snapshot, with_spool)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        fsync_dir(target.parent)
    finally:
        for leftover in (tmp, snapshot, snapshot.with_name(snapshot.name + "-journal")):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
    return report
