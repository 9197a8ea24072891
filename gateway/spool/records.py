"""Capture metadata as the ledger stores it: the device, the offer and the patient as JSON.

The one place that turns :class:`~gateway.core.capture.DeviceIdentity`,
:class:`~gateway.core.capture.CaptureOffer` and
:class:`~gateway.core.capture.PatientContext` into the ledger's ``device_json``,
``offer_json`` and ``patient_json`` columns and back.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
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

__all__ = [
    "device_from_json",
    "device_to_json",
    "offer_from_json",
    "offer_to_json",
    "patient_from_json",
    "patient_to_json",
]

T = TypeVar("T")


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
