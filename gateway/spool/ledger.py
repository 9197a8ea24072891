"""The ledger: one SQLite database recording every capture and every delivery.

SQLite runs in WAL mode with ``synchronous=FULL``: a committed row survives a power
cut. All access from the service goes through one dedicated thread
(:class:`Ledger`), fed by a queue; the blocking functions below take a connection
and are also used directly by the command line (read-only listing).

The schema carries a version (``PRAGMA user_version``); :func:`migrate` upgrades
older files in place, one step per version.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import queue
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from gateway.core.capture import (
    CaptureOffer,
    ContactMethod,
    ContentType,
    DermoscopySettings,
    DeviceClass,
    DeviceIdentity,
    ImmersionMedium,
    InstanceUIDs,
    Laterality,
    PatientContext,
    Polarization,
)
from gateway.spool.reserve import LedgerReserve
from gateway.spool.states import CaptureState, DeliveryState

log = logging.getLogger(__name__)

SCHEMA_VERSION = 4

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

_MIGRATIONS = {1: _SCHEMA_V1, 2: _SCHEMA_V2, 3: _SCHEMA_V3, 4: _SCHEMA_V4}

T = TypeVar("T")


#: The driver name of a capture recorded by ``dermgate spool rebuild`` from the spool's
#: own files (:mod:`gateway.spool.rebuild`): its real driver was in the lost ledger.
REBUILT_DRIVER = "rebuilt"


def utc_now_text() -> str:
    """The current UTC time as stored in the ledger (ISO 8601)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


# --------------------------------------------------------------------------- codecs


def device_to_json(device: DeviceIdentity) -> str:
    """Serialise a device identity for the ledger."""
    return json.dumps(
        {
            "manufacturer": device.manufacturer,
            "model": device.model,
            "serial_number": device.serial_number,
            "software_versions": list(device.software_versions),
            "device_class": str(device.device_class),
            "capabilities": list(device.capabilities),
        },
        sort_keys=True,
    )


def device_from_json(text: str) -> DeviceIdentity:
    """Inverse of :func:`device_to_json`."""
    raw = json.loads(text)
    return DeviceIdentity(
        manufacturer=raw["manufacturer"],
        model=raw["model"],
        serial_number=raw["serial_number"],
        software_versions=tuple(raw["software_versions"]),
        device_class=DeviceClass(raw["device_class"]),
        capabilities=tuple(raw["capabilities"]),
    )


def offer_to_json(offer: CaptureOffer) -> str:
    """Serialise a capture offer for the ledger."""
    s = offer.settings
    return json.dumps(
        {
            "device_capture_id": offer.device_capture_id,
            "acquired_at": offer.acquired_at.isoformat() if offer.acquired_at else None,
            "polarization": s.polarization,
            "contact": s.contact,
            "immersion": s.immersion,
            "magnification": s.magnification,
            "color_temperature_k": s.color_temperature_k,
            "anatomic_site": offer.anatomic_site,
            "laterality": offer.laterality,
            "lesion_id": offer.lesion_id,
            "content_type": str(offer.content_type),
            "extra": offer.extra,
        },
        sort_keys=True,
    )


def patient_to_json(patient: PatientContext | None) -> str | None:
    """Serialise device-supplied patient identity (its own column; never listed)."""
    if patient is None:
        return None
    return json.dumps(
        {
            "patient_name": patient.patient_name,
            "patient_id": patient.patient_id,
            "issuer_of_patient_id": patient.issuer_of_patient_id,
            "birth_date": patient.birth_date,
            "sex": patient.sex,
            "accession_number": patient.accession_number,
        },
        sort_keys=True,
    )


def patient_from_json(text: str | None) -> PatientContext | None:
    """Inverse of :func:`patient_to_json`."""
    if not text:
        return None
    raw = json.loads(text)
    return PatientContext(**{k: str(v) for k, v in raw.items()})


def _opt(kind: Callable[[Any], T], value: Any) -> T | None:
    return None if value is None else kind(value)


def offer_from_json(
    text: str, uids: InstanceUIDs | None = None, patient: PatientContext | None = None
) -> CaptureOffer:
    """Inverse of :func:`offer_to_json` (UIDs and patient come from their columns)."""
    raw = json.loads(text)
    return CaptureOffer(
        device_capture_id=raw["device_capture_id"],
        acquired_at=_opt(datetime.fromisoformat, raw["acquired_at"]),
        settings=DermoscopySettings(
            polarization=_opt(Polarization, raw["polarization"]),
            contact=_opt(ContactMethod, raw["contact"]),
            immersion=_opt(ImmersionMedium, raw["immersion"]),
            magnification=_opt(float, raw["magnification"]),
            color_temperature_k=_opt(int, raw["color_temperature_k"]),
        ),
        anatomic_site=raw["anatomic_site"],
        laterality=_opt(Laterality, raw["laterality"]),
        lesion_id=raw["lesion_id"],
        content_type=ContentType(raw.get("content_type", ContentType.JPEG)),
        extra=dict(raw.get("extra") or {}),
        uids=uids,
        patient=patient,
    )


# --------------------------------------------------------------------------- rows


@dataclass(frozen=True, slots=True)
class SpoolEntry:
    """One capture as the ledger knows it."""

    id: int
    driver: str
    device: DeviceIdentity
    offer: CaptureOffer
    uids: InstanceUIDs
    raw_name: str
    raw_size: int
    raw_sha256: str
    sop_class_uid: str | None
    transfer_syntax_uid: str | None
    dicom_name: str | None
    state: CaptureState
    reason: str | None
    received_at: str
    updated_at: str


@dataclass(frozen=True, slots=True)
class DueDelivery:
    """A delivery ready to be attempted."""

    capture_id: int
    destination: str
    attempts: int
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    dicom_name: str


@dataclass(frozen=True, slots=True)
class ListingRow:
    """One line of ``dermgate spool list``: no patient data by construction."""

    id: int
    state: str
    sop_instance_uid: str
    device: str
    device_capture_id: str
    attempts: int
    last_error: str | None
    reason: str | None
    received_at: str
    updated_at: str


_ENTRY_COLUMNS = (
    "id, driver, device_json, offer_json, study_uid, series_uid, sop_instance_uid, raw_name, "
    "raw_size, raw_sha256, sop_class_uid, transfer_syntax_uid, dicom_name, state, reason, "
    "received_at, updated_at, patient_json"
)


def _entry(row: sqlite3.Row) -> SpoolEntry:
    uids = InstanceUIDs(row["study_uid"], row["series_uid"], row["sop_instance_uid"])
    return SpoolEntry(
        id=row["id"],
        driver=row["driver"],
        device=device_from_json(row["device_json"]),
        offer=offer_from_json(row["offer_json"], uids, patient_from_json(row["patient_json"])),
        uids=uids,
        raw_name=row["raw_name"],
        raw_size=row["raw_size"],
        raw_sha256=row["raw_sha256"],
        sop_class_uid=row["sop_class_uid"],
        transfer_syntax_uid=row["transfer_syntax_uid"],
        dicom_name=row["dicom_name"],
        state=CaptureState(row["state"]),
        reason=row["reason"],
        received_at=row["received_at"],
        updated_at=row["updated_at"],
    )


# --------------------------------------------------------------------------- blocking API


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
        conn.executescript(
            f"BEGIN IMMEDIATE;\n{_MIGRATIONS[step]}\nPRAGMA user_version = {step};\nCOMMIT;"
        )


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


@dataclass(frozen=True, slots=True)
class WrappedAtIntake:
    """The capture was streamed straight into its DICOM file at intake."""

    dicom_name: str
    sop_class_uid: str
    transfer_syntax_uid: str
    destinations: tuple[str, ...]


def insert_capture(
    conn: sqlite3.Connection,
    *,
    driver: str,
    device: DeviceIdentity,
    offer: CaptureOffer,
    uids: InstanceUIDs,
    raw_name: str,
    raw_size: int,
    raw_sha256: str,
    wrapped: WrappedAtIntake | None = None,
    spool_id: int | None = None,
) -> int:
    """Record a durable capture; return its spool id (``spool_id`` when given: intake
    reserves it before the DICOM file that names it is written).

    The service and ``spool rebuild`` always give it (:mod:`gateway.spool.spool_ids`:
    never handed out before on this box). Without it SQLite takes the table's
    highest id + 1, which after a lost ledger may be one used before: only for
    scratch ledgers (tests, benchmarks).

    Normally in state CAPTURED (the raw device file is in ``raw/``). With
    ``wrapped`` the capture went straight into its DICOM file: ``raw_name`` is
    empty (the device's bytes are the file's pixel data fragment), the state is
    WRAPPED and its deliveries are created in the same transaction.
    """
    now = utc_now_text()
    state = CaptureState.WRAPPED if wrapped else CaptureState.CAPTURED
    with transaction(conn):
        cur = conn.execute(
            "INSERT INTO captures (id, driver, device_serial, device_capture_id, device_json, "
            "offer_json, raw_name, raw_size, raw_sha256, study_uid, series_uid, "
            "sop_instance_uid, state, received_at, updated_at, dicom_name, sop_class_uid, "
            "transfer_syntax_uid, patient_json) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                spool_id,
                driver,
                device.serial_number,
                offer.device_capture_id,
                device_to_json(device),
                offer_to_json(offer),
                raw_name,
                raw_size,
                raw_sha256,
                uids.study,
                uids.series,
                uids.sop_instance,
                state,
                now,
                now,
                wrapped.dicom_name if wrapped else None,
                wrapped.sop_class_uid if wrapped else None,
                wrapped.transfer_syntax_uid if wrapped else None,
                patient_to_json(offer.patient),
            ),
        )
        assert cur.lastrowid is not None
        if wrapped:
            conn.executemany(
                "INSERT INTO deliveries (capture_id, destination, state, next_attempt_at) "
                "VALUES (?, ?, ?, ?)",
                [
                    (cur.lastrowid, name, DeliveryState.PENDING, time.time())
                    for name in wrapped.destinations
                ],
            )
    return cur.lastrowid


def find_capture(
    conn: sqlite3.Connection, device_serial: str, capture_id: str
) -> SpoolEntry | None:
    """The capture a device already delivered under this id, if any."""
    row = conn.execute(
        f"SELECT {_ENTRY_COLUMNS} FROM captures WHERE device_serial = ? AND device_capture_id = ?",
        (device_serial, capture_id),
    ).fetchone()
    return _entry(row) if row else None


def get_capture(conn: sqlite3.Connection, spool_id: int) -> SpoolEntry | None:
    """The capture with spool id ``spool_id``."""
    row = conn.execute(
        f"SELECT {_ENTRY_COLUMNS} FROM captures WHERE id = ?", (spool_id,)
    ).fetchone()
    return _entry(row) if row else None


def captures_in_state(
    conn: sqlite3.Connection, state: CaptureState, limit: int = 100
) -> list[SpoolEntry]:
    """Captures in ``state``, newest first (fresh captures go before the backlog)."""
    rows = conn.execute(
        f"SELECT {_ENTRY_COLUMNS} FROM captures WHERE state = ? ORDER BY id DESC LIMIT ?",
        (state, limit),
    ).fetchall()
    return [_entry(r) for r in rows]


def mark_wrapped(
    conn: sqlite3.Connection,
    spool_id: int,
    *,
    dicom_name: str,
    sop_class_uid: str,
    transfer_syntax_uid: str,
    destinations: Iterable[str],
    now: float,
) -> None:
    """CAPTURED → WRAPPED, creating a pending delivery for each destination."""
    with transaction(conn):
        conn.execute(
            "UPDATE captures SET state = ?, dicom_name = ?, sop_class_uid = ?, "
            "transfer_syntax_uid = ?, updated_at = ? WHERE id = ? AND state = ?",
            (
                CaptureState.WRAPPED,
                dicom_name,
                sop_class_uid,
                transfer_syntax_uid,
                utc_now_text(),
                spool_id,
                CaptureState.CAPTURED,
            ),
        )
        conn.executemany(
            "INSERT OR IGNORE INTO deliveries (capture_id, destination, state, next_attempt_at) "
            "VALUES (?, ?, ?, ?)",
            [(spool_id, name, DeliveryState.PENDING, now) for name in destinations],
        )


def quarantine(conn: sqlite3.Connection, spool_id: int, reason: str) -> None:
    """Set a capture aside with a reason a technician can act on. Nothing is deleted."""
    with transaction(conn):
        conn.execute(
            "UPDATE captures SET state = ?, reason = ?, updated_at = ? WHERE id = ?",
            (CaptureState.QUARANTINED, reason, utc_now_text(), spool_id),
        )


def add_missing_deliveries(
    conn: sqlite3.Connection, destinations: Iterable[str], now: float
) -> int:
    """Give WRAPPED captures a pending delivery for destinations added since."""
    added = 0
    with transaction(conn):
        for name in destinations:
            cur = conn.execute(
                "INSERT OR IGNORE INTO deliveries (capture_id, destination, state, "
                "next_attempt_at) SELECT id, ?, ?, ? FROM captures WHERE state = ?",
                (name, DeliveryState.PENDING, now, CaptureState.WRAPPED),
            )
            added += cur.rowcount
    return added


def due_deliveries(
    conn: sqlite3.Connection, destination: str, now: float, limit: int
) -> list[DueDelivery]:
    """Pending deliveries to ``destination`` whose time has come, newest capture first."""
    rows = conn.execute(
        "SELECT d.capture_id, d.destination, d.attempts, c.sop_instance_uid, c.sop_class_uid, "
        "c.transfer_syntax_uid, c.dicom_name FROM deliveries d JOIN captures c "
        "ON c.id = d.capture_id WHERE d.destination = ? AND d.state = ? AND c.state = ? "
        "AND d.next_attempt_at <= ? ORDER BY d.attempts ASC, d.capture_id DESC LIMIT ?",
        (destination, DeliveryState.PENDING, CaptureState.WRAPPED, now, limit),
    ).fetchall()
    return [
        DueDelivery(
            capture_id=r["capture_id"],
            destination=r["destination"],
            attempts=r["attempts"],
            sop_instance_uid=r["sop_instance_uid"],
            sop_class_uid=r["sop_class_uid"],
            transfer_syntax_uid=r["transfer_syntax_uid"],
            dicom_name=r["dicom_name"],
        )
        for r in rows
    ]


def next_attempt_time(conn: sqlite3.Connection, destination: str) -> float | None:
    """When the earliest pending delivery to ``destination`` is due, if any."""
    row = conn.execute(
        "SELECT MIN(d.next_attempt_at) FROM deliveries d JOIN captures c ON c.id = d.capture_id "
        "WHERE d.destination = ? AND d.state = ? AND c.state = ?",
        (destination, DeliveryState.PENDING, CaptureState.WRAPPED),
    ).fetchone()
    value = row[0]
    return None if value is None else float(value)


def refresh_capture_state(conn: sqlite3.Connection, capture_id: int, now: str) -> None:
    """Derive a delivered capture's state from its deliveries (inside a transaction).

    All deliveries COMMITTED → COMMITTED; all SENT or COMMITTED → SENT; any still
    PENDING → WRAPPED (a capture goes back to WRAPPED when the PACS reports that it
    could not commit it and it is sent again). QUARANTINED captures are left alone.
    """
    counts = dict(
        conn.execute(
            "SELECT state, COUNT(*) FROM deliveries WHERE capture_id = ? GROUP BY state",
            (capture_id,),
        ).fetchall()
    )
    total = sum(counts.values())
    if total == 0 or counts.get(DeliveryState.FAILED):
        return
    if counts.get(DeliveryState.COMMITTED, 0) == total:
        state = CaptureState.COMMITTED
    elif counts.get(DeliveryState.PENDING, 0) == 0:
        state = CaptureState.SENT
    else:
        state = CaptureState.WRAPPED
    conn.execute(
        "UPDATE captures SET state = ?, updated_at = ? WHERE id = ? AND state IN (?, ?, ?) "
        "AND state != ?",
        (
            state,
            now,
            capture_id,
            CaptureState.WRAPPED,
            CaptureState.SENT,
            CaptureState.COMMITTED,
            state,
        ),
    )


def record_sent(
    conn: sqlite3.Connection, capture_id: int, destination: str, now: float | None = None
) -> None:
    """The destination stored the instance: delivery SENT (capture SENT when all are)."""
    stamp = utc_now_text()
    with transaction(conn):
        conn.execute(
            "UPDATE deliveries SET state = ?, attempts = attempts + 1, sent_at = ?, "
            "sent_epoch = ?, last_error = NULL, commit_txn = NULL "
            "WHERE capture_id = ? AND destination = ?",
            (DeliveryState.SENT, stamp, now or time.time(), capture_id, destination),
        )
        refresh_capture_state(conn, capture_id, stamp)


def record_retry(
    conn: sqlite3.Connection, capture_id: int, destination: str, error: str, next_attempt_at: float
) -> None:
    """Count a failed attempt and schedule the next one."""
    with transaction(conn):
        conn.execute(
            "UPDATE deliveries SET attempts = attempts + 1, last_error = ?, next_attempt_at = ? "
            "WHERE capture_id = ? AND destination = ?",
            (error, next_attempt_at, capture_id, destination),
        )


def record_refused(conn: sqlite3.Connection, capture_id: int, destination: str, error: str) -> None:
    """The destination refused the instance for good: quarantine the capture."""
    now = utc_now_text()
    with transaction(conn):
        conn.execute(
            "UPDATE deliveries SET state = ?, attempts = attempts + 1, last_error = ? "
            "WHERE capture_id = ? AND destination = ?",
            (DeliveryState.FAILED, error, capture_id, destination),
        )
        conn.execute(
            "UPDATE captures SET state = ?, reason = ?, updated_at = ? WHERE id = ?",
            (CaptureState.QUARANTINED, f"{destination} refused it: {error}", now, capture_id),
        )


def listing(conn: sqlite3.Connection) -> list[ListingRow]:
    """Every capture, oldest first, with delivery attempts summed over destinations."""
    rows = conn.execute(
        "SELECT c.id, c.state, c.sop_instance_uid, c.driver, c.device_serial, "
        "c.device_capture_id, c.reason, c.received_at, c.updated_at, "
        "COALESCE(SUM(d.attempts), 0) AS attempts, "
        "(SELECT d2.last_error FROM deliveries d2 WHERE d2.capture_id = c.id "
        " AND d2.last_error IS NOT NULL LIMIT 1) AS last_error "
        "FROM captures c LEFT JOIN deliveries d ON d.capture_id = c.id "
        "GROUP BY c.id ORDER BY c.id"
    ).fetchall()
    return [
        ListingRow(
            id=r["id"],
            state=r["state"],
            sop_instance_uid=r["sop_instance_uid"],
            device=f"{r['driver']}:{r['device_serial']}",
            device_capture_id=r["device_capture_id"],
            attempts=r["attempts"],
            last_error=r["last_error"],
            reason=r["reason"],
            received_at=r["received_at"],
            updated_at=r["updated_at"],
        )
        for r in rows
    ]


# --------------------------------------------------------------------------- the thread seam


class LedgerFull(sqlite3.OperationalError):
    """The ledger could not write: its disk is full, even without its reserve.

    The write was rolled back (nothing half done). :meth:`Ledger.call` waits for
    space and writes again; :meth:`Ledger.try_call` raises this to its caller.
    """


def is_disk_full(err: sqlite3.Error) -> bool:
    """Whether SQLite failed for want of space (``SQLITE_FULL``)."""
    return getattr(err, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL


def _roll_back(conn: sqlite3.Connection) -> None:
    # A failed COMMIT (SQLITE_FULL) may leave its transaction open: end it, or the
    # next BEGIN fails ("cannot start a transaction within a transaction").
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


def _attempt(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    try:
        return fn(conn)
    except BaseException:
        _roll_back(conn)
        raise


#: The longest a write waiting for disk space waits between two tries.
FULL_RETRY_MAX = 5.0


class Ledger:
    """The ledger's single writer thread, used from asyncio.

    ``await ledger.call(fn, *args)`` runs ``fn(conn, *args)`` on the ledger thread
    and returns its result. Calls are executed one at a time, in order.

    A full disk never ends a stage. When SQLite reports it full, the thread releases
    the ledger's reserve (:mod:`gateway.spool.reserve`), if it still holds it, and
    runs the call again; if the disk is still full, :meth:`call` waits for space and
    tries again (its caller pauses; logged once), while :meth:`try_call` raises
    :class:`LedgerFull` (intake refuses the capture at the device instead).
    """

    def __init__(self, path: Path, reserve: LedgerReserve | None = None) -> None:
        self.path = path
        self.reserve = reserve
        self._jobs: queue.Queue[tuple[Callable[[sqlite3.Connection], Any], Future[Any]] | None] = (
            queue.Queue()
        )
        self._thread: threading.Thread | None = None
        self._opened: Future[None] = Future()
        self._waiting = 0

    @property
    def full(self) -> bool:
        """Whether writes wait for space, or the reserve was used and not yet made again."""
        return self._waiting > 0 or (self.reserve is not None and not self.reserve.held)

    @property
    def waiting_for_space(self) -> bool:
        """Whether some write waits for disk space right now."""
        return self._waiting > 0

    def start(self) -> None:
        """Open the database on the ledger thread; raises if it cannot be opened."""
        if self.reserve is not None:
            self.reserve.make()
        self._thread = threading.Thread(target=self._serve, name="ledger", daemon=True)
        self._thread.start()
        self._opened.result()

    def _serve(self) -> None:
        try:
            conn = open_ledger(self.path)
        except BaseException as err:
            self._opened.set_exception(err)
            return
        self._opened.set_result(None)
        try:
            while (job := self._jobs.get()) is not None:
                fn, fut = job
                if not fut.set_running_or_notify_cancel():
                    continue
                try:
                    fut.set_result(self._run(conn, fn))
                except BaseException as err:
                    fut.set_exception(err)
        finally:
            conn.close()

    def _run(self, conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
        try:
            return _attempt(conn, fn)
        except sqlite3.OperationalError as err:
            if not is_disk_full(err):
                raise
            full = err
        if self.reserve is not None and self.reserve.release():
            log.warning(
                "ledger: the disk is full; released its reserve (%d MiB) to go on recording",
                self.reserve.size // (1024 * 1024),
            )
            try:
                return _attempt(conn, fn)
            except sqlite3.OperationalError as again:
                if not is_disk_full(again):
                    raise
        raise LedgerFull(str(full)) from full

    async def _submit(self, fn: Callable[..., T], args: Any, kwargs: Any) -> T:
        fut: Future[T] = Future()
        self._jobs.put((lambda conn: fn(conn, *args, **kwargs), fut))
        # Shielded: once queued, a write completes even if the caller is cancelled.
        return await asyncio.shield(asyncio.wrap_future(fut))

    async def try_call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Like :meth:`call`, but raise :class:`LedgerFull` rather than wait for space."""
        return await self._submit(fn, args, kwargs)

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(conn, *args, **kwargs)`` on the ledger thread.

        On a full disk, wait for space and run it again (each try is one rolled-back
        or committed transaction). A caller cancelled while waiting gives the write
        up: what it would have recorded is done again later (a delivery whose SENT
        was not recorded is sent again under the same SOP Instance UID).
        """
        try:
            return await self._submit(fn, args, kwargs)
        except LedgerFull:
            pass
        self._waiting += 1
        if self._waiting == 1:
            log.error(
                "the ledger cannot write: the disk is full; delivery and confirmation "
                "pause until there is space (nothing is lost)"
            )
        written = False
        try:
            delay = 0.5
            while True:
                await asyncio.sleep(delay)
                delay = min(2 * delay, FULL_RETRY_MAX)
                with contextlib.suppress(LedgerFull):
                    result = await self._submit(fn, args, kwargs)
                    written = True
                    return result
        finally:
            self._waiting -= 1
            if written and self._waiting == 0:
                log.warning("the ledger writes again")

    def close(self) -> None:
        """Finish queued work and close the database."""
        if self._thread is not None:
            self._jobs.put(None)
            self._thread.join()
            self._thread = None
