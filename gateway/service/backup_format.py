"""What a DermGate backup tar holds, and where each of its files belongs on a box.

The tar (plain, uncompressed: DICOM files are compressed already) holds regular files
only, each under a name that says what it is, and ``MANIFEST.json`` as its **last**
member (the hashes are known only once every file has been streamed in):

=============================  ========  ==================================================
Member                         Role      Restored to (paths of the restoring configuration)
=============================  ========  ==================================================
``config.toml``                config    the ``--config`` file
``ledger.sqlite3``             ledger    ``STATE_DIR/ledger.sqlite3`` (with the worklist
                                         cache, sessions, lesions, MPPS: all in the ledger)
``spool-ids.next``             spool_ids ``STATE_DIR/spool-ids.next`` (the id high-water)
``users.json``                 users     ``[web] users_file`` or its default
``api_tokens.json``            tokens    ``[web] tokens_file`` or its default
``audit/NAME``                 audit     beside ``[web] audit_log`` (it and its rotations)
``state/PATH``                 state     ``STATE_DIR/PATH`` (send-now overrides, …)
``spool/raw|dicom|derived/N``  spool     ``STATE_DIR/spool/…`` (``--with-spool`` only)
=============================  ========  ==================================================

The manifest names every file with its role, size and SHA-256; restore refuses a
tar whose members are not exactly these regular files with these hashes. The
hashes find damage, not forgery: whoever can write the tar can rewrite the manifest.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Final

from gateway.core.config import DermGateConfig
from gateway.service.state_lock import LOCK_NAME
from gateway.spool.reserve import RESERVE_NAME
from gateway.spool.spool_ids import HIGH_WATER_NAME, high_water_path

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "SPOOL_FOLDERS",
    "BackupDamaged",
    "Entry",
    "files_outside",
    "not_state_files",
    "target_of",
]

FORMAT: Final = "dermgate-backup"
FORMAT_VERSION: Final = 1
MANIFEST_NAME: Final = "MANIFEST.json"
#: The spool folders a ``--with-spool`` backup holds (never staging/: not acknowledged).
SPOOL_FOLDERS: Final = ("raw", "dicom", "derived")
LEDGER_NAME: Final = "ledger.sqlite3"
_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._+@=-]{0,254}")
_FIXED: Final = {
    "config.toml": "config",
    LEDGER_NAME: "ledger",
    HIGH_WATER_NAME: "spool_ids",
    "users.json": "users",
    "api_tokens.json": "tokens",
}


#: Configuration keys naming certificates, keys and secret files (``tls_ca``,
#: ``listen_tls_key``, ``password_file``, ``client_secret_file``, …).
_SECRET_KEYS: Final = ("_file", "_cert", "_key", "_ca")


class BackupDamaged(ValueError):
    """The tar is not a backup this DermGate can restore (damaged, hostile, newer)."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One file of a backup as the manifest lists it."""

    name: str
    role: str
    size: int
    sha256: str
    mode: int

    def as_json(self) -> dict[str, Any]:
        """The manifest's record of this file."""
        return {
            "name": self.name,
            "role": self.role,
            "size": self.size,
            "sha256": self.sha256,
            "mode": self.mode,
        }

    @classmethod
    def from_json(cls, item: Any) -> Entry:
        """Read one manifest record; :class:`BackupDamaged` if it is malformed."""
        if not isinstance(item, dict):
            raise BackupDamaged("the manifest lists something that is not a file record")
        name, role, size = item.get("name"), item.get("role"), item.get("size")
        digest, mode = item.get("sha256"), item.get("mode", 0o600)
        if not (
            isinstance(name, str)
            and isinstance(role, str)
            and isinstance(size, int)
            and size >= 0
            and isinstance(digest, str)
            and re.fullmatch(r"[0-9a-f]{64}", digest)
            and isinstance(mode, int)
        ):
            raise BackupDamaged("the manifest has a malformed file record")
        safe_parts(name)
        return cls(name, role, size, digest, mode & 0o770)


def safe_parts(name: str) -> tuple[str, ...]:
    """The parts of a member name that is relative, without ``..``, links or odd
    characters; :class:`BackupDamaged` otherwise (a hostile tar writes nowhere)."""
    path = PurePosixPath(name)
    if name != str(path) or path.is_absolute() or not path.parts:
        raise BackupDamaged(f"refused member name {name!r}: not a plain relative path")
    for part in path.parts:
        if part in (".", "..") or not _PART.fullmatch(part):
            raise BackupDamaged(f"refused member name {name!r}: {part!r} is not a plain name")
    return path.parts


def not_state_files(config: DermGateConfig) -> set[Path]:
    """Files in the state folder that a backup takes in its own way or never takes."""
    state = config.gateway.state_dir
    ledger = config.ledger_path()
    return {
        ledger,
        ledger.with_name(ledger.name + "-wal"),
        ledger.with_name(ledger.name + "-shm"),
        ledger.with_name(ledger.name + "-journal"),
        state / LOCK_NAME,
        state / RESERVE_NAME,
        high_water_path(state),
        config.users_path(),
        config.tokens_path(),
    }


def files_outside(config: DermGateConfig, *, present: bool = True) -> list[Path]:
    """Files the configuration names outside the state folder that a backup does not
    hold: certificates, private keys, password and token files (secrets that clinic
    IT installs and keeps, and that a restore must find in place). With ``present``
    False: also those that are not there."""
    found: set[Path] = set()

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                if isinstance(item, Path) and str(key).endswith(_SECRET_KEYS):
                    found.add(item)
                else:
                    walk(item)
        elif isinstance(value, list | tuple):
            for item in value:
                walk(item)

    walk(config.model_dump())
    state = config.gateway.state_dir
    held = {config.users_path(), config.tokens_path(), config.audit_path()}
    wanted = (p for p in found if p not in held and not p.is_relative_to(state))
    return sorted(p for p in wanted if p.is_file() or not (present or p.is_dir()))


def _is_audit(name: str, audit: Path) -> bool:
    return name == audit.name or name.startswith(audit.name + ".")


def target_of(entry: Entry, config: DermGateConfig, config_file: Path) -> Path:
    """Where ``entry`` goes on the box that ``config`` describes.

    Raises :class:`BackupDamaged` for a name or role that has no place there.
    """
    parts = safe_parts(entry.name)
    state = config.gateway.state_dir
    if len(parts) == 1 and _FIXED.get(parts[0]) == entry.role:
        fixed = {
            "config": config_file,
            "ledger": config.ledger_path(),
            "spool_ids": high_water_path(state),
            "users": config.users_path(),
            "tokens": config.tokens_path(),
        }
        return fixed[entry.role]
    if entry.role == "audit" and len(parts) == 2 and parts[0] == "audit":
        audit = config.audit_path()
        if _is_audit(parts[1], audit):
            return audit.with_name(parts[1])
    if (
        entry.role == "spool"
        and len(parts) == 3
        and parts[0] == "spool"
        and parts[1] in SPOOL_FOLDERS
        and not parts[2].startswith(".")
    ):
        return config.spool_dir() / parts[1] / parts[2]
    if entry.role == "state" and len(parts) >= 2 and parts[0] == "state":
        target = state.joinpath(*parts[1:])
        if parts[1] not in ("spool", "status") and target not in not_state_files(config):
            return target
    raise BackupDamaged(f"refused member {entry.name!r}: no place for a {entry.role!r} file")
