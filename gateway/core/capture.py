"""Domain types shared by drivers, the spool and the DICOM builders.

A device driver reports a :class:`DeviceIdentity` once per connection and a
:class:`CaptureOffer` per capture; the bytes of the capture are streamed into the
spool. Nothing here carries patient identity: patient context is a separate,
optional input of the builders (:class:`PatientContext`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

DEVICE_STRING_MAX: Final = 64
"""The longest device-supplied identity string kept (DICOM LO holds 64 characters)."""


def clean_device_string(value: str, max_chars: int = DEVICE_STRING_MAX) -> str:
    """A device-supplied string made safe for every place it goes.

    A device names itself as it likes: a newline in a serial number would forge a log
    line or split a ``dermgate spool list`` row, an ESC would drive the terminal, and
    in DICOM LO/SH a backslash separates values ("ACME\\Evil" would be two
    manufacturers). Control and other non-printable characters (newline, CR, ESC,
    NUL, Unicode line separators…) are dropped, a backslash becomes "/", and the
    text is clipped to ``max_chars`` without leading or trailing spaces. Idempotent.
    """
    text = "".join(ch for ch in value if ch.isprintable()).replace("\\", "/")
    return text.strip()[:max_chars].strip()


class DeviceClass(enum.StrEnum):
    """The kinds of device DermGate serves."""

    DERMATOSCOPE = "dermatoscope"
    CONFOCAL_MICROSCOPE = "confocal-microscope"
    BODY_SCANNER = "body-scanner"
    CAMERA = "camera"


class ContentType(enum.StrEnum):
    """What the bytes of a capture are (a MIME type); picks the DICOM builder.

    ``PIXELS`` is raw, uncompressed pixel data (little endian, frame after frame) as a
    confocal microscope streams it; its geometry is in :attr:`CaptureOffer.extra`.
    """

    JPEG = "image/jpeg"
    TIFF = "image/tiff"
    PNG = "image/png"
    PIXELS = "application/x-dermgate-pixels"
    OBJ = "model/obj"
    MTL = "model/mtl"
    STL = "model/stl"


class Polarization(enum.StrEnum):
    """Light Source Polarization (0016,1001) defined terms."""

    POLARIZED = "POLARIZED"
    NON_POLARIZED = "NON_POLARIZED"


class ContactMethod(enum.StrEnum):
    """Contact Method (0016,1003) defined terms."""

    CONTACT = "CONTACT"
    NON_CONTACT = "NON_CONTACT"


class ImmersionMedium(enum.StrEnum):
    """Immersion Media (0016,1004) defined terms; only meaningful for CONTACT."""

    ULTRASOUND_GEL = "ULTRASOUND_GEL"
    ALCOHOL = "ALCOHOL"
    WATER = "WATER"
    MINERAL_OIL = "MINERAL_OIL"
    PLASTIC_CAP = "PLASTIC_CAP"


class Laterality(enum.StrEnum):
    """Image Laterality (0020,0062) enumerated values."""

    RIGHT = "R"
    LEFT = "L"
    UNPAIRED = "U"
    BOTH = "B"


@dataclass(frozen=True, slots=True)
class DeviceIdentity:
    """What a device says about itself (serial dermatoscope: its HELLO frame).

    These fill Enhanced General Equipment, where all four are type 1, so a driver
    must supply every one; an empty string is a driver bug, not a DICOM default.

    Every string is device-supplied, so it is cleaned here, where it enters the
    gateway (:func:`clean_device_string`): logs, the ledger and ``spool list``,
    status, MQTT and DICOM all see the same safe text.
    """

    manufacturer: str
    model: str
    serial_number: str
    software_versions: tuple[str, ...]
    device_class: DeviceClass = DeviceClass.DERMATOSCOPE
    capabilities: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("manufacturer", "model", "serial_number"):
            object.__setattr__(self, name, clean_device_string(getattr(self, name)))
        for name in ("software_versions", "capabilities"):
            values = tuple(clean_device_string(v) for v in getattr(self, name))
            object.__setattr__(self, name, values)


@dataclass(frozen=True, slots=True)
class DermoscopySettings:
    """Optical settings of one dermoscopic capture (Dermoscopic Image Module).

    ``None`` means the device did not say; the builder then writes the type 2
    attribute empty rather than guessing.
    """

    polarization: Polarization | None = None
    contact: ContactMethod | None = None
    immersion: ImmersionMedium | None = None
    magnification: float | None = None
    color_temperature_k: int | None = None


@dataclass(frozen=True, slots=True)
class CaptureOffer:
    """Metadata a device announces before streaming a capture's bytes.

    ``device_capture_id`` is unique per device serial number; the pair is how a
    re-offered capture is recognised. ``anatomic_site`` is a SNOMED CT code value
    from CID 4029 (Dermatology Anatomic Site) chosen on the device, ``lesion_id``
    the device's lesion label (becomes Tracking ID). ``length`` is the announced size
    in bytes, when the device says it (used to refuse early when the disk is full).

    ``content_type`` says what the bytes are; ``extra`` carries class-specific,
    JSON-compatible metadata that the matching DICOM builder reads through its own
    typed model (confocal stack geometry, a 3D export's file links, EXIF fields).
    ``uids`` lets a driver choose the instance's UIDs (derived deterministically, so
    the files of one 3D export can name each other before all are received);
    without it intake mints fresh ones. ``patient`` is the patient identity a
    device supplied (a scanner's export metadata): it goes into the DICOM object
    and nowhere else (the ledger keeps it in a column only the wrapper reads).
    """

    device_capture_id: str
    acquired_at: datetime | None = None
    length: int | None = None
    settings: DermoscopySettings = field(default_factory=DermoscopySettings)
    anatomic_site: str | None = None
    laterality: Laterality | None = None
    lesion_id: str | None = None
    content_type: ContentType = ContentType.JPEG
    extra: dict[str, Any] = field(default_factory=dict)
    uids: InstanceUIDs | None = None
    patient: PatientContext | None = None


@dataclass(frozen=True, slots=True)
class PatientContext:
    """Patient and order context, when known (worklist, technician binding).

    Never invented: when the patient is unknown the builders get ``None`` and write
    a temporary patient (:mod:`gateway.core.patient`: a unique Patient ID, no name).
    """

    patient_name: str = ""
    patient_id: str = ""
    issuer_of_patient_id: str = ""
    birth_date: str = ""
    sex: str = ""
    accession_number: str = ""


@dataclass(frozen=True, slots=True)
class InstanceUIDs:
    """Study, Series and SOP Instance UIDs, assigned once at intake and stored."""

    study: str
    series: str
    sop_instance: str


@dataclass(frozen=True, slots=True)
class GatewayIdentity:
    """The gateway itself, as it appears in equipment and software fields."""

    gateway_id: str
    software_version: str
    station_name: str = ""


#: The largest capture kept unless ``[spool] max_capture_mb`` says otherwise.
DEFAULT_MAX_CAPTURE_BYTES = 4096 * 1024 * 1024


class RefusalReason(enum.StrEnum):
    """Why the gateway refused to keep a capture (the device keeps it and retries)."""

    DISK_FULL = "DISK_FULL"
    STORAGE_ERROR = "STORAGE_ERROR"
    CONFLICT = "CONFLICT"
    LENGTH = "LENGTH"
    CHECKSUM = "CHECKSUM"
    #: Larger than ``[spool] max_capture_mb`` (announced, or streamed beyond it).
    TOO_LARGE = "TOO_LARGE"


class CaptureRefused(Exception):
    """The capture was not saved; tell the device ``reason`` (it keeps the capture)."""

    def __init__(self, reason: RefusalReason, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}")
