"""Capture metadata as the ledger stores it and people are shown it: one schema each.

The one place that turns :class:`~gateway.core.capture.DeviceIdentity`,
:class:`~gateway.core.capture.CaptureOffer` and
:class:`~gateway.core.capture.PatientContext` into JSON and back: the ledger's
``device_json``, ``offer_json`` and ``patient_json`` columns, and the ``device`` and
``settings`` of ``dermgate spool show`` and the page (:mod:`gateway.spool.details`).
The device and the patient go through pydantic :class:`~pydantic.TypeAdapter`\\ s of
their own dataclasses; the offer is stored flat (its settings beside its other
fields), as :class:`OfferRecord` says. Stored JSON has sorted keys, as it always had.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Final

from pydantic import BaseModel, ConfigDict, PlainSerializer, TypeAdapter

from gateway.core.capture import (
    CaptureOffer,
    ContactMethod,
    ContentType,
    DermoscopySettings,
    DeviceIdentity,
    ImmersionMedium,
    InstanceUIDs,
    Laterality,
    PatientContext,
    Polarization,
)
from gateway.core.context import CaptureContext

__all__ = [
    "CONTEXT_RECORD",
    "DEVICE_RECORD",
    "PATIENT_RECORD",
    "OfferRecord",
    "context_from_json",
    "context_to_json",
    "device_from_json",
    "device_shown",
    "device_to_json",
    "offer_from_json",
    "offer_to_json",
    "patient_from_json",
    "patient_to_json",
    "settings_shown",
]

DEVICE_RECORD: Final = TypeAdapter(DeviceIdentity)
"""A device identity as stored in ``device_json``."""

PATIENT_RECORD: Final = TypeAdapter(PatientContext)
"""Device-supplied patient identity as stored in ``patient_json`` (never listed)."""

CONTEXT_RECORD: Final = TypeAdapter(CaptureContext)
"""The context a capture was bound to at intake, as stored in ``context_json``
(patient data: read by the wrapping stage and the authenticated page only)."""

IsoTime = Annotated[datetime, PlainSerializer(lambda t: t.isoformat(), return_type=str)]
"""A time as ``datetime.isoformat`` writes it (``+00:00``, not pydantic's ``Z``)."""


class OfferRecord(BaseModel):
    """A capture offer as stored in ``offer_json``: settings flat beside the rest.

    UIDs and patient identity are not part of it (they have columns of their own).
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    device_capture_id: str
    acquired_at: IsoTime | None = None
    polarization: Polarization | None = None
    contact: ContactMethod | None = None
    immersion: ImmersionMedium | None = None
    magnification: float | None = None
    color_temperature_k: int | None = None
    anatomic_site: str | None = None
    laterality: Laterality | None = None
    lesion_id: str | None = None
    content_type: ContentType = ContentType.JPEG
    extra: dict[str, Any] = {}

    @classmethod
    def of(cls, offer: CaptureOffer) -> OfferRecord:
        """The record of ``offer``."""
        s = offer.settings
        return cls(
            device_capture_id=offer.device_capture_id,
            acquired_at=offer.acquired_at,
            polarization=s.polarization,
            contact=s.contact,
            immersion=s.immersion,
            magnification=s.magnification,
            color_temperature_k=s.color_temperature_k,
            anatomic_site=offer.anatomic_site,
            laterality=offer.laterality,
            lesion_id=offer.lesion_id,
            content_type=offer.content_type,
            extra=offer.extra,
        )

    def offer(
        self, uids: InstanceUIDs | None = None, patient: PatientContext | None = None
    ) -> CaptureOffer:
        """The capture offer again (``uids`` and ``patient`` from their columns)."""
        return CaptureOffer(
            device_capture_id=self.device_capture_id,
            acquired_at=self.acquired_at,
            settings=DermoscopySettings(
                polarization=self.polarization,
                contact=self.contact,
                immersion=self.immersion,
                magnification=self.magnification,
                color_temperature_k=self.color_temperature_k,
            ),
            anatomic_site=self.anatomic_site,
            laterality=self.laterality,
            lesion_id=self.lesion_id,
            content_type=self.content_type,
            extra=dict(self.extra),
            uids=uids,
            patient=patient,
        )


def _stored(data: Any) -> str:
    return json.dumps(data, sort_keys=True)


def device_to_json(device: DeviceIdentity) -> str:
    """Serialise a device identity for the ledger."""
    return _stored(DEVICE_RECORD.dump_python(device, mode="json"))


def device_from_json(text: str) -> DeviceIdentity:
    """Inverse of :func:`device_to_json`."""
    return DEVICE_RECORD.validate_python(json.loads(text))


def offer_to_json(offer: CaptureOffer) -> str:
    """Serialise a capture offer for the ledger.

    ``extra`` goes to :mod:`json` as the driver gave it (pydantic would write an
    infinite float as null; a builder must see what the device said, and refuse it).
    """
    data = OfferRecord.of(offer).model_dump(mode="json", exclude={"extra"})
    data["extra"] = offer.extra
    return _stored(data)


def offer_from_json(
    text: str, uids: InstanceUIDs | None = None, patient: PatientContext | None = None
) -> CaptureOffer:
    """Inverse of :func:`offer_to_json` (UIDs and patient come from their columns)."""
    return OfferRecord.model_validate(json.loads(text)).offer(uids, patient)


def patient_to_json(patient: PatientContext | None) -> str | None:
    """Serialise device-supplied patient identity (its own column; never listed)."""
    if patient is None:
        return None
    return _stored(PATIENT_RECORD.dump_python(patient, mode="json"))


def patient_from_json(text: str | None) -> PatientContext | None:
    """Inverse of :func:`patient_to_json`."""
    if not text:
        return None
    return PATIENT_RECORD.validate_python(json.loads(text))


def context_to_json(context: CaptureContext | None) -> str | None:
    """Serialise a capture's bound context (its own column; never listed)."""
    if context is None:
        return None
    return _stored(CONTEXT_RECORD.dump_python(context, mode="json"))


def context_from_json(text: str | None) -> CaptureContext | None:
    """Inverse of :func:`context_to_json`."""
    if not text:
        return None
    return CONTEXT_RECORD.validate_python(json.loads(text))


_SETTINGS_SHOWN = (
    "polarization",
    "contact",
    "immersion",
    "magnification",
    "color_temperature_k",
    "anatomic_site",
    "laterality",
    "lesion_id",
)


def device_shown(device: DeviceIdentity) -> dict[str, Any]:
    """The device as ``spool show`` and the page show it (its capabilities are not)."""
    shown: dict[str, Any] = DEVICE_RECORD.dump_python(device, mode="json")
    shown.pop("capabilities", None)
    return shown


def settings_shown(offer: CaptureOffer) -> dict[str, Any]:
    """The capture settings as ``spool show`` and the page show them."""
    return OfferRecord.of(offer).model_dump(mode="json", include=set(_SETTINGS_SHOWN))
