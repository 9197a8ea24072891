"""What one spooled capture is, for a person: the details ``dermgate spool show`` and the
page both show, and the patient a capture's file or device metadata names (shown only
on an audited reveal).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from gateway.spool import admin
from gateway.spool import ledger as db
from gateway.spool.dirs import SpoolDirs
from gateway.spool.records import device_shown, settings_shown
from gateway.spool.states import DeliveryState

__all__ = [
    "PATIENT_ATTRIBUTES",
    "capture_details",
    "local_epoch",
    "local_time",
    "patient_of",
    "read_patient",
    "sop_class_name",
]


def local_time(text: str | None) -> str | None:
    """A stored UTC ISO time as local time, or None."""
    if text is None:
        return None
    try:
        return datetime.fromisoformat(text).astimezone().isoformat(sep=" ", timespec="seconds")
    except ValueError:
        return text


def local_epoch(value: float | None) -> str | None:
    if value is None:
        return None
    return datetime.fromtimestamp(value).astimezone().isoformat(sep=" ", timespec="seconds")


def sop_class_name(uid: str | None) -> str | None:
    if uid is None:
        return None
    from pydicom.uid import UID

    name = UID(uid).name
    return None if name == uid else name


def _file_json(file: admin.SpoolFile) -> dict[str, Any]:
    return {
        "name": None if file.path is None else file.path.name,
        "exists": file.exists,
        "size": file.size,
    }


def capture_details(
    entry: db.SpoolEntry, records: list[admin.DeliveryRecord], dirs: SpoolDirs
) -> dict[str, Any]:
    """Everything the ledger knows about one capture, as JSON-ready data.

    Device metadata and capture settings only: patient identity a device supplied
    (a 3D scanner's export) is kept in its own ledger column and never shown here.
    """
    offer = entry.offer
    raw = _file_json(admin.spool_file(dirs.raw, entry.raw_name))
    raw.update(recorded_size=entry.raw_size, sha256=entry.raw_sha256)
    return {
        "id": entry.spool_id,
        "state": str(entry.state),
        "reason": entry.reason,
        "study_instance_uid": entry.uids.study,
        "series_instance_uid": entry.uids.series,
        "sop_instance_uid": entry.uids.sop_instance,
        "sop_class_uid": entry.sop_class_uid,
        "sop_class_name": sop_class_name(entry.sop_class_uid),
        "transfer_syntax_uid": entry.transfer_syntax_uid,
        "driver": entry.driver,
        "device": device_shown(entry.device),
        "device_capture_id": offer.device_capture_id,
        "content_type": str(offer.content_type),
        "acquired_at": offer.acquired_at.isoformat() if offer.acquired_at else None,
        "settings": settings_shown(offer),
        "received_at": entry.received_at,
        "updated_at": entry.updated_at,
        "files": {
            "raw": raw,
            "dicom": _file_json(admin.spool_file(dirs.dicom, entry.dicom_name)),
        },
        "deliveries": [
            {
                "destination": r.destination,
                "state": str(r.state),
                "attempts": r.attempts,
                "next_attempt_at": local_epoch(r.next_attempt_at)
                if r.state is DeliveryState.PENDING
                else None,
                "last_error": r.last_error,
                "commit_failures": r.commit_failures,
                "awaiting_commitment": r.commit_txn is not None,
                "sent_at": r.sent_at,
                "committed_at": r.committed_at,
                "sent_as": _sent_as(r, entry.sop_class_uid, entry.uids.sop_instance),
            }
            for r in records
        ],
    }


def _sent_as(
    record: admin.DeliveryRecord, sop_class_uid: str | None, sop_instance_uid: str
) -> dict[str, Any]:
    """Which object this destination gets: the capture, or a derived object of a
    compatible class (``fallback = "compatible"``), and the words that say so."""
    derived = record.sent_sop_class_uid is not None
    uid = record.sent_sop_class_uid if derived else sop_class_uid
    instance = record.sent_sop_instance_uid if derived else sop_instance_uid
    name = sop_class_name(uid) or "unknown class"
    text = f"{name} (derived, {instance})" if derived else name
    return {
        "sop_class_uid": uid,
        "sop_class_name": name,
        "sop_instance_uid": instance,
        "derived": derived,
        "text": text,
    }


PATIENT_ATTRIBUTES = (
    ("PatientName", "Patient's Name"),
    ("PatientID", "Patient ID"),
    ("IssuerOfPatientID", "Issuer of Patient ID"),
    ("PatientBirthDate", "Patient's Birth Date"),
    ("PatientSex", "Patient's Sex"),
    ("AccessionNumber", "Accession Number"),
)


def read_patient(path: Path) -> dict[str, str]:
    """The patient attributes of a DICOM file (absent ones as ""); raises on I/O."""
    from pydicom import dcmread

    dataset = dcmread(path, stop_before_pixels=True)
    return {
        keyword: "" if dataset.get(keyword) is None else str(dataset.get(keyword))
        for keyword, _ in PATIENT_ATTRIBUTES
    }


def patient_of(entry: db.SpoolEntry, dirs: SpoolDirs) -> tuple[dict[str, str], str] | None:
    """The patient of a capture and where it was read, or None if nothing holds one.

    The DICOM file when there is one (what the PACS gets); else the patient fields a
    device supplied (a 3D scanner's metadata), kept in the ledger, so that a
    technician can tell whose capture a never-wrapped, quarantined one is. Raises
    what pydicom raises for a damaged DICOM file.
    """
    dicom = admin.spool_file(dirs.dicom, entry.dicom_name)
    if dicom.exists and dicom.path is not None:
        return read_patient(dicom.path), "the DICOM file"
    supplied = entry.offer.patient
    if supplied is None:
        return None
    return {
        "PatientName": supplied.patient_name,
        "PatientID": supplied.patient_id,
        "IssuerOfPatientID": supplied.issuer_of_patient_id,
        "PatientBirthDate": supplied.birth_date,
        "PatientSex": supplied.sex,
        "AccessionNumber": supplied.accession_number,
    }, "the device's metadata"
