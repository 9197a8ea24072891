"""``dermgate restore``: a backup tar back onto a box (a new SD card), or nothing.

1. The whole tar is read once and checked before anything is written: only regular
   files with plain relative names (no ``..``, absolute paths, links, devices,
   folders), exactly the files the manifest lists with their sizes and SHA-256, a
   backup format and ledger schema this DermGate knows, and a place on the box for
   each (:func:`~gateway.service.backup_format.target_of`).
2. The state folder's lock (:mod:`gateway.service.state_lock`) is taken: a running
   service refuses the restore. A state folder with anything in it is refused
   unless ``force``; then it is moved aside to ``STATE_DIR.before-restore-TIME``,
   never deleted. So is a different configuration, users, tokens or audit file
   outside it (``FILE.before-restore-TIME``).
3. The files are written into ``.STATE_DIR.restoring-PID`` beside the state folder
   (hashes checked again as they are written), and the folder is renamed into place.

The restored ledger is the snapshot the backup took: the next ``dermgate run`` puts
it through the normal start-up reconciliation (:mod:`gateway.spool.reconcile`).
From a backup without the spool, a capture still waiting to be sent has no files:
reconciliation shows it QUARANTINED "raw capture file missing" (never dropped);
sent ones keep waiting for their storage commitment; :attr:`RestoreReport.missing`
counts them beforehand.

Blocking (file I/O, sqlite3): a command-line process.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sqlite3
import tarfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from gateway.core.config import ConfigError, DermGateConfig
from gateway.core.files import fsync_dir
from gateway.service.backup_format import (
    FORMAT,
    FORMAT_VERSION,
    LEDGER_NAME,
    MANIFEST_NAME,
    BackupDamaged,
    Entry,
    files_outside,
    safe_parts,
    target_of,
)
from gateway.service.config import parse_config
from gateway.service.state_lock import LOCK_NAME, StateLock
from gateway.spool.schema import SCHEMA_VERSION
from gateway.spool.states import CaptureState

__all__ = ["RestoreBadConfig", "RestoreRefused", "RestoreReport", "restore_backup"]

_CHUNK = 1 << 20
_SMALL = 16 << 20  # the manifest and the configuration are read into memory: cap them


class RestoreRefused(RuntimeError):
    """The box is not in a state to take the restore (nothing was changed)."""


class RestoreBadConfig(RestoreRefused):
    """The configuration to restore with (the backup's, or ``--keep-config``'s FILE)
    is not usable."""


@dataclass
class RestoreReport:
    """What a restore did."""

    state_dir: Path
    files: int = 0
    with_spool: bool = False
    created: str = ""
    moved_aside: list[Path] = field(default_factory=list)
    missing: int = 0  # captures waiting to be sent whose files are not in the backup
    absent: list[Path] = field(default_factory=list)  # secrets to copy before starting


@dataclass
class _Checked:
    manifest: dict[str, Any]
    entries: dict[str, Entry]
    config_text: str


def _member_problem(member: tarfile.TarInfo) -> str | None:
    if not member.isreg():
        kind = "link" if member.issym() or member.islnk() else "folder, device or special file"
        return f"refused member {member.name!r}: a {kind}; a backup holds regular files only"
    return None


def _check(tar_path: Path) -> _Checked:
    """Read the whole tar and check it (nothing is written)."""
    seen: dict[str, tuple[int, str]] = {}
    manifest_raw: bytes | None = None
    config_raw = b""
    try:
        with tarfile.open(tar_path, mode="r:") as tar:
            for member in tar:
                problem = _member_problem(member)
                if problem is not None:
                    raise BackupDamaged(problem)
                safe_parts(member.name)
                if manifest_raw is not None:
                    raise BackupDamaged(f"refused member {member.name!r} after the manifest")
                if member.name in seen:
                    raise BackupDamaged(f"refused member {member.name!r}: there twice")
                source = tar.extractfile(member)
                assert source is not None  # a regular file
                digest = hashlib.sha256()
                keep = member.name in (MANIFEST_NAME, "config.toml") and member.size <= _SMALL
                kept = bytearray()
                while chunk := source.read(_CHUNK):
                    digest.update(chunk)
                    if keep:
                        kept += chunk
                if member.name == MANIFEST_NAME:
                    manifest_raw = bytes(kept)
                    continue
                if member.name == "config.toml":
                    config_raw = bytes(kept)
                seen[member.name] = (member.size, digest.hexdigest())
    except (tarfile.TarError, EOFError) as err:
        raise BackupDamaged(f"not a readable tar ({err})") from err
    if manifest_raw is None:
        raise BackupDamaged(f"no {MANIFEST_NAME} at its end: not a DermGate backup, or cut short")
    try:
        manifest = json.loads(manifest_raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BackupDamaged(f"{MANIFEST_NAME} is damaged") from err
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupDamaged(f"{MANIFEST_NAME} is not a DermGate backup's")
    version, schema = manifest.get("format_version"), manifest.get("schema_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise BackupDamaged(
            f"made by a newer DermGate (backup format {version}, this one knows "
            f"{FORMAT_VERSION}): restore it with that version or newer"
        )
    if not isinstance(schema, int) or schema > SCHEMA_VERSION:
        raise BackupDamaged(
            f"its ledger has schema {schema}, newer than this DermGate knows ({SCHEMA_VERSION}): "
            "install the DermGate that made it (or newer) first"
        )
    files = manifest.get("files")
    if not isinstance(files, list):
        raise BackupDamaged(f"{MANIFEST_NAME} lists no files")
    entries = {e.name: e for e in map(Entry.from_json, files)}
    if set(entries) != set(seen) or len(entries) != len(files):
        raise BackupDamaged("its files are not the ones its manifest lists: damaged or altered")
    for name, entry in entries.items():
        if seen[name] != (entry.size, entry.sha256):
            raise BackupDamaged(f"{name} does not match its SHA-256 in the manifest: damaged")
    if "config.toml" not in entries or LEDGER_NAME not in entries:
        raise BackupDamaged("it has no configuration or no ledger")
    try:
        config_text = config_raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise BackupDamaged("its configuration is not UTF-8 text") from err
    return _Checked(manifest, entries, config_text)


def _aside(path: Path, stamp: str) -> Path:
    return path.with_name(f"{path.name}.before-restore-{stamp}")


def _lock(state_dir: Path) -> StateLock:
    from gateway.service.state_lock import StateLocked

    try:
        return StateLock.acquire(state_dir)
    except StateLocked as err:
        holder = f" (PID {err.pid})" if err.pid is not None else ""
        raise RestoreRefused(
            f"the DermGate service is running on {state_dir}{holder}: stop it first "
            "(systemctl stop dermgate), then restore; nothing was changed"
        ) from None


def _write_member(source: Any, dest: Path, entry: Entry) -> None:
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    digest = hashlib.sha256()
    with os.fdopen(fd, "wb") as fh:
        os.fchmod(fd, entry.mode or 0o600)
        while chunk := source.read(_CHUNK):
            digest.update(chunk)
            fh.write(chunk)
        fh.flush()
        os.fsync(fh.fileno())
    if digest.hexdigest() != entry.sha256:
        raise BackupDamaged(f"{entry.name} changed while it was restored: damaged")


def _ledger_check(ledger: Path) -> None:
    with open(ledger, "rb") as fh:
        header = fh.read(100)
    if len(header) < 100 or not header.startswith(b"SQLite format 3\0"):
        raise BackupDamaged("its ledger is not an SQLite database")
    if int.from_bytes(header[60:64], "big") > SCHEMA_VERSION:
        raise BackupDamaged("its ledger's schema is newer than this DermGate knows")
    conn = sqlite3.connect(ledger, isolation_level=None)
    try:
        if conn.execute("PRAGMA quick_check").fetchone()[0] != "ok":
            raise BackupDamaged("its ledger fails SQLite's check: damaged")
    finally:
        conn.close()


def _missing(ledger: Path, spool: Path) -> int:
    """Captures still to be sent whose raw and DICOM files both are not restored."""
    conn = sqlite3.connect(ledger, isolation_level=None)
    try:
        rows = conn.execute(
            "SELECT raw_name, dicom_name FROM captures WHERE state IN (?, ?, ?)",
            (CaptureState.HELD, CaptureState.CAPTURED, CaptureState.WRAPPED),
        ).fetchall()
    finally:
        conn.close()
    return sum(
        1
        for raw, dicom in rows
        if not (raw and (spool / "raw" / raw).is_file())
        and not (dicom and (spool / "dicom" / dicom).is_file())
    )


def _config_of(checked: _Checked, config_file: Path, keep_config: bool) -> DermGateConfig:
    try:
        text = config_file.read_text(encoding="utf-8") if keep_config else checked.config_text
        return parse_config(text, config_file, broken_drivers_fatal=False, service=True)
    except ConfigError as err:
        where = str(config_file) if keep_config else "the backup's configuration"
        raise RestoreBadConfig(f"{where} is not usable: " + "; ".join(err.problems)) from err
    except OSError as err:
        raise RestoreBadConfig(f"cannot read {config_file}: {err.strerror or err}") from err


def _has_state(state_dir: Path) -> bool:
    return any(p.name != LOCK_NAME for p in state_dir.iterdir())


def _refuse_unless_empty(state_dir: Path, force: bool) -> None:
    if _has_state(state_dir) and not force:
        raise RestoreRefused(
            f"{state_dir} is not empty (a box's state is there): restore does not "
            "overwrite it; nothing was changed. Add --force to move it aside (kept, "
            "never deleted)"
        )


def _owner(state_dir: Path) -> tuple[int, int] | None:
    if os.geteuid() != 0:
        return None
    info = (state_dir if state_dir.exists() else state_dir.parent).stat()
    return info.st_uid, info.st_gid


def _extract(
    tar_path: Path,
    checked: _Checked,
    targets: dict[str, Path],
    state_dir: Path,
    work: Path,
    staged: dict[Path, Path],
) -> int:
    """Write every file: the state folder's into ``work``, the others to temporary
    names beside their places (recorded in ``staged``); the number written."""
    written = 0
    with tarfile.open(tar_path, mode="r:") as tar:
        for member in tar:
            if member.name == MANIFEST_NAME:
                continue
            if member.name not in checked.entries or _member_problem(member) is not None:
                raise BackupDamaged(f"{tar_path} changed while it was restored")
            entry, target = checked.entries[member.name], targets[member.name]
            if target.is_relative_to(state_dir):
                dest = work / target.relative_to(state_dir)
                dest.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                dest = target.with_name(f".{target.name}.restoring-{os.getpid()}")
                staged[dest] = target
            _write_member(tar.extractfile(member), dest, entry)
            written += 1
    return written


def _put_outside(staged: dict[Path, Path], stamp: str) -> list[Path]:
    """Move the staged files outside the state folder into place; a different file
    there is moved aside first (returned), never deleted."""
    moved: list[Path] = []
    for dest, target in staged.items():
        if target.is_file() and target.read_bytes() == dest.read_bytes():
            dest.unlink()
            continue
        if target.exists():
            info = target.stat()
            with contextlib.suppress(PermissionError):
                os.chown(dest, info.st_uid, info.st_gid)
            os.rename(target, _aside(target, stamp))
            moved.append(_aside(target, stamp))
        os.replace(dest, target)
        fsync_dir(target.parent)
    return moved


def restore_backup(
    tar_path: Path, config_file: Path, *, force: bool = False, keep_config: bool = False
) -> RestoreReport:
    """Restore ``tar_path`` onto the box whose configuration is ``config_file``.

    Without ``keep_config`` the backup's configuration becomes ``config_file`` (a
    different one there is moved aside) and says where the state goes; with it,
    ``config_file`` stays, the state goes where it says, and the backup's
    configuration is written beside it as ``FILE.from-backup``. Raises
    :class:`BackupDamaged`, :class:`RestoreRefused` or :class:`OSError`.
    """
    checked = _check(tar_path)
    config = _config_of(checked, config_file.absolute(), keep_config)
    config_file = config_file.absolute()
    state_dir = config.gateway.state_dir.absolute()
    targets = {n: target_of(e, config, config_file) for n, e in checked.entries.items()}
    if keep_config:  # the backup's configuration beside it, for comparison
        targets["config.toml"] = config_file.with_name(f"{config_file.name}.from-backup")
    if len(set(targets.values())) != len(targets):
        raise BackupDamaged("two of its files go to the same place")
    if not keep_config and config_file.is_file():
        with contextlib.suppress(ConfigError, OSError):
            current = parse_config(config_file.read_text(encoding="utf-8"), config_file,
                                   broken_drivers_fatal=False)  # fmt: skip
            running_on = current.gateway.state_dir.absolute()
            if running_on != state_dir and running_on.is_dir():
                _lock(running_on).release()
    owner = _owner(state_dir)
    report = RestoreReport(state_dir, with_spool=bool(checked.manifest.get("with_spool")))
    report.created = str(checked.manifest.get("created", ""))
    report.absent = [p for p in files_outside(config, present=False) if not p.exists()]
    stamp = datetime.now().strftime("%Y%m%dT%H%M%S")
    held = _lock(state_dir)
    work = state_dir.with_name(f".{state_dir.name}.restoring-{os.getpid()}")
    staged: dict[Path, Path] = {}
    inner: StateLock | None = None
    aside: Path | None = None
    try:
        _refuse_unless_empty(state_dir, force)
        work.mkdir(mode=0o750)
        inner = StateLock.acquire(work)
        report.files = _extract(tar_path, checked, targets, state_dir, work, staged)
        ledger = work / config.ledger_path().relative_to(state_dir)
        _ledger_check(ledger)
        report.missing = _missing(ledger, work / config.spool_dir().relative_to(state_dir))
        if owner is not None:
            for folder, dirs, files in os.walk(work):
                for name in [*dirs, *files, "."]:
                    os.chown(Path(folder) / name, *owner, follow_symlinks=False)
        if _has_state(state_dir):
            aside = _aside(state_dir, stamp)
            os.rename(state_dir, aside)
        else:
            (state_dir / LOCK_NAME).unlink(missing_ok=True)
            state_dir.rmdir()
        os.rename(work, state_dir)
        fsync_dir(state_dir.parent)
        if aside is not None:
            report.moved_aside.append(aside)
        report.moved_aside += _put_outside(staged, stamp)
    except BaseException:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)  # our own half-written copy only
        if aside is not None and not state_dir.exists():
            os.rename(aside, state_dir)  # the old state back where it was
        for dest in staged:
            dest.unlink(missing_ok=True)
        raise
    finally:
        if inner is not None:
            inner.release()
        held.release()
    return report
