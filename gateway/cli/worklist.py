"""``dermgate worklist list|refresh``: the box's Modality Worklist cache.

::

    dermgate worklist list --config FILE [--json] [--reveal [--reason WHY]]
    dermgate worklist refresh --config FILE

``list`` reads the cache from the ledger (read-only) and shows how old it is; names,
Patient IDs, birth dates, sex and accession numbers are masked unless ``--reveal``,
which first appends a line to the reveal audit log (the same log as ``spool show
--reveal`` and the page; no line, no data). ``refresh`` queries the worklist SCP now
and writes the cache (the ledger takes a second writer while the service runs).

Exit codes: 0 success; 1 the SCP could not be queried (the cache is kept) or the
ledger/audit log could not be used; 2 bad configuration or no ``[worklist]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

from gateway.cli.spool_common import os_user
from gateway.context.worklist_fetch import WorklistError, fetch_worklist
from gateway.context.worklist_source import status_from_record
from gateway.core.config import ConfigError, DermGateConfig
from gateway.core.config.context import WorklistSettings
from gateway.core.context import WorklistEntry, WorklistStatus
from gateway.service.config import load_config
from gateway.spool import ledger as db
from gateway.spool.worklist_cache import cached_items, fetch_record, record_failure, replace_items

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
MASK = "\u2022" * 8
REASONS = ("care", "reconciliation", "support", "audit")

EPILOG = """\
exit codes:
  0  success
  1  the worklist SCP could not be queried (the cached worklist is kept), or the
     ledger or the audit log could not be used
  2  bad usage, bad configuration, or no [worklist] section
"""


class _Stop(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def _settings(path: Path) -> tuple[DermGateConfig, WorklistSettings]:
    try:
        config = load_config(path)
    except ConfigError as err:
        for problem in err.problems:
            print(problem, file=sys.stderr)
        raise _Stop(EXIT_USAGE, "") from err
    if config.worklist is None:
        raise _Stop(EXIT_USAGE, f"{path} has no [worklist] section")
    return config, config.worklist


def _age_text(status: WorklistStatus, now: float) -> str:
    age = status.age(now)
    if age is None:
        return "never fetched"
    text = f"fetched {age:.0f} s ago"
    return text + (" (stale)" if status.stale else "")


def _status_line(settings: WorklistSettings, status: WorklistStatus, now: float) -> str:
    where = f"{settings.ae_title}@{settings.host}:{settings.port}"
    line = f"worklist {where}: {status.items} item(s), {_age_text(status, now)}"
    if status.truncated:
        line += f", cut at max_items {settings.max_items}"
    if status.error is not None:
        line += f"; last refresh failed: {status.error}"
    return line


def _read_cache(config: DermGateConfig) -> tuple[list[WorklistEntry], Any]:
    path = config.ledger_path()
    if not path.exists():
        return [], (None, None, None, 0, False)
    try:
        conn = db.open_ledger(path, readonly=True)
        try:
            return cached_items(conn), fetch_record(conn)
        finally:
            conn.close()
    except sqlite3.Error as err:
        raise _Stop(EXIT_FAILURE, f"cannot read the ledger {path}: {err}") from err


def _audit(config: DermGateConfig, items: int, reason: str) -> None:
    """The audit line before patient data is shown (no line, no data)."""
    from gateway.core.state_owner import missing_folders, owned_like
    from gateway.status.web.audit import AuditLog

    log = AuditLog.from_config(config)
    try:
        created = missing_folders(log.path)
        log.append_fields(os_user(), "cli-worklist-reveal", {"items": items, "reason": reason})
        owned_like(config.gateway.state_dir, *created, log.path)
    except OSError as err:
        raise _Stop(
            EXIT_FAILURE,
            f"cannot write the audit log {log.path} ({err.strerror or err}): "
            "patient data not shown",
        ) from err


def _row(item: WorklistEntry, reveal: bool) -> dict[str, Any]:
    def shown(value: str) -> str | None:
        return value if reveal else None

    p = item.patient
    return {
        "key": item.key if reveal else None,  # holds the Study Instance UID
        "date": item.sps_start_date,
        "time": item.sps_start_time,
        "modality": item.modality,
        "station": item.station_ae_title,
        "procedure": item.requested_procedure_description or item.sps_description,
        "patient_name": shown(p.patient_name),
        "patient_id": shown(p.patient_id),
        "issuer_of_patient_id": shown(p.issuer_of_patient_id),
        "birth_date": shown(p.birth_date),
        "sex": shown(p.sex),
        "accession_number": shown(item.accession_number),
        "fetched_at": item.fetched_at,
    }


def _list(args: argparse.Namespace) -> int:
    config, settings = _settings(args.config)
    items, record = _read_cache(config)
    now = time.time()
    status = status_from_record(record, settings.stale_after, now)
    if args.reveal and items:
        _audit(config, len(items), args.reason)
        print("warning: patient data shown (--reveal)", file=sys.stderr)
    rows = [_row(i, args.reveal) for i in items]
    if args.json:
        age = status.age(now)
        document = {
            "items": status.items,
            "age_s": None if age is None else round(age, 1),
            "stale": status.stale,
            "truncated": status.truncated,
            "last_error": status.error,
            "revealed": bool(args.reveal),
            "entries": rows,
        }
        print(json.dumps(document, sort_keys=True, ensure_ascii=False))
        return EXIT_OK
    print(_status_line(settings, status, now))
    print(
        f"{'DATE':<8} {'TIME':<6} {'MOD':<4} {'STATION':<16} {'PATIENT NAME':<28} "
        f"{'PATIENT ID':<16} {'BIRTH':<8} {'SEX':<3} {'ACCESSION':<16} PROCEDURE"
    )
    for row in rows:

        def cell(key: str, row: dict[str, Any] = row) -> str:
            value = row[key]
            return MASK if value is None else str(value or "-")

        print(
            f"{row['date']:<8} {row['time'][:6]:<6} {row['modality']:<4} {row['station']:<16} "
            f"{cell('patient_name'):<28} {cell('patient_id'):<16} {cell('birth_date'):<8} "
            f"{cell('sex'):<3} {cell('accession_number'):<16} {row['procedure']}"
        )
    return EXIT_OK


def _refresh(args: argparse.Namespace) -> int:
    config, settings = _settings(args.config)
    logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)  # our line says it once
    path = config.ledger_path()
    now = time.time()
    try:
        conn = db.open_ledger(path)
    except (sqlite3.Error, db.LedgerVersionError, OSError) as err:
        raise _Stop(EXIT_FAILURE, f"cannot open the ledger {path}: {err}") from err
    try:
        try:
            answer = asyncio.run(fetch_worklist(settings, config.gateway.ae_title, now=now))
        except WorklistError as err:
            record_failure(conn, str(err), now=now)
            status = status_from_record(fetch_record(conn), settings.stale_after, time.time())
            raise _Stop(
                EXIT_FAILURE,
                f"{err}; the cached worklist stays in use ({status.items} item(s), "
                f"{_age_text(status, time.time())})",
            ) from err
        replace_items(
            conn, answer.entries, source_ae=settings.ae_title, now=now, truncated=answer.truncated
        )
    except sqlite3.Error as err:
        raise _Stop(EXIT_FAILURE, f"cannot write the ledger {path}: {err}") from err
    finally:
        conn.close()
    line = (
        f"worklist refreshed from {settings.ae_title}@{settings.host}:{settings.port}: "
        f"{len(answer.entries)} item(s) kept of {answer.received} answer(s)"
    )
    if answer.filtered:
        line += f", {answer.filtered} for another station, modality or date"
    if answer.skipped:
        line += f", skipped: {answer.skipped}"
    if answer.truncated:
        line += f"; cut at max_items {settings.max_items} (the rest was cancelled)"
    print(line)
    return EXIT_OK


def _command(name: str, body: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        try:
            return int(body(args))
        except _Stop as err:
            if str(err):
                print(f"dermgate worklist {name}: {err}", file=sys.stderr)
            return err.code

    run.__doc__ = body.__doc__
    return run


def add_worklist_commands(sub: Any) -> None:
    """Add ``worklist list|refresh`` to the ``dermgate`` subparsers ``sub``."""
    formatter = argparse.RawDescriptionHelpFormatter
    worklist = sub.add_parser(
        "worklist", help="the Modality Worklist cache", epilog=EPILOG, formatter_class=formatter
    )
    actions = worklist.add_subparsers(dest="worklist_command", required=True, metavar="ACTION")
    listing = actions.add_parser(
        "list",
        help="the cached worklist (patient data masked unless --reveal)",
        epilog=EPILOG,
        formatter_class=formatter,
    )
    listing.add_argument("--config", type=Path, required=True, help="configuration file (TOML)")
    listing.add_argument("--json", action="store_true", help="one JSON document")
    listing.add_argument(
        "--reveal", action="store_true", help="show patient data (written to the audit log)"
    )
    listing.add_argument(
        "--reason",
        choices=REASONS,
        default="care",
        help="why patient data is shown, recorded in the audit log (default: care)",
    )
    listing.set_defaults(func=_command("list", _list))
    refresh = actions.add_parser(
        "refresh",
        help="query the worklist SCP now and update the cache",
        epilog=EPILOG,
        formatter_class=formatter,
    )
    refresh.add_argument("--config", type=Path, required=True, help="configuration file (TOML)")
    refresh.set_defaults(func=_command("refresh", _refresh))
