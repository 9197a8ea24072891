"""Reading a spool whose ledger was lost, for :mod:`gateway.spool.rebuild`.

What the rebuild learns from the spooled files alone: which files are captures,
what a DICOM file's header says (UIDs, SOP class, transfer syntax, device, the
patient or this gateway's temporary patient and so its spool id), the spool id
each file gets, what a raw file is from its first bytes, and its SHA-256. Nothing
here writes: :mod:`gateway.spool.rebuild` writes the new ledger from it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.core.capture import (
    ContentType,
    DeviceClass,
    DeviceIdentity,
    InstanceUIDs,
    PatientContext,
)
from gateway.core.patient import temporary_spool_id
from gateway.spool.spool_ids import MAX_SPOOL_ID

_HASH_CHUNK = 1 << 20

_DEVICE_CLASS_OF_SOP_CLASS = {
    "1.2.840.10008.5.1.4.1.1.77.1.7": DeviceClass.DERMATOSCOPE,
    "1.2.840.10008.5.1.4.1.1.77.1.8": DeviceClass.CONFOCAL_MICROSCOPE,
    "1.2.840.10008.5.1.4.1.1.77.1.9": DeviceClass.CONFOCAL_MICROSCOPE,
    "1.2.840.10008.5.1.4.1.1.7.3": DeviceClass.CONFOCAL_MICROSCOPE,
    "1.2.840.10008.5.1.4.1.1.104.3": DeviceClass.BODY_SCANNER,
    "1.2.840.10008.5.1.4.1.1.104.4": DeviceClass.BODY_SCANNER,
    "1.2.840.10008.5.1.4.1.1.104.5": DeviceClass.BODY_SCANNER,
}
_CONTENT_OF_SOP_CLASS = {
    "1.2.840.10008.5.1.4.1.1.104.3": ContentType.STL,
    "1.2.840.10008.5.1.4.1.1.104.4": ContentType.OBJ,
    "1.2.840.10008.5.1.4.1.1.104.5": ContentType.MTL,
}
_JPEG_TRANSFER_SYNTAXES = {"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51"}


def _capture_files(folder: Path) -> list[Path]:
    """The spooled files in ``folder`` (hidden and temporary names are not captures)."""
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return []
    return sorted(
        Path(e.path)
        for e in entries
        if not e.name.startswith(".") and e.is_file(follow_symlinks=False)
    )


@dataclass(frozen=True, slots=True)
class _Found:
    path: Path
    uids: InstanceUIDs
    sop_class_uid: str
    transfer_syntax_uid: str
    device: DeviceIdentity
    #: The spool id its temporary Patient ID names, when it is one of this gateway's.
    temporary: int | None
    #: The patient a device or another gateway named (kept in the row, so a later
    #: re-wrap names the same patient as the file); None for a temporary patient.
    patient: PatientContext | None = None
    #: The file carries a Sensitive Content Code Sequence (0008,001D): routes keep
    #: honouring a technician's flag after the ledger was lost.
    sensitive: bool = False


def _text(value: object) -> str:
    return "" if value is None else str(value).strip()


def _read_dicom(path: Path, gateway_id: str) -> _Found:
    """The UIDs, device and temporary patient's spool id of a spooled DICOM file;
    raises ValueError if it has no UIDs."""
    from pydicom import dcmread
    from pydicom.errors import InvalidDicomError

    try:
        ds = dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, OSError, EOFError) as err:
        raise ValueError(f"not a readable DICOM file ({type(err).__name__})") from err
    meta = getattr(ds, "file_meta", None)
    syntax = _text(getattr(meta, "TransferSyntaxUID", None))
    uids = InstanceUIDs(
        _text(ds.get("StudyInstanceUID")),
        _text(ds.get("SeriesInstanceUID")),
        _text(ds.get("SOPInstanceUID")),
    )
    sop_class = _text(ds.get("SOPClassUID"))
    if not (uids.study and uids.series and uids.sop_instance and sop_class and syntax):
        raise ValueError("no Study, Series or SOP Instance UID, SOP class or transfer syntax")
    # Objects written before DermGate moved to Contributing Equipment Sequence end
    # Software Versions with "DermGate <version>": that value is not the device's.
    versions = ds.get("SoftwareVersions")
    listed = [] if versions is None else [versions] if isinstance(versions, str) else versions
    device = DeviceIdentity(
        manufacturer=_text(ds.get("Manufacturer")) or "unknown",
        model=_text(ds.get("ManufacturerModelName")) or "unknown",
        serial_number=_text(ds.get("DeviceSerialNumber")) or "unknown",
        software_versions=tuple(
            str(v) for v in listed if str(v).strip() and not str(v).startswith("DermGate ")
        ),
        device_class=_DEVICE_CLASS_OF_SOP_CLASS.get(sop_class, DeviceClass.CAMERA),
    )
    temporary = temporary_spool_id(
        _text(ds.get("PatientID")), _text(ds.get("IssuerOfPatientID")), gateway_id
    )
    if temporary is not None and temporary > MAX_SPOOL_ID:
        temporary = None
    sensitive = bool(ds.get(0x0008001D) is not None and ds[0x0008001D].value)
    return _Found(
        path, uids, sop_class, syntax, device, temporary, _named_patient(ds, temporary), sensitive
    )


def _named_patient(ds: Any, temporary: int | None) -> PatientContext | None:
    """The patient the file names, unless it is one of this gateway's temporary ones."""
    if temporary is not None or not _text(ds.get("PatientID")):
        return None
    return PatientContext(
        patient_name=_text(ds.get("PatientName")),
        patient_id=_text(ds.get("PatientID")),
        issuer_of_patient_id=_text(ds.get("IssuerOfPatientID")),
        birth_date=_text(ds.get("PatientBirthDate")),
        sex=_text(ds.get("PatientSex")),
        accession_number=_text(ds.get("AccessionNumber")),
    )


def _spool_ids(found: Sequence[_Found], mark: int | None) -> list[int]:
    """The spool id of each of ``found``: the one its temporary Patient ID names
    (only the first file naming it keeps it), else a new one above every id seen
    and above ``mark``."""
    keeps: dict[int, int] = {}  # spool id -> index of the file that keeps it
    for index, item in enumerate(found):
        if item.temporary is not None:
            keeps.setdefault(item.temporary, index)
    fresh = max([mark or 1, *(n + 1 for n in keeps)])
    ids: list[int] = []
    for index, item in enumerate(found):
        if item.temporary is not None and keeps[item.temporary] == index:
            ids.append(item.temporary)
        else:
            ids.append(fresh)
            fresh += 1
    return ids


_MAGIC: tuple[tuple[bytes, ContentType], ...] = (
    (b"\xff\xd8\xff", ContentType.JPEG),
    (b"\x89PNG\r\n\x1a\n", ContentType.PNG),
    (b"II*\x00", ContentType.TIFF),
    (b"MM\x00*", ContentType.TIFF),
    (b"newmtl", ContentType.MTL),
    (b"solid", ContentType.STL),
)


def _sniff(path: Path) -> ContentType:
    """What a raw capture is, from its first bytes (for ``spool export``'s name)."""
    with path.open("rb") as fh:
        head = fh.read(512)
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    text = head.lstrip()
    if text[:2] in (b"v ", b"o ", b"g ", b"# ", b"mt") or b"\nv " in text:
        return ContentType.OBJ
    if b"\nnewmtl" in text:
        return ContentType.MTL
    return ContentType.PIXELS


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _content_type(found: _Found) -> ContentType:
    if found.sop_class_uid in _CONTENT_OF_SOP_CLASS:
        return _CONTENT_OF_SOP_CLASS[found.sop_class_uid]
    if found.transfer_syntax_uid in _JPEG_TRANSFER_SYNTAXES:
        return ContentType.JPEG
    return ContentType.PIXELS
