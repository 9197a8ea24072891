"""Blocking spool operations behind the technician's ``dermgate spool`` commands.

They run in the command's own process, beside a gateway service that may be using
the same ledger (SQLite WAL): reads use a read-only connection, the one write
(:func:`retry_capture`) takes the write lock with ``BEGIN IMMEDIATE`` and waits for
the service up to the ledger's busy timeout. Nothing here returns patient data; the
DICOM file is read only by ``show --reveal``, in the command module.

Retry rules (the way out of QUARANTINED once a technician has acted), applied in one
ledger transaction, under the write lock, after re-reading the capture:

* the capture must be QUARANTINED, or have a FAILED delivery (a destination refused
  it while others still get it), else :class:`NotPossible`;
* it has no DICOM file to send — it was never wrapped (``dicom_name`` is NULL), its
  quarantine came from wrapping (no delivery rows), or the DICOM file is gone — and
  its raw device file exists → CAPTURED: the service wraps it again, with the same
  UIDs;
* otherwise, if its DICOM file exists → WRAPPED, and a configured destination
  without a delivery row gets a PENDING one; if every destination already has the
  instance (nothing pending) the state is derived from the deliveries (SENT or
  COMMITTED) instead;
* in both cases every FAILED delivery goes back to PENDING with ``next_attempt_at`` =
  now, ``commit_failures`` = 0, ``commit_txn`` = NULL, ``last_error`` = "retry
  requested by technician" and no derived object chosen (the class is negotiated
  again: the PACS may take the original now), and the ``reason`` column is cleared;
* neither raw nor DICOM file exists → :class:`NotPossible`, "nothing left to send".

The service's forwarders poll the ledger at least every 60 s, so a retried capture
is picked up within that interval without restarting the service.
"""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from gateway.core.capture import ContentType
from gateway.core.files import atomic_writer
from gateway.core.routing import RoutePlan
from gateway.spool.dirs import SpoolDirs
from gateway.spool.ledger import (
    REBUILT_DRIVER,
    SpoolEntry,
    get_capture,
    refresh_capture_state,
    utc_now_text,
)
from gateway.spool.routing import create_deliveries
from gateway.spool.schema import RETRY_NOTE
from gateway.spool.states import CaptureState, DeliveryState

RESOLVED_PREFIX = "resolved by technician"
RESOLUTIONS = {
    "sent-another-way": "sent to the PACS another way (exported by hand)",
    "not-needed": "not needed (test image, duplicate or retaken)",
    "retaken": "the image was taken again on the device",
}
SERVICE_POLL_SECONDS = 60
EXPORT_CHUNK = 1 << 20

_UID = re.compile(r"^[0-9]+(\.[0-9]+)+$")


class AdminError(Exception):
    """A spool command cannot do what was asked; the message says why."""


class NoSuchCapture(AdminError):
    """The spool has no capture with that id or SOP Instance UID."""


class NotPossible(AdminError):
    """The capture exists, but the action is not possible in its state."""


# --------------------------------------------------------------------------- lookup


MAX_SPOOL_ID = 2**63 - 1  # SQLite's largest INTEGER


def parse_ref(text: str) -> int | str:
    """A capture reference from the command line: spool id (int) or SOP Instance UID.

    A spool id is written in ASCII digits. A number that no spool id can be (larger
    than :data:`MAX_SPOOL_ID`, or in other digits: "٣", "３", "³") is returned as
    text, for :func:`find_entry` to answer "no such capture". Raises
    :class:`ValueError` for anything else.
    """
    text = text.strip()
    if text.isascii() and text.isdigit() and len(text) <= len(str(MAX_SPOOL_ID)):
        return int(text)
    if text.isnumeric() or (len(text) <= 64 and _UID.match(text)):
        return text
    raise ValueError(f"{text!r} is neither a spool id nor a SOP Instance UID")


def find_entry(conn: sqlite3.Connection, ref: int | str) -> SpoolEntry:
    """The capture ``ref`` names; raises :class:`NoSuchCapture`."""
    if isinstance(ref, int) and not 0 <= ref <= MAX_SPOOL_ID:
        shown = "of that size" if ref > MAX_SPOOL_ID else str(ref)
        raise NoSuchCapture(f"no capture with spool id {shown} in the spool")
    if isinstance(ref, str) and ref.isnumeric():
        shown = ref if len(ref) <= 24 else f"{ref[:24]}… ({len(ref)} digits)"
        raise NoSuchCapture(
            f"no capture with spool id {shown} in the spool "
            "(spool ids are numbers up to 2^63-1 in the digits 0-9, as `spool list` shows them)"
        )
    if isinstance(ref, str):
        row = conn.execute("SELECT id FROM captures WHERE sop_instance_uid = ?", (ref,)).fetchone()
        entry = None if row is None else get_capture(conn, int(row[0]))
    else:
        entry = get_capture(conn, ref)
    if entry is None:
        what = f"spool id {ref}" if isinstance(ref, int) else f"SOP Instance UID {ref}"
        raise NoSuchCapture(f"no capture with {what} in the spool")
    return entry


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    """One capture towards one destination, as the ledger records it."""

    destination: str
    state: DeliveryState
    attempts: int
    next_attempt_at: float | None
    last_error: str | None
    commit_failures: int
    commit_txn: str | None
    sent_at: str | None
    committed_at: str | None
    sent_sop_class_uid: str | None = None
    """The derived object's class this destination gets instead (None: the capture)."""
    sent_sop_instance_uid: str | None = None
    priority: int = 0  # a route's priority = "high": 1
    error_code: str | None = None
    """Why the last attempt failed (a :class:`~gateway.core.errors.DeliveryErrorCode`)."""


def deliveries(conn: sqlite3.Connection, spool_id: int) -> list[DeliveryRecord]:
    """The capture's deliveries, by destination name."""
    rows = conn.execute(
        "SELECT destination, state, attempts, next_attempt_at, last_error, commit_failures, "
        "commit_txn, sent_at, committed_at, sent_sop_class_uid, sent_sop_instance_uid, "
        "priority, error_code FROM deliveries WHERE capture_id = ? "
        "ORDER BY destination",
        (spool_id,),
    ).fetchall()
    return [
        DeliveryRecord(
            destination=r["destination"],
            state=DeliveryState(r["state"]),
            attempts=r["attempts"],
            next_attempt_at=r["next_attempt_at"],
            last_error=r["last_error"],
            commit_failures=r["commit_failures"],
            commit_txn=r["commit_txn"],
            sent_at=r["sent_at"],
            committed_at=r["committed_at"],
            sent_sop_class_uid=r["sent_sop_class_uid"],
            sent_sop_instance_uid=r["sent_sop_instance_uid"],
            priority=r["priority"],
            error_code=r["error_code"],
        )
        for r in rows
    ]


@dataclass(frozen=True, slots=True)
class SpoolFile:
    """A file of a capture in the spool: what the ledger names and what is on disk."""

    path: Path | None
    exists: bool
    size: int | None


def spool_file(folder: Path, name: str | None) -> SpoolFile:
    """Look at ``folder/name`` (``name`` None or empty: the capture has no such file)."""
    if not name:
        return SpoolFile(None, False, None)
    path = folder / name
    try:
        return SpoolFile(path, True, path.stat().st_size)
    except FileNotFoundError:
        return SpoolFile(path, False, None)


# --------------------------------------------------------------------------- retry


@dataclass(frozen=True, slots=True)
class RetryOutcome:
    """What a retry changed."""

    spool_id: int
    sop_instance_uid: str
    previous_reason: str | None
    state: CaptureState
    reset_deliveries: list[str]


def retry_capture(
    conn: sqlite3.Connection,
    dirs: SpoolDirs,
    ref: int | str,
    destinations: RoutePlan | Iterable[str],
    now: float | None = None,
) -> RetryOutcome:
    """Release a QUARANTINED capture by the rules of this module's docstring.

    ``conn`` is a writable ledger connection (:func:`~gateway.spool.ledger.open_ledger`);
    ``destinations`` are the configured destinations and routes (or just their names:
    every capture to each). Raises
    :class:`NoSuchCapture`, :class:`NotPossible` or :class:`sqlite3.Error` (busy).
    """
    now = time.time() if now is None else now
    stamp = utc_now_text()
    conn.execute("BEGIN IMMEDIATE")
    try:
        outcome = _retry_locked(conn, dirs, ref, RoutePlan.of(destinations), now, stamp)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return outcome


def _retry_locked(
    conn: sqlite3.Connection,
    dirs: SpoolDirs,
    ref: int | str,
    plan: RoutePlan,
    now: float,
    stamp: str,
) -> RetryOutcome:
    entry = find_entry(conn, ref)
    failed = conn.execute(
        "SELECT 1 FROM deliveries WHERE capture_id = ? AND state = ? LIMIT 1",
        (entry.spool_id, DeliveryState.FAILED),
    ).fetchone()
    if entry.state is not CaptureState.QUARANTINED and not (
        failed is not None and entry.state in (CaptureState.WRAPPED, CaptureState.SENT)
    ):
        raise NotPossible(
            f"spool id {entry.spool_id} is {entry.state}, not QUARANTINED: "
            "only a quarantined capture can be retried"
        )
    if entry.driver == REBUILT_DRIVER and not entry.dicom_name:
        raise NotPossible(
            f"spool id {entry.spool_id} came back from a lost ledger without its device, patient "
            "and kind, so it cannot be wrapped: export it (dermgate spool export "
            f"{entry.spool_id} --to DIR) and take it again or send it by hand"
        )
    raw = spool_file(dirs.raw, entry.raw_name)
    dicom = spool_file(dirs.dicom, entry.dicom_name)
    has_deliveries = conn.execute(
        "SELECT 1 FROM deliveries WHERE capture_id = ? LIMIT 1", (entry.spool_id,)
    ).fetchone()
    if (not dicom.exists or has_deliveries is None) and raw.exists:
        target = CaptureState.CAPTURED
    elif dicom.exists:
        target = CaptureState.WRAPPED
    else:
        raise NotPossible(
            f"spool id {entry.spool_id}: nothing left to send: neither the raw capture "
            f"({entry.raw_name}) nor a DICOM file is in the spool"
        )
    reset = [
        str(r[0])
        for r in conn.execute(
            "SELECT destination FROM deliveries WHERE capture_id = ? AND state = ? "
            "ORDER BY destination",
            (entry.spool_id, DeliveryState.FAILED),
        ).fetchall()
    ]
    conn.execute(
        "UPDATE deliveries SET state = ?, next_attempt_at = ?, commit_failures = 0, "
        "commit_txn = NULL, last_error = ?, error_code = NULL, error_status = NULL, "
        "sent_sop_class_uid = NULL, sent_sop_instance_uid = NULL "
        "WHERE capture_id = ? AND state = ?",
        (DeliveryState.PENDING, now, RETRY_NOTE, entry.spool_id, DeliveryState.FAILED),
    )
    conn.execute(
        "UPDATE captures SET state = ?, reason = NULL, updated_at = ? WHERE id = ?",
        (target, stamp, entry.spool_id),
    )
    state = target
    if target is CaptureState.WRAPPED:
        create_deliveries(conn, entry.spool_id, plan, now)  # routes (a no-route one: again)
        refresh_capture_state(conn, entry.spool_id, stamp)
        row = conn.execute("SELECT state FROM captures WHERE id = ?", (entry.spool_id,)).fetchone()
        state = CaptureState(row[0])
    return RetryOutcome(entry.spool_id, entry.uids.sop_instance, entry.reason, state, reset)


# --------------------------------------------------------------------------- resolve


def resolve_capture(
    conn: sqlite3.Connection, ref: int | str, resolution: str, user: str
) -> SpoolEntry:
    """Mark a QUARANTINED capture as dealt with by a technician (the local page).

    The capture stays QUARANTINED and on disk (nothing is deleted, a later
    ``retry`` still works); its ``reason`` becomes ``"resolved by technician USER:
    PHRASE (was: OLD REASON)"``, so listings show who acknowledged it and why, and
    the "set aside" count of the page and its alarm no longer include it. The
    phrase is one of :data:`RESOLUTIONS` (keys), never free text: a typed note could
    carry a patient's name into listings. Raises :class:`NoSuchCapture`,
    :class:`NotPossible` (not quarantined, already resolved, unknown resolution).
    """
    if resolution not in RESOLUTIONS:
        raise NotPossible(f"unknown resolution {resolution!r}")
    conn.execute("BEGIN IMMEDIATE")
    try:
        spool_id = _resolve_locked(conn, ref, RESOLUTIONS[resolution], user, utc_now_text())
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    resolved = get_capture(conn, spool_id)
    assert resolved is not None
    return resolved


def _resolve_locked(
    conn: sqlite3.Connection, ref: int | str, phrase: str, user: str, stamp: str
) -> int:
    entry = find_entry(conn, ref)
    if entry.state is not CaptureState.QUARANTINED:
        raise NotPossible(
            f"spool id {entry.spool_id} is {entry.state}, not QUARANTINED: nothing to resolve"
        )
    if entry.reason and entry.reason.startswith(RESOLVED_PREFIX):
        raise NotPossible(f"spool id {entry.spool_id} is already resolved")
    reason = f"{RESOLVED_PREFIX} {user}: {phrase}"
    if entry.reason:
        reason += f" (was: {entry.reason})"
    conn.execute(
        "UPDATE captures SET reason = ?, updated_at = ? WHERE id = ?",
        (reason, stamp, entry.spool_id),
    )
    return entry.spool_id


# --------------------------------------------------------------------------- export


@dataclass(frozen=True, slots=True)
class ExportSource:
    """The file ``export`` copies and the name it gets in the target folder."""

    path: Path
    name: str
    kind: str  # "dicom" or "raw"


#: The file name suffix of a never-wrapped capture, by what the device said it is.
RAW_SUFFIXES = {
    ContentType.JPEG: ".jpg",
    ContentType.TIFF: ".tif",
    ContentType.PNG: ".png",
    ContentType.PIXELS: ".raw",  # uncompressed frames; geometry in `spool show --json`
    ContentType.OBJ: ".obj",
    ContentType.MTL: ".mtl",
    ContentType.STL: ".stl",
}


def export_source(entry: SpoolEntry, dirs: SpoolDirs) -> ExportSource:
    """What to export: the DICOM file, or the raw device file if never wrapped.

    Raises :class:`NotPossible` when that file is no longer in the spool.
    """
    uid = entry.uids.sop_instance
    if entry.dicom_name is not None:
        dicom = spool_file(dirs.dicom, entry.dicom_name)
        if dicom.exists and dicom.path is not None:
            return ExportSource(dicom.path, f"{uid}.dcm", "dicom")
        raise NotPossible(_gone(entry, f"its DICOM file {entry.dicom_name}"))
    raw = spool_file(dirs.raw, entry.raw_name)
    if raw.exists and raw.path is not None:
        return ExportSource(raw.path, f"{uid}{RAW_SUFFIXES[entry.offer.content_type]}", "raw")
    raise NotPossible(_gone(entry, f"it was never wrapped and its raw file {entry.raw_name}"))


def _gone(entry: SpoolEntry, what: str) -> str:
    text = f"spool id {entry.spool_id} is {entry.state}: {what} is no longer in the spool"
    if entry.state is CaptureState.PURGED:
        text += " (the PACS confirmed it and the purge policy deleted the local copies)"
    return f"{text} ({entry.reason})" if entry.reason else text


@dataclass(frozen=True, slots=True)
class ExportResult:
    """A finished, verified copy."""

    path: Path
    size: int
    sha256: str
    kind: str


def export_file(
    source: ExportSource,
    folder: Path,
    progress: Callable[[int, int], None] = lambda done, total: None,
) -> ExportResult:
    """Copy ``source`` into ``folder`` (created if missing), durably and verified.

    Streamed in 1 MiB chunks through :func:`~gateway.core.files.atomic_writer`; the
    copy appears under its final name only if its size matches the source's.
    ``progress(done, total)`` is called after each chunk. Raises :class:`OSError`.
    """
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / source.name
    digest = hashlib.sha256()
    with source.path.open("rb") as src:
        total = os.fstat(src.fileno()).st_size
        done = 0
        with atomic_writer(dest) as out:
            while chunk := src.read(EXPORT_CHUNK):
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                progress(done, total)
            out.flush()
            written = os.fstat(out.fileno()).st_size
            if done != total or written != total:
                raise OSError(
                    f"copy of {source.path.name} has {written} bytes, expected {total} "
                    "(did the file change while it was copied?)"
                )
    size = dest.stat().st_size
    if size != total:
        raise OSError(f"{dest} has {size} bytes after the copy, expected {total}")
    return ExportResult(dest, size, digest.hexdigest(), source.kind)
