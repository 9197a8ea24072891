"""Modules shared by every DermGate IOD: patient, study, series, equipment, SOP common.

Each ``add_*`` function fills one module (or a pair that always goes together) on a
:class:`~pydicom.dataset.Dataset` the builder owns. They are pure: no I/O, no clock
reads (times are passed in), and they only write to the dataset they are given.

Times: ``now`` must be timezone-aware; every date and time written into one object
is expressed in ``now``'s zone, which is what Timezone Offset From UTC (0008,0201)
then declares. A device timestamp without a zone is taken to be in that same local
zone (device clocks are set to local time); one with a zone is converted to it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import cache
from typing import Final

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian

from gateway.core.capture import (
    DeviceIdentity,
    GatewayIdentity,
    InstanceUIDs,
    Laterality,
    PatientContext,
    clean_device_string,
)
from gateway.core.uids import DERMGATE_IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from gateway.dicom.codes import CID4029, Code
from gateway.dicom.errors import IncompleteDeviceIdentity

__all__ = [
    "DERMGATE_MANUFACTURER",
    "DERMGATE_MODEL",
    "DERMGATE_PURPOSE",
    "SKIN",
    "SPECIFIC_CHARACTER_SET",
    "add_anatomic_region",
    "add_dermgate_equipment",
    "add_enhanced_general_equipment",
    "add_general_series",
    "add_general_study",
    "add_patient",
    "add_sop_common",
    "code_item",
    "da",
    "dermatology_site",
    "device_string",
    "dt",
    "file_meta",
    "frame_anatomy",
    "in_zone_of",
    "new_instance",
    "station_name",
    "tm",
    "tz_offset",
]

#: UTF-8; every string DermGate writes may carry any character.
SPECIFIC_CHARACTER_SET: Final = "ISO_IR 192"
_LO_MAX: Final = 64
_SH_MAX: Final = 16

#: CID 244 (Laterality) concepts used as Anatomic Region Modifiers. Unpaired (U)
#: gets no modifier: the site code alone says where the lesion is.
_LATERALITY_MODIFIER: Final[dict[Laterality, Code]] = {
    Laterality.RIGHT: Code("24028007", "SCT", "Right"),
    Laterality.LEFT: Code("7771000", "SCT", "Left"),
    Laterality.BOTH: Code("51440002", "SCT", "Bilateral"),
}


# --- dates and times ---------------------------------------------------------------


def in_zone_of(moment: datetime, now: datetime) -> datetime:
    """``moment`` expressed in ``now``'s time zone (naive moments are taken as local)."""
    _require_aware(now)
    if moment.tzinfo is None or moment.utcoffset() is None:
        return moment.replace(tzinfo=now.tzinfo)
    return moment.astimezone(now.tzinfo)


def da(moment: datetime) -> str:
    """DICOM DA value (YYYYMMDD)."""
    return moment.strftime("%Y%m%d")


def tm(moment: datetime) -> str:
    """DICOM TM value (HHMMSS, with .ffffff when there are microseconds)."""
    return moment.strftime("%H%M%S.%f" if moment.microsecond else "%H%M%S")


def tz_offset(moment: datetime) -> str:
    """The "+HHMM"/"-HHMM" offset of an aware ``moment`` (Timezone Offset From UTC)."""
    offset = moment.utcoffset()
    if offset is None:
        raise ValueError("a timezone-aware datetime is required")
    sign = "-" if offset < timedelta(0) else "+"
    minutes = abs(offset) // timedelta(minutes=1)
    return f"{sign}{minutes // 60:02d}{minutes % 60:02d}"


def dt(moment: datetime) -> str:
    """DICOM DT value, with the UTC offset appended when ``moment`` is aware."""
    value = da(moment) + tm(moment)
    return value + tz_offset(moment) if moment.utcoffset() is not None else value


def _require_aware(now: datetime) -> None:
    if now.utcoffset() is None:
        raise ValueError("now must be timezone-aware (pass datetime.now().astimezone())")


# --- the file ------------------------------------------------------------------------


def file_meta(
    sop_class_uid: str, sop_instance_uid: str, transfer_syntax_uid: str = ExplicitVRLittleEndian
) -> FileMetaDataset:
    """File Meta Information (PS3.10) of a file DermGate writes."""
    meta = FileMetaDataset()
    meta.FileMetaInformationVersion = b"\x00\x01"
    meta.MediaStorageSOPClassUID = UID(sop_class_uid)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance_uid)
    meta.TransferSyntaxUID = UID(transfer_syntax_uid)
    meta.ImplementationClassUID = UID(DERMGATE_IMPLEMENTATION_CLASS_UID)
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    return meta


def new_instance(
    *,
    sop_class_uid: str,
    uids: InstanceUIDs,
    modality: str,
    patient: PatientContext | None,
    acquired: datetime,
    now: datetime,
    series_number: int | None = 1,
    transfer_syntax_uid: str = ExplicitVRLittleEndian,
) -> Dataset:
    """A new object's File Meta, SOP Common, Patient, General Study and General Series.

    ``acquired`` (already in ``now``'s zone) dates the study and series. Series
    Laterality is not written here: whether it is required depends on the IOD.
    """
    ds = Dataset()
    ds.file_meta = file_meta(sop_class_uid, uids.sop_instance, transfer_syntax_uid)
    add_sop_common(ds, sop_class_uid=sop_class_uid, sop_instance_uid=uids.sop_instance, now=now)
    add_patient(ds, patient)
    add_general_study(
        ds,
        study_uid=uids.study,
        started=acquired,
        accession_number=patient.accession_number if patient is not None else "",
    )
    add_general_series(
        ds, series_uid=uids.series, modality=modality, started=acquired, series_number=series_number
    )
    return ds


# --- patient, study, series --------------------------------------------------------


def add_patient(ds: Dataset, patient: PatientContext | None) -> None:
    """Patient Module. Unknown patient: the type 2 attributes present and empty.

    Writes what it is given; the IOD builders first replace a missing Patient ID by
    a temporary one (:func:`gateway.core.patient.object_patient`). Issuer of
    Patient ID is written only with a Patient ID it qualifies.
    """
    context = patient if patient is not None else PatientContext()
    ds.PatientName = context.patient_name
    ds.PatientID = context.patient_id
    if context.patient_id and context.issuer_of_patient_id:
        ds.IssuerOfPatientID = context.issuer_of_patient_id
    ds.PatientBirthDate = context.birth_date
    ds.PatientSex = context.sex


def add_general_study(
    ds: Dataset,
    *,
    study_uid: str,
    started: datetime,
    accession_number: str = "",
    study_id: str = "",
) -> None:
    """General Study Module. ``started`` is the study's date/time (already local).

    Referring Physician's Name, Study ID and Accession Number are type 2 and are
    written empty when not known.
    """
    ds.StudyInstanceUID = study_uid
    ds.StudyDate = da(started)
    ds.StudyTime = tm(started)
    ds.ReferringPhysicianName = ""
    ds.StudyID = study_id
    ds.AccessionNumber = accession_number


def add_general_series(
    ds: Dataset,
    *,
    series_uid: str,
    modality: str,
    started: datetime,
    series_number: int | None = None,
) -> None:
    """General Series Module (Series Laterality is the IOD builder's decision)."""
    ds.Modality = modality
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = series_number
    ds.SeriesDate = da(started)
    ds.SeriesTime = tm(started)


# --- equipment ---------------------------------------------------------------------


def add_enhanced_general_equipment(
    ds: Dataset,
    identity: DeviceIdentity,
    gateway: GatewayIdentity,
    *,
    now: datetime,
    institution_name: str | None = None,
    institution_address: str | None = None,
    department_name: str | None = None,
) -> None:
    """General Equipment and Enhanced General Equipment Modules, and DermGate's
    Contributing Equipment item (:func:`add_dermgate_equipment`, at ``now``).

    Manufacturer, Manufacturer's Model Name, Device Serial Number and Software
    Versions are type 1 in Enhanced General Equipment, so a missing one raises
    :class:`IncompleteDeviceIdentity`. They describe the device alone (Software
    Versions: its firmware); DermGate, which made the object, is the Contributing
    Equipment item. Station Name is the gateway's station name, or its id when that
    fits in 16 characters.
    """
    manufacturer = device_string(identity.manufacturer)
    model = device_string(identity.model)
    serial = device_string(identity.serial_number)
    versions = [v for v in map(device_string, identity.software_versions) if v]
    missing = [
        label
        for label, value in (
            ("manufacturer", manufacturer),
            ("model name", model),
            ("serial number", serial),
            ("firmware version", "".join(versions)),
        )
        if not value
    ]
    if missing:
        raise IncompleteDeviceIdentity(
            f"the device did not report its {', '.join(missing)}, which DICOM requires; "
            "check the device driver; the capture is kept and quarantined"
        )
    ds.Manufacturer = manufacturer
    ds.ManufacturerModelName = model
    ds.DeviceSerialNumber = serial
    ds.SoftwareVersions = versions
    station = station_name(gateway)
    if station:
        ds.StationName = station
    if institution_name:
        ds.InstitutionName = device_string(institution_name)
    if institution_address:
        ds.InstitutionAddress = institution_address
    if department_name:
        ds.InstitutionalDepartmentName = device_string(department_name)
    add_dermgate_equipment(ds, gateway, now=now)


def station_name(gateway: GatewayIdentity) -> str:
    """The gateway's Station Name (SH): its station name, else its id; "" when the
    chosen one does not fit in 16 characters (Station Name is then left out)."""
    station = gateway.station_name or gateway.gateway_id
    return station if len(station) <= _SH_MAX else ""


#: Contributing Equipment Manufacturer (type 1) of DermGate. DermGate is an
#: open-source project, not a company: the project is who makes it.
DERMGATE_MANUFACTURER: Final = "DermGate project"
DERMGATE_MODEL: Final = "DermGate"
#: CID 7005 (Contributing Equipment Purposes of Reference) concept for DermGate;
#: why this one: see :func:`add_dermgate_equipment`.
DERMGATE_PURPOSE: Final = Code("109102", "DCM", "Processing Equipment")
_CONTRIBUTION: Final = "Wrapped the device's capture into this DICOM object"


def add_dermgate_equipment(ds: Dataset, gateway: GatewayIdentity, *, now: datetime) -> None:
    """DermGate as the item of Contributing Equipment Sequence (0018,A001), SOP Common
    Module (PS3.3 C.12.1, C.12.1.1.5), in place of any item already there.

    The equipment modules describe the device that acquired the image; DermGate
    made the DICOM object from the device's file, and this item says so: the
    project as Manufacturer, "DermGate" as model, its version as Software Versions,
    the gateway id as Device Serial Number (it names this box), the Station Name
    when it fits, the wrap time ``now`` as Contribution DateTime and what it did as
    Contribution Description.

    Purpose of Reference is (109102, DCM, "Processing Equipment"). PS3.16 has no
    CID 7005 concept for "converted a non-DICOM file into a composite instance",
    so the one whose definition comes nearest is used: Processing Equipment is
    "equipment that has processed composite instances to create new composite
    instances" (PS3.16 Annex D, DCM 109102) — DermGate creates the new instance.
    The others fit worse: Acquisition Equipment (109101) is the device itself,
    already the General Equipment; Modifying (109103) and De-identifying (109104)
    Equipment change existing instances without creating new ones; Frame
    Extracting (109105) and Enhanced Multi-frame Conversion (109106) name two
    particular DICOM-to-DICOM conversions; Portable Media Importer (MEDIM) imports
    objects from interchange media; Film, Document and Video Tape Digitizers
    (FILMD, DOCD, VIDD) digitize analogue originals; Synthesizing Equipment
    (109100) makes synthetic data. A private code would be understood by no
    receiver, so a standard one is kept even though the CID is extensible.
    """
    _require_aware(now)
    item = Dataset()
    item.Manufacturer = DERMGATE_MANUFACTURER
    item.ManufacturerModelName = DERMGATE_MODEL
    if serial := device_string(gateway.gateway_id):
        item.DeviceSerialNumber = serial
    item.SoftwareVersions = device_string(f"{DERMGATE_MODEL} {gateway.software_version}")
    if station := station_name(gateway):
        item.StationName = station
    item.ContributionDateTime = dt(now)
    item.ContributionDescription = _CONTRIBUTION
    item.PurposeOfReferenceCodeSequence = Sequence([code_item(DERMGATE_PURPOSE)])
    ds.ContributingEquipmentSequence = Sequence([item])


def device_string(value: str, max_chars: int = _LO_MAX) -> str:
    """A device-reported string made safe as *one* value of a string VR (LO, SH).

    A device names itself as it likes, but in LO and SH a backslash separates
    values: "ACME\\Evil" as a Manufacturer would be two manufacturers (VM 2, an
    invalid object). The backslash becomes "/", control and other non-printable
    characters are dropped, and the text is clipped to the VR's length (LO: 64
    characters, SH: 16) without leading or trailing spaces. Every device string
    written into a value-multiplicity-1 string attribute goes through here. A
    :class:`DeviceIdentity` is already clean (the same rule, applied where it
    enters); strings from other sources (EXIF, settings) are cleaned here.
    """
    return clean_device_string(value, max_chars)


# --- SOP common --------------------------------------------------------------------


def add_sop_common(
    ds: Dataset, *, sop_class_uid: str, sop_instance_uid: str, now: datetime
) -> None:
    """SOP Common Module: UTF-8 character set, instance creation time and UTC offset."""
    _require_aware(now)
    ds.SpecificCharacterSet = SPECIFIC_CHARACTER_SET
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = sop_instance_uid
    ds.InstanceCreationDate = da(now)
    ds.InstanceCreationTime = tm(now)
    ds.TimezoneOffsetFromUTC = tz_offset(now)


# --- anatomy -----------------------------------------------------------------------


@cache
def _dermatology_sites() -> dict[tuple[str, str], Code]:
    """CID 4029 (Dermatology Anatomic Site) concepts by (scheme, code value)."""
    return {(code.scheme_designator, code.value): code for code in CID4029}


def dermatology_site(code_value: str, scheme: str = "SCT") -> Code | None:
    """The CID 4029 concept ``code_value`` of ``scheme`` (SNOMED CT unless said; the
    CID also holds DCM and FMA concepts), or ``None`` if it is not in the CID."""
    return _dermatology_sites().get((scheme.strip(), code_value.strip()))


def add_anatomic_region(
    ds: Dataset, code_value: str | None, laterality: Laterality | None, scheme: str = "SCT"
) -> bool:
    """Anatomic Region Sequence from a CID 4029 site, with a CID 244 laterality modifier.

    An unknown code is left out rather than invented (returns ``False``). The
    laterality modifier is added for R, L and B (none of CID 4029's sites names a
    side itself); U (unpaired) needs none.
    """
    if code_value is None:
        return False
    site = dermatology_site(code_value, scheme)
    if site is None:
        return False
    item = code_item(site)
    modifier = _LATERALITY_MODIFIER.get(laterality) if laterality is not None else None
    if modifier is not None:
        item.AnatomicRegionModifierSequence = Sequence([code_item(modifier)])
    ds.AnatomicRegionSequence = Sequence([item])
    return True


#: CID 4029's own meaning for SNOMED CT 39937001 (PS3.16 writes it "Skin"): the
#: region of a confocal frame whose site nobody named.
SKIN: Final = Code("39937001", "SCT", "Skin")


def frame_anatomy(
    code_value: str | None, laterality: Laterality | None, scheme: str = "SCT"
) -> Dataset:
    """A Frame Anatomy Sequence item (PS3.3 C.7.6.16.2.8): the CID 4029 site (or
    "Skin" when none is known) and Frame Laterality (type 1: "U" when unknown)."""
    site = dermatology_site(code_value, scheme) if code_value else None
    anatomy = Dataset()
    anatomy.AnatomicRegionSequence = Sequence([code_item(site or SKIN)])
    anatomy.FrameLaterality = laterality.value if laterality is not None else "U"
    return anatomy


def code_item(code: Code) -> Dataset:
    """A Code Sequence item (Code Sequence Macro, PS3.3 Table 8.8-1) of ``code``."""
    item = Dataset()
    item.CodeValue = code.value
    item.CodingSchemeDesignator = code.scheme_designator
    item.CodeMeaning = code.meaning
    return item
