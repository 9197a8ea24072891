"""The page's small secret files (logins, API tokens): one versioned JSON table each.

``{"version": N, "<table>": {NAME: {...}}}``, read whole and checked (a damaged file
is refused as a whole with a message naming the file and the kind of damage, never
its content) and written atomically with mode 0600 (the folder 0700), optionally
handed to the state folder's owner before it appears (see
:mod:`gateway.core.state_owner`). :mod:`.users` and :mod:`.tokens` keep their
records' meaning; this module only their file.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.core.files import atomic_writer
from gateway.core.state_owner import hand_over, state_owner

__all__ = ["read_table", "write_table", "write_table_for_service"]


def read_table(
    path: Path,
    *,
    what: str,
    version: int,
    table: str,
    name: re.Pattern[str],
    record_ok: Callable[[Any], bool],
    error: Callable[[str], Exception],
) -> dict[str, dict[str, Any]]:
    """The records of the ``table`` in ``path`` (``what``: "users file"); a missing
    file is an empty table. Raises ``error(message)`` for a file that cannot be used."""
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        return {}
    except OSError as err:
        raise error(f"cannot read the {what} {path}: {err.strerror}") from err
    except UnicodeDecodeError as err:
        raise error(f"the {what} {path} is damaged: not UTF-8 text") from err
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as err:
        raise error(
            f"the {what} {path} is damaged: not valid JSON (line {err.lineno}, column {err.colno})"
        ) from err
    if not isinstance(raw, dict) or raw.get("version") != version:
        raise error(f"{path} is not a DermGate {what} (version {version})")
    records = raw.get(table)
    if not isinstance(records, dict):
        raise error(f"{path} has no {table} table")
    for key, record in records.items():
        if not name.match(str(key)) or not record_ok(record):
            raise error(f"the {what} {path} is damaged: an entry is unreadable")
    return dict(records)


def write_table(
    path: Path,
    *,
    version: int,
    table: str,
    records: dict[str, dict[str, Any]],
    owner: tuple[int, int] | None = None,
) -> None:
    """Write atomically with mode 0600 (folder created 0700 if missing); with
    ``owner`` (uid, gid) the file belongs to them before it appears."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    data = json.dumps({"version": version, table: records}, indent=2, sort_keys=True)
    old = os.umask(0o077)
    try:
        with atomic_writer(path) as fh:
            fh.write(data.encode("utf-8") + b"\n")
            os.fchmod(fh.fileno(), 0o600)
            if owner is not None:
                os.fchown(fh.fileno(), *owner)
    finally:
        os.umask(old)


def write_table_for_service(
    path: Path, state_dir: Path, write: Callable[[tuple[int, int] | None], None]
) -> None:
    """``write(owner)`` as a command does it: run as root, the file and the folders it
    creates under ``state_dir`` get ``state_dir``'s owner and group, so the service
    (its own user) can read them."""
    owner = state_owner(state_dir)
    write(owner)
    hand_over(path, state_dir, owner)
