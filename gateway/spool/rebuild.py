"""A lost ledger: refuse to start over it, and rebuild it from the spool's own files.

The ledger is the only record of which files in the spool were acknowledged. When it
is missing or empty (0 bytes: a failed disk, a bad restore, a careless ``rm``) but
``spool/`` still holds captures, starting the service would create a new, empty
ledger and its start-up reconciliation would set every capture aside in
``orphans/`` as never recorded: nothing would be sent, and nothing would say why.
So ``dermgate run`` refuses (:func:`refuse_spool_without_ledger`) and the
technician runs ``dermgate spool rebuild`` (:func:`rebuild_ledger`):

* every ``spool/dicom/*.dcm`` that reads as DICOM becomes a WRAPPED row with the
  UIDs, SOP class and transfer syntax read from the file, and a pending delivery to
  each configured destination: the PACS receives it again under the same SOP
  Instance UID (a PACS that already has it keeps one copy);
* a file whose Patient ID is a temporary patient of this gateway
  (``TMP-<gateway id>-N``, issuer ``<gateway id>-TEMP``) keeps spool id N, so
  ``spool show N`` finds it again (files of one 3D export share their first file's
  N: the first of them by time keeps it); every other row gets a new spool id above
  every id seen and above the box's spool id mark (:mod:`gateway.spool.spool_ids`),
  and the mark is then moved above them all: an id a purged capture took to the
  PACS is never handed out again;
* its raw device file (``spool/raw/<SOP Instance UID>.raw``), when present, is
  recorded as its own, so that the purge deletes both;
* a raw capture that no DICOM file stands for becomes a QUARANTINED row (reason:
  :data:`RAW_ONLY_REASON`), its file left where it is: it was acknowledged, so it
  stays in ``spool list`` and on the page, and ``spool export`` copies it out; without
  the lost row nothing says what device sent it, its patient or what it is, so
  DermGate cannot wrap it (``spool retry`` refuses it);
* a damaged or foreign file in ``dicom/`` is reported and left where it is.

The new ledger is written to a temporary file beside the old one and renamed over it
only when complete: a rebuild interrupted half way leaves the empty ledger (and so
the refusal to start) as it was. A non-empty ledger is never replaced: the
technician moves a damaged one aside first, deliberately.

What the spooled files say (headers, spool ids, raw file kinds, digests) is read by
:mod:`gateway.spool.rebuild_scan`; this module decides and writes.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from gateway.core.capture import (
    CaptureOffer,
    DeviceClass,
    DeviceIdentity,
    InstanceUIDs,
)
from gateway.core.files import fsync_dir
from gateway.core.routing import RoutePlan
from gateway.core.state_owner import owned_like
from gateway.core.uids import new_uid
from gateway.spool import ledger as db
from gateway.spool.dirs import SpoolDirs
from gateway.spool.rebuild_scan import (
    _capture_files,
    _content_type,
    _Found,
    _read_dicom,
    _sha256,
    _sniff,
    _spool_ids,
)
from gateway.spool.spool_ids import (
    SpoolIdMarkDamaged,
    read_high_water,
    write_high_water,
)

REBUILT_DRIVER = db.REBUILT_DRIVER


class LedgerLost(RuntimeError):
    """The ledger is missing or empty while the spool holds captures: no start."""

    def __init__(self, ledger: Path, how: str, dicom: int, raw: int, spool: Path) -> None:
        super().__init__(ledger, how, dicom, raw, spool)
        self.ledger = ledger
        self.how = how
        self.dicom = dicom
        self.raw = raw
        self.spool = spool
        #: The configuration file to name in the advice (the command line knows it).
        self.config_file = "FILE"

    def __str__(self) -> str:
        return (
            f"the ledger {self.ledger} is {self.how}, but the spool {self.spool} holds "
            f"{self.dicom} DICOM file(s) and {self.raw} raw capture file(s); the service did "
            "not start and nothing was moved. Starting over an empty ledger would set every "
            "one of them aside as unrecorded. If the ledger was lost, rebuild it from the "
            f"spool with: dermgate spool rebuild --config {self.config_file} "
            '(see README, "After a crash"), then start the service again.'
        )


class RebuildRefused(RuntimeError):
    """``spool rebuild`` did not write a ledger; the message says why."""


def _ledger_state(ledger: Path) -> str | None:
    """``"missing"``, ``"empty (0 bytes)"``, or None for a ledger with content."""
    try:
        size = ledger.stat().st_size
    except FileNotFoundError:
        return "missing"
    return "empty (0 bytes)" if size == 0 else None


def refuse_spool_without_ledger(ledger: Path, dirs: SpoolDirs) -> None:
    """Raise :class:`LedgerLost` if the ledger is missing or empty beside captures.

    Blocking; ``dermgate run`` calls it under the state lock, before it creates or
    opens anything. A new box (no ledger, empty spool) passes.
    """
    how = _ledger_state(ledger)
    if how is None:
        return
    dicom, raw = _capture_files(dirs.dicom), _capture_files(dirs.raw)
    if dicom or raw:
        raise LedgerLost(ledger, how, len(dicom), len(raw), dirs.root)


# --------------------------------------------------------------------------- rebuild


@dataclass(frozen=True, slots=True)
class RebuiltCapture:
    """One row the rebuild wrote."""

    spool_id: int
    sop_instance_uid: str
    dicom_name: str
    raw_name: str


@dataclass
class RebuildReport:
    """What :func:`rebuild_ledger` did and what it left alone."""

    ledger: Path
    rebuilt: list[RebuiltCapture] = field(default_factory=list)
    #: Raw captures no DICOM file stands for: (spool id, file name), recorded QUARANTINED.
    raw_only: list[tuple[int, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # dicom/ name, why
    wal_kept: Path | None = None
    #: Rows that kept the spool id their temporary Patient ID names.
    kept_ids: int = 0
    #: The spool id mark written: the next capture's spool id is at least this.
    next_spool_id: int = 1
    #: There was no mark (a box that never ran a DermGate that writes one).
    mark_missing: bool = False
    spool_id_mark: Path | None = None


#: Why a raw capture of a rebuilt ledger is set aside (``spool retry`` refuses it too).
RAW_ONLY_REASON = (
    "the ledger was rebuilt and this capture had not become DICOM yet: the device that "
    "sent it, its patient and what it shows were in the lost ledger, so DermGate cannot "
    "wrap it; export it (dermgate spool export ID --to DIR) and take it again or send "
    "it by hand if the PACS does not have it"
)


def _record_raw_only(conn: sqlite3.Connection, path: Path, spool_id: int) -> None:
    """A raw capture without its DICOM file: a QUARANTINED row, so that it is listed,
    counted among the captures set aside and can be exported, never silently kept
    aside in ``orphans/`` (it was acknowledged to its device)."""
    stem = path.name.removesuffix(".raw")
    sop = stem if stem and len(stem) <= 64 and set(stem) <= set("0123456789.") else new_uid()
    uids = InstanceUIDs(new_uid(), new_uid(), sop)
    device = DeviceIdentity(
        manufacturer="unknown",
        model="unknown",
        serial_number="unknown",
        software_versions=(),
        device_class=DeviceClass.CAMERA,
    )
    offer = CaptureOffer(
        device_capture_id=f"{REBUILT_DRIVER}-raw-{stem}"[:128], content_type=_sniff(path)
    )
    db.insert_capture(
        conn,
        driver=REBUILT_DRIVER,
        device=device,
        offer=offer,
        uids=uids,
        raw_name=path.name,
        raw_size=path.stat().st_size,
        raw_sha256=_sha256(path),
        spool_id=spool_id,
    )
    db.quarantine(conn, spool_id, RAW_ONLY_REASON)
    received = datetime.fromtimestamp(path.stat().st_mtime, UTC)
    conn.execute(
        "UPDATE captures SET received_at = ? WHERE id = ?",
        (received.isoformat(timespec="milliseconds"), spool_id),
    )


def _record(
    conn: sqlite3.Connection,
    found: _Found,
    dirs: SpoolDirs,
    destinations: RoutePlan | Sequence[str],
    spool_id: int,
    shares_patient: bool,
) -> RebuiltCapture:
    raw = dirs.raw / f"{found.uids.sop_instance}.raw"
    if raw.is_file() and not raw.is_symlink():
        raw_name, raw_size, raw_sha256 = raw.name, raw.stat().st_size, _sha256(raw)
    else:  # wrapped at intake: the device's bytes live only inside the DICOM file
        raw_name, raw_size, raw_sha256 = "", 0, ""
    offer = CaptureOffer(
        device_capture_id=f"{REBUILT_DRIVER}-{found.uids.sop_instance}",
        content_type=_content_type(found),
        # Files sharing a temporary patient share a study (driver-chosen UIDs): so
        # marked, a re-wrap names the study's first spool id, as the file does.
        uids=found.uids if shares_patient else None,
        patient=found.patient,
    )
    db.insert_capture(
        conn,
        driver=REBUILT_DRIVER,
        device=found.device,
        offer=offer,
        uids=found.uids,
        raw_name=raw_name,
        raw_size=raw_size,
        raw_sha256=raw_sha256,
        wrapped=db.WrappedAtIntake(
            dicom_name=found.path.name,
            sop_class_uid=found.sop_class_uid,
            transfer_syntax_uid=found.transfer_syntax_uid,
            destinations=RoutePlan.of(destinations),
        ),
        spool_id=spool_id,
        sensitive=found.sensitive,
    )
    # Received when its file was written (so keep_days counts from then, not now).
    received = datetime.fromtimestamp(found.path.stat().st_mtime, UTC)
    conn.execute(
        "UPDATE captures SET received_at = ? WHERE id = ?",
        (received.isoformat(timespec="milliseconds"), spool_id),
    )
    return RebuiltCapture(spool_id, found.uids.sop_instance, found.path.name, raw_name)


def _sidecars(path: Path) -> tuple[Path, Path]:
    return Path(f"{path}-wal"), Path(f"{path}-shm")


def _remove(path: Path) -> None:
    for stale in (path, *_sidecars(path)):
        stale.unlink(missing_ok=True)


def rebuild_ledger(
    ledger: Path,
    dirs: SpoolDirs,
    destinations: RoutePlan | Sequence[str],
    *,
    gateway_id: str,
    spool_id_mark: Path,
) -> RebuildReport:
    """Write a new ledger for the captures in ``dirs`` (blocking; under the state lock).

    ``gateway_id`` tells this gateway's temporary patients from others;
    ``spool_id_mark`` is the box's spool id high-water mark, moved above every id
    the new ledger holds before that ledger takes the old one's place.

    Raises :class:`RebuildRefused` if the ledger at ``ledger`` has content or the
    mark is damaged, and :class:`OSError` or :class:`sqlite3.Error` if it cannot be
    written (the old, empty one then stays as it was).
    """
    how = _ledger_state(ledger)
    if how is None:
        size = ledger.stat().st_size
        raise RebuildRefused(
            f"the ledger {ledger} is not empty ({size} bytes): nothing rebuilt. A rebuild only "
            "replaces a missing or empty ledger. If that one is damaged (the service cannot "
            f"open it), move it aside first (mv {ledger} {ledger}.damaged, with its -wal file "
            "if there is one) and run spool rebuild again"
        )
    try:
        mark = read_high_water(spool_id_mark)
    except SpoolIdMarkDamaged as err:
        raise RebuildRefused(f"{err}; nothing rebuilt") from err
    report = RebuildReport(ledger, mark_missing=mark is None, spool_id_mark=spool_id_mark)
    found: list[_Found] = []
    for path in _capture_files(dirs.dicom):
        if path.suffix != ".dcm":
            report.skipped.append((path.name, "not a .dcm file"))
            continue
        try:
            found.append(_read_dicom(path, gateway_id))
        except ValueError as err:
            report.skipped.append((path.name, str(err)))
    found.sort(key=lambda f: (f.path.stat().st_mtime, f.path.name))
    unique: list[_Found] = []
    seen: dict[str, str] = {}
    for item in found:
        uid = item.uids.sop_instance
        if uid in seen:
            report.skipped.append((item.path.name, f"same SOP Instance UID as {seen[uid]}"))
            continue
        seen[uid] = item.path.name
        unique.append(item)
    ids = _spool_ids(unique, mark)
    shared = Counter(item.temporary for item in unique if item.temporary is not None)
    report.kept_ids = sum(1 for item, n in zip(unique, ids, strict=True) if item.temporary == n)
    report.next_spool_id = max([mark or 1, *(n + 1 for n in ids)])
    wrapped_raw = {f"{item.uids.sop_instance}.raw" for item in unique}
    raw_only = [p for p in _capture_files(dirs.raw) if p.name not in wrapped_raw]
    raw_ids = list(range(report.next_spool_id, report.next_spool_id + len(raw_only)))
    report.next_spool_id += len(raw_only)

    tmp = ledger.with_name(f".{ledger.name}.rebuild")
    _remove(tmp)
    conn = db.open_ledger(tmp)
    try:
        conn.execute("PRAGMA synchronous = OFF")  # made durable as a whole below
        for item, spool_id in zip(unique, ids, strict=True):
            grouped = item.temporary is not None and shared[item.temporary] > 1
            report.rebuilt.append(_record(conn, item, dirs, destinations, spool_id, grouped))
        for path, spool_id in zip(raw_only, raw_ids, strict=True):
            _record_raw_only(conn, path, spool_id)
            report.raw_only.append((spool_id, path.name))
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("PRAGMA journal_mode = DELETE")  # one self-contained file to rename
    except BaseException:
        conn.close()
        _remove(tmp)
        raise
    conn.close()
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(_remove, tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        owned_like(ledger.parent, tmp)  # run as root, for the service's user
        # The mark moves first: once the new ledger is in place, its ids and every
        # id handed out before are below it.
        if report.next_spool_id != mark:
            write_high_water(spool_id_mark, report.next_spool_id)
        wal, shm = _sidecars(ledger)
        if wal.exists() and wal.stat().st_size > 0:
            # What a lost ledger's WAL held is kept for inspection, never replayed
            # onto the rebuilt one.
            report.wal_kept = wal.with_name(f"{wal.name}.before-rebuild")
            os.replace(wal, report.wal_kept)
        wal.unlink(missing_ok=True)
        shm.unlink(missing_ok=True)
        os.replace(tmp, ledger)
        cleanup.pop_all()
    fsync_dir(ledger.parent)
    return report
