"""The ledger's file: its schema, the migrations between versions, and how it is opened.

SQLite runs in WAL mode with ``synchronous=FULL``: a committed row survives a power
cut. The schema carries a version (``PRAGMA user_version``); :func:`migrate`
upgrades older files in place, one committed step per version.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from gateway.core.errors import DeliveryError, DeliveryErrorCode

__all__ = [
    "ERROR_CODES_SINCE",
    "LEDGER_FILE_MODE",
    "RETRY_NOTE",
    "SCHEMA_VERSION",
    "LedgerVersionError",
    "legacy_error",
    "migrate",
    "open_ledger",
    "schema_version",
    "transaction",
    "utc_now_text",
]

SCHEMA_VERSION = 7

_SCHEMA_V1 = """
CREATE TABLE captures (
    id                  INTEGER PRIMARY KEY,
    driver              TEXT NOT NULL,
    device_serial       TEXT NOT NULL,
    device_capture_id   TEXT NOT NULL,
    device_json         TEXT NOT NULL,
    offer_json          TEXT NOT NULL,
    raw_name            TEXT NOT NULL,
    raw_size            INTEGER NOT NULL,
    raw_sha256          TEXT NOT NULL,
    study_uid           TEXT NOT NULL,
    series_uid          TEXT NOT NULL,
    sop_instance_uid    TEXT NOT NULL UNIQUE,
    sop_class_uid       TEXT,
    transfer_syntax_uid TEXT,
    dicom_name          TEXT,
    state               TEXT NOT NULL,
    reason              TEXT,
    received_at         TEXT NOT NULL,
    updated_at          TEXT NOT NULL,
    UNIQUE (device_serial, device_capture_id)
);
CREATE INDEX captures_state ON captures (state);
CREATE TABLE deliveries (
    capture_id      INTEGER NOT NULL REFERENCES captures (id),
    destination     TEXT NOT NULL,
    state           TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    last_error      TEXT,
    sent_at         TEXT,
    PRIMARY KEY (capture_id, destination)
);
CREATE INDEX deliveries_due ON deliveries (destination, state, next_attempt_at);
"""

# v2: Storage Commitment. A delivery remembers the commitment transaction that asks
# about it; transactions are persisted so that a restart neither forgets nor repeats
# them blindly.
_SCHEMA_V2 = """
ALTER TABLE deliveries ADD COLUMN sent_epoch REAL;
ALTER TABLE deliveries ADD COLUMN commit_txn TEXT;
ALTER TABLE deliveries ADD COLUMN commit_failures INTEGER NOT NULL DEFAULT 0;
ALTER TABLE deliveries ADD COLUMN committed_at TEXT;
CREATE INDEX deliveries_commit ON deliveries (commit_txn);
CREATE TABLE commitments (
    transaction_uid TEXT PRIMARY KEY,
    destination     TEXT NOT NULL,
    created_epoch   REAL NOT NULL,
    requested_epoch REAL,
    state           TEXT NOT NULL
);
CREATE INDEX commitments_open ON commitments (destination, state);
UPDATE deliveries SET sent_epoch = strftime('%s', 'now') WHERE state = 'SENT';
"""

# v3: every device class. Patient identity a device supplies (a 3D scanner's export
# metadata) is kept apart from the offer, in a column that only the wrapper (and
# `spool show --reveal`) reads; listings never select it.
_SCHEMA_V3 = """
ALTER TABLE captures ADD COLUMN patient_json TEXT;
"""

# v4: what each commitment transaction asked about, kept after it ends, so that a
# report (even a late one, for an expired transaction) can touch only those
# instances. Open transactions of older ledgers take theirs from the deliveries.
_SCHEMA_V4 = """
CREATE TABLE commitment_items (
    transaction_uid TEXT NOT NULL,
    capture_id      INTEGER NOT NULL REFERENCES captures (id),
    PRIMARY KEY (transaction_uid, capture_id)
);
CREATE INDEX commitment_items_capture ON commitment_items (capture_id);
INSERT OR IGNORE INTO commitment_items (transaction_uid, capture_id)
    SELECT d.commit_txn, d.capture_id FROM deliveries d JOIN commitments t
    ON t.transaction_uid = d.commit_txn AND t.destination = d.destination;
"""

# v5: why a delivery failed, as the code the sender set (gateway.core.errors) and the
# DIMSE status, beside the text in last_error. Older rows get theirs from that text
# (:func:`legacy_error`, once, here).
_SCHEMA_V5 = """
ALTER TABLE deliveries ADD COLUMN error_code TEXT;
ALTER TABLE deliveries ADD COLUMN error_status INTEGER;
"""

# v6: clinical context (issue 13). Patient data lives in these tables (the ledger is
# 0600); listings select none of it.
# - captures: the configured device name, the session a capture was bound to at intake
#   and the CaptureContext frozen then (context_json, read only by the wrapper and
#   authenticated views), a technician's sensitive flag. HELD captures use `reason`.
# - worklist_items: the local Modality Worklist cache (one row per item; item_json is
#   the decoded item, fetched_at when it was last seen), worklist_fetch: the last
#   refresh's outcome (one row).
# - sessions: one device bound to a patient context; at most one open per device.
#   session_series: one series per session and kind of object.
# - lesions: the registry, per patient (patient id + issuer).
# - mpps: one Modality Performed Procedure Step per worklist session, queued
#   (gateway.spool.mpps_queue): the status wanted and the last one the SCP acknowledged;
#   started_at the PPS start (the session's first capture, or its opening when it ended
#   empty); attempts counts failures since the last acknowledgement (backoff);
#   error_code/error_status why the last attempt failed; failed_at set when the SCP
#   refused the step for good (never retried).
_SCHEMA_V6 = """
ALTER TABLE captures ADD COLUMN device_name TEXT;
ALTER TABLE captures ADD COLUMN session_id INTEGER;
ALTER TABLE captures ADD COLUMN context_json TEXT;
ALTER TABLE captures ADD COLUMN sensitive INTEGER NOT NULL DEFAULT 0;
CREATE INDEX captures_session ON captures (session_id);
CREATE TABLE worklist_items (
    item_key    TEXT PRIMARY KEY,
    item_json   TEXT NOT NULL,
    source_ae   TEXT NOT NULL,
    fetched_at  REAL NOT NULL
);
CREATE TABLE worklist_fetch (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    tried_at    REAL,
    ok_at       REAL,
    error       TEXT,
    items       INTEGER NOT NULL DEFAULT 0,
    truncated   INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE lesions (
    id          INTEGER PRIMARY KEY,
    patient_id  TEXT NOT NULL,
    issuer      TEXT NOT NULL,
    tracking_id TEXT NOT NULL,
    tracking_uid TEXT NOT NULL UNIQUE,
    site        TEXT,
    site_scheme TEXT NOT NULL DEFAULT 'SCT',
    laterality  TEXT,
    description TEXT NOT NULL DEFAULT '',
    created_at  TEXT NOT NULL,
    UNIQUE (patient_id, issuer, tracking_id)
);
CREATE TABLE sessions (
    id            INTEGER PRIMARY KEY,
    device        TEXT NOT NULL,
    source        TEXT NOT NULL,
    patient_json  TEXT NOT NULL,
    order_json    TEXT,
    worklist_key  TEXT,
    study_uid     TEXT NOT NULL,
    study_description TEXT NOT NULL DEFAULT '',
    opened_at     TEXT NOT NULL,
    opened_by     TEXT NOT NULL,
    operator_name TEXT NOT NULL DEFAULT '',
    closed_at     TEXT,
    closed_by     TEXT,
    lesion_id     INTEGER REFERENCES lesions (id),
    sensitive     INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX sessions_open ON sessions (device) WHERE closed_at IS NULL;
CREATE TABLE session_series (
    session_id    INTEGER NOT NULL REFERENCES sessions (id),
    kind          TEXT NOT NULL,
    series_uid    TEXT NOT NULL UNIQUE,
    series_number INTEGER NOT NULL,
    instances     INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (session_id, kind)
);
-- (sessions helper) the session the first file of a driver-chosen study (a 3D
-- export) was bound to, so every file of that export gets the same study; a NULL
-- session_id: it was not bound (held, or no context).
CREATE TABLE export_bindings (
    driver_study_uid TEXT PRIMARY KEY,
    session_id       INTEGER REFERENCES sessions (id)
);
CREATE TABLE mpps (
    session_id       INTEGER PRIMARY KEY REFERENCES sessions (id),
    sop_instance_uid TEXT NOT NULL UNIQUE,
    wanted           TEXT NOT NULL,
    acknowledged     TEXT,
    started_at       TEXT NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  REAL NOT NULL DEFAULT 0,
    last_error       TEXT,
    error_code       TEXT,
    error_status     INTEGER,
    failed_at        TEXT
);
"""

# v7: networks (issue 14). Per delivery:
# - sent_sop_class_uid / sent_sop_instance_uid: what was actually sent to that
#   destination when it differs from the capture (a derived object of a compatible class,
#   `fallback = "compatible"`); NULL means the capture itself.
# - priority: set from the route that chose the destination (`priority = "high"` → 1);
#   higher goes first.
_SCHEMA_V7 = """
ALTER TABLE deliveries ADD COLUMN sent_sop_class_uid TEXT;
ALTER TABLE deliveries ADD COLUMN sent_sop_instance_uid TEXT;
ALTER TABLE deliveries ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
"""

_MIGRATIONS = {
    1: _SCHEMA_V1,
    2: _SCHEMA_V2,
    3: _SCHEMA_V3,
    4: _SCHEMA_V4,
    5: _SCHEMA_V5,
    6: _SCHEMA_V6,
    7: _SCHEMA_V7,
}

#: The version from which deliveries carry ``error_code`` and ``error_status``.
ERROR_CODES_SINCE = 5


def legacy_error(text: str | None) -> DeliveryError | None:
    """The code of a failure recorded by a DermGate before v5, read from its text.

    Used once, when :func:`migrate` upgrades a ledger to v5, and by read-only readers
    of a ledger that the service has not upgraded yet. Since v5 the code is stored
    where the failure happened; nothing else guesses it.
    """
    if not text:
        return None
    lower = text.lower()
    status: int | None = None
    if lower.startswith("association rejected"):
        code = DeliveryErrorCode.ASSOCIATION_REJECTED
    elif lower.startswith("could not open an association"):
        code = DeliveryErrorCode.UNREACHABLE
    elif lower.startswith(("no c-store response", "no c-echo response", "no n-action")):
        code = DeliveryErrorCode.NO_RESPONSE
    elif "aborted" in lower or "association closed" in lower:
        code = DeliveryErrorCode.ABORTED
    elif lower.startswith(("c-store status", "c-echo status", "n-action status")):
        code = DeliveryErrorCode.STORE_FAILED
        number = text.rsplit(" ", 1)[-1]
        if number.startswith("0x") and len(number) == 6:
            with contextlib.suppress(ValueError):
                status = int(number, 16)
    elif "accepts no presentation context" in lower or "does not offer" in lower:
        code = DeliveryErrorCode.NOT_ACCEPTED
    elif lower.startswith("cannot read dicom file"):
        code = DeliveryErrorCode.LOCAL_FILE
    elif lower.startswith("commitment failed"):
        code = DeliveryErrorCode.COMMITMENT_FAILED
    else:
        code = DeliveryErrorCode.OTHER
    return DeliveryError(code, text, status)


def _codes_from_text(conn: sqlite3.Connection) -> None:
    """v5: give every recorded failure its code (the technician's retry note is none)."""
    rows = conn.execute(
        "SELECT rowid, last_error FROM deliveries WHERE last_error IS NOT NULL AND last_error != ?",
        (RETRY_NOTE,),
    ).fetchall()
    for rowid, text in rows:
        error = legacy_error(text)
        if error is not None:
            conn.execute(
                "UPDATE deliveries SET error_code = ?, error_status = ? WHERE rowid = ?",
                (str(error.code), error.status, rowid),
            )


#: Steps that also rewrite rows, run in the step's transaction after its SQL.
_BACKFILLS: dict[int, Callable[[sqlite3.Connection], None]] = {5: _codes_from_text}

#: What ``dermgate spool retry`` writes into ``last_error`` (not a failure).
RETRY_NOTE = "retry requested by technician"


def utc_now_text() -> str:
    """The current UTC time as stored in the ledger (ISO 8601)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One atomic write: BEGIN IMMEDIATE … COMMIT, or ROLLBACK on any error.

    The connection runs in autocommit mode (``isolation_level=None``), where
    ``with conn:`` would *not* open a transaction; every multi-statement change of
    the ledger goes through here so that a crash never leaves it half done.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def schema_version(conn: sqlite3.Connection) -> int:
    """The version of the ledger behind ``conn`` (a read-only one may be older)."""
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


class LedgerVersionError(RuntimeError):
    """The ledger was written by a newer DermGate than this one."""


def migrate(conn: sqlite3.Connection) -> None:
    """Bring the schema to :data:`SCHEMA_VERSION`, one committed step at a time."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise LedgerVersionError(
            f"ledger schema version {version} is newer than this DermGate "
            f"(knows {SCHEMA_VERSION}); upgrade DermGate, do not downgrade"
        )
    for step in range(version + 1, SCHEMA_VERSION + 1):
        # executescript commits on its own; wrap each step in one explicit transaction
        # so that a crash mid-upgrade leaves the previous version intact.
        backfill = _BACKFILLS.get(step)
        if backfill is None:
            conn.executescript(
                f"BEGIN IMMEDIATE;\n{_MIGRATIONS[step]}\nPRAGMA user_version = {step};\nCOMMIT;"
            )
            continue
        conn.executescript(f"BEGIN IMMEDIATE;\n{_MIGRATIONS[step]}")
        try:
            backfill(conn)
            conn.execute(f"PRAGMA user_version = {step}")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")


LEDGER_FILE_MODE = 0o600


def _owner_only(path: Path) -> None:
    """Create the ledger 0600 (whatever the umask), or narrow an older, wider one.

    It holds device-supplied patient fields. SQLite gives its ``-wal`` and ``-shm``
    files the database file's mode (and, run as root, its owner).
    """
    fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, LEDGER_FILE_MODE)
    try:
        if stat.S_IMODE(os.fstat(fd).st_mode) != LEDGER_FILE_MODE:
            with contextlib.suppress(PermissionError):  # not ours to change: leave it
                os.fchmod(fd, LEDGER_FILE_MODE)
    finally:
        os.close(fd)


def open_ledger(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    """Open (and for writers create and migrate) the ledger at ``path``."""
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        _owner_only(path)
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA busy_timeout = 10000")
    if not readonly:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
            migrate(conn)
        except BaseException:
            conn.close()
            raise
    return conn
