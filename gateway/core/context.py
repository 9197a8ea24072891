"""Clinical context: who, which order and which lesion a capture belongs to.

The types the context stage (:mod:`gateway.context`), intake, the ledger and the DICOM
builders share. A **session** binds one configured device (by its ``name``) to a
patient context; every capture that device starts sending while the session is open
gets that session's :class:`CaptureContext`, frozen into the ledger row at intake (a
later change of the session never rewrites what a capture was bound to).

* A context from a **worklist item** carries the item's patient (with Issuer of
  Patient ID), its Study Instance UID (never a fresh one) and its order
  (:class:`OrderContext`: Accession Number, Referring Physician, Request Attributes…).
* A context typed in by hand or scanned without a worklist match (unscheduled)
  carries the patient as given, a Study Instance UID minted once per session and no
  order (empty Accession Number; accession numbers are never invented).
* An **unidentified** session carries a temporary patient
  (:mod:`gateway.core.patient`), never a made-up name.

Intake asks a :class:`ContextBinder` (the context stage) for the binding of each
capture: :class:`Bound` (the context and the UIDs it implies), :class:`Held` (no
patient yet, or the device's patient contradicts the session's: wait for a
technician), or ``None`` (no context at all: the behaviour before sessions).

Nothing here is for display outside an authenticated page or API: these values are
patient data and never reach MQTT, logs, metrics, error messages or CLI listings.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

from gateway.core.capture import (
    CaptureOffer,
    DeviceIdentity,
    InstanceUIDs,
    Laterality,
    PatientContext,
)

__all__ = [
    "Binding",
    "Bound",
    "CaptureContext",
    "Coded",
    "ContextBinder",
    "Held",
    "LesionContext",
    "OrderContext",
    "RequestedProcedure",
    "SessionSource",
    "WorklistEntry",
    "WorklistStatus",
]


class SessionSource(enum.StrEnum):
    """Where a session's patient came from."""

    WORKLIST = "worklist"
    BARCODE = "barcode"  # a scan that matched no worklist item: taken as the Patient ID
    MANUAL = "manual"  # demographics typed in (IHE unscheduled case)
    UNIDENTIFIED = "unidentified"  # a temporary patient (IHE unidentified case)


@dataclass(frozen=True, slots=True)
class Coded:
    """One coded concept (a DICOM Code Sequence item): value, scheme, meaning."""

    value: str
    scheme: str
    meaning: str


@dataclass(frozen=True, slots=True)
class RequestedProcedure:
    """One Request Attributes Sequence (0040,0275) item: the order step fulfilled."""

    requested_procedure_id: str = ""
    accession_number: str = ""
    study_uid: str = ""
    requested_procedure_description: str = ""
    requested_procedure_codes: tuple[Coded, ...] = ()
    sps_id: str = ""
    sps_description: str = ""
    protocol_codes: tuple[Coded, ...] = ()


@dataclass(frozen=True, slots=True)
class OrderContext:
    """The order of a worklist item, as copied into every object of its study."""

    accession_number: str = ""
    referring_physician: str = ""
    study_id: str = ""  # the Requested Procedure ID (common practice)
    referenced_study_uids: tuple[str, ...] = ()
    procedure_codes: tuple[Coded, ...] = ()  # Procedure Code Sequence := requested codes
    request: RequestedProcedure | None = None


@dataclass(frozen=True, slots=True)
class LesionContext:
    """One lesion of the registry: what the objects of its captures carry.

    ``tracking_id`` is a label unique for the patient (``L03``), ``tracking_uid``
    minted once when the lesion was created and reused for ever; ``site`` a CID 4029
    code value (SCT unless ``site_scheme`` says otherwise); ``laterality`` R/L/B/U.
    """

    tracking_id: str
    tracking_uid: str
    site: str | None = None
    site_scheme: str = "SCT"
    laterality: Laterality | None = None
    description: str = ""


@dataclass(frozen=True, slots=True)
class CaptureContext:
    """Everything a capture's objects say about patient, order, study and lesion.

    ``patient`` always has a Patient ID (a temporary one for an unidentified
    session). ``study_uid`` is the worklist item's, or minted once per session.
    ``series_description`` names the device class, anatomic site and lesion;
    ``operator_name`` the person who opened the session ("" when off or unknown).
    ``sensitive`` lists the Sensitive Content Code Sequence (0008,001D) items to
    write (site policy and technician flags, resolved at binding time).
    ``study_started`` (ISO 8601, with its offset) dates the study: when its first
    session opened, so every object of one study carries the same Study Date/Time
    ("": each object's own acquisition time). ``series_number`` numbers the
    session's series and ``instance_number`` the object in it (None: the
    builder's).
    """

    session_id: int
    source: SessionSource
    patient: PatientContext
    study_uid: str
    study_description: str = ""
    order: OrderContext | None = None
    series_description: str = ""
    operator_name: str = ""
    lesion: LesionContext | None = None
    sensitive: tuple[Coded, ...] = ()
    study_started: str = ""
    series_number: int | None = None
    instance_number: int | None = None


@dataclass(frozen=True, slots=True)
class Bound:
    """The capture belongs to a session: write it with ``context`` and ``uids``
    (the session's study and series; a fresh or the driver's SOP Instance UID)."""

    context: CaptureContext
    uids: InstanceUIDs


@dataclass(frozen=True, slots=True)
class Held:
    """The capture waits for a technician (state HELD); ``reason`` is plain text
    without patient data ("no patient session on dermatoscope", "the device's
    patient differs from the session's")."""

    reason: str


Binding = Bound | Held | None


class ContextBinder(Protocol):
    """What intake asks of the context stage for each new capture."""

    async def bind(
        self,
        device_name: str,
        identity: DeviceIdentity,
        offer: CaptureOffer,
        uids: InstanceUIDs,
    ) -> Binding:
        """The binding of a capture ``device_name`` starts sending now.

        ``uids`` are the UIDs intake would use without context (driver-chosen or
        fresh); a :class:`Bound` result keeps their SOP Instance UID, and a
        driver's series (a 3D export keeps its mesh/material/texture series).
        """
        ...


@dataclass(frozen=True, slots=True)
class WorklistEntry:
    """One cached worklist item (one Scheduled Procedure Step), decoded.

    ``key`` identifies the item across refreshes (Study Instance UID + SPS ID, or
    a digest of the item when it lacks them). Strings are as the SCP sent them,
    decoded with its Specific Character Set; a missing attribute is "".
    """

    key: str
    patient: PatientContext
    study_uid: str
    accession_number: str = ""
    referring_physician: str = ""
    requested_procedure_id: str = ""
    requested_procedure_description: str = ""
    requested_procedure_codes: tuple[Coded, ...] = ()
    sps_id: str = ""
    sps_description: str = ""
    sps_start_date: str = ""
    sps_start_time: str = ""
    modality: str = ""
    station_ae_title: str = ""
    performing_physician: str = ""
    protocol_codes: tuple[Coded, ...] = ()
    referenced_study_uids: tuple[str, ...] = ()
    fetched_at: float = 0.0


@dataclass(frozen=True, slots=True)
class WorklistStatus:
    """The cache's state, without patient data (page, MQTT, metrics).

    ``ok_at``: last successful refresh (epoch seconds), ``tried_at``: last attempt;
    ``error``: why the last attempt failed (no patient data), else None; ``stale``:
    no success within ``[worklist] stale_after``; ``truncated``: the last answer
    was cut at ``max_items``.
    """

    items: int
    ok_at: float | None
    tried_at: float | None
    error: str | None
    stale: bool
    truncated: bool = False

    def age(self, now: float) -> float | None:
        """Seconds since the last successful refresh (None: never)."""
        return None if self.ok_at is None else max(0.0, now - self.ok_at)
