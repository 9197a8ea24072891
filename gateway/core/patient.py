"""Who a DICOM object is about: the patient the device named, or a temporary one.

Until worklists and patient sessions exist, most captures arrive without a patient.
An empty Patient ID made PACS file all of them, different people, under one blank
patient. So an object whose device named no Patient ID gets a unique **temporary
patient**: Patient ID ``TMP-<gateway id>-<spool id>`` and Issuer of Patient ID
``<gateway id>-TEMP``, with Patient's Name left as the device gave it (empty when it
gave none: a name is never invented). The spool id is the capture's ledger row
(``dermgate spool show ID`` finds it; never handed out twice, even across a lost
ledger, see :mod:`gateway.spool.spool_ids`), so every retry and re-wrap of the
capture names the same patient; captures that share one study (the files of a 3D export
with driver-chosen UIDs) use the first one's id, so a study never spans two
patients. Patient ID and Issuer are LO (64 characters): a gateway id longer than
:data:`_GATEWAY_PART_MAX` is cut and completed with a hash of the whole id, the same
for every capture.

A **known** patient is one the device named by Patient ID. Only then is a lesion's
Tracking UID derived (:func:`gateway.core.uids.tracking_uid` from issuer, patient
id and lesion id); for a temporary patient Tracking ID/UID are left out (a UID that
may merge two people's lesions is worse than none) and the device's lesion label
goes into Image Comments (:func:`lesion_label_comment`), which claims no identity.

A device-supplied Patient ID without an issuer gets the device's configured
``issuer_of_patient_id`` (:func:`with_device_issuer`, applied at intake); an issuer
the device sent itself is kept.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import Final

from gateway.core.capture import PatientContext

__all__ = [
    "TEMPORARY_ID_PREFIX",
    "TEMPORARY_ISSUER_SUFFIX",
    "ObjectPatient",
    "lesion_label_comment",
    "object_patient",
    "temporary_patient",
    "temporary_spool_id",
    "with_device_issuer",
]

TEMPORARY_ID_PREFIX: Final = "TMP-"
TEMPORARY_ISSUER_SUFFIX: Final = "-TEMP"
#: Longest gateway id part: "TMP-" + 40 + "-" + 19 digits (any spool id) = 64.
_GATEWAY_PART_MAX: Final = 40
_HASH_CHARS: Final = 8


@dataclass(frozen=True, slots=True)
class ObjectPatient:
    """The patient written into one object, and whether the device named it."""

    context: PatientContext
    known: bool


def _gateway_part(gateway_id: str) -> str:
    """The gateway id, or a stable shortened form when it would not fit LO."""
    if len(gateway_id) <= _GATEWAY_PART_MAX:
        return gateway_id
    digest = hashlib.sha256(gateway_id.encode("utf-8")).hexdigest()[:_HASH_CHARS]
    return f"{gateway_id[: _GATEWAY_PART_MAX - _HASH_CHARS - 1]}-{digest}"


def temporary_patient(gateway_id: str, spool_id: int) -> PatientContext:
    """The temporary patient of spool id ``spool_id`` (Patient ID and Issuer only)."""
    part = _gateway_part(gateway_id)
    return PatientContext(
        patient_id=f"{TEMPORARY_ID_PREFIX}{part}-{spool_id}",
        issuer_of_patient_id=f"{part}{TEMPORARY_ISSUER_SUFFIX}",
    )


def temporary_spool_id(patient_id: str, issuer: str, gateway_id: str) -> int | None:
    """The spool id that ``patient_id`` (with ``issuer``) names as a temporary patient
    of gateway ``gateway_id``; None for any other patient (a device's, another
    gateway's, or a form :func:`temporary_patient` never writes)."""
    part = _gateway_part(gateway_id)
    prefix = f"{TEMPORARY_ID_PREFIX}{part}-"
    if issuer != f"{part}{TEMPORARY_ISSUER_SUFFIX}" or not patient_id.startswith(prefix):
        return None
    digits = patient_id[len(prefix) :]
    if not (digits.isascii() and digits.isdigit()) or digits.startswith("0"):
        return None
    return int(digits)


def object_patient(
    patient: PatientContext | None, gateway_id: str, spool_id: int | None
) -> ObjectPatient:
    """The patient to write: the device's when it named a Patient ID, else a temporary
    one for ``spool_id`` (the device's other fields, if any, kept).

    ``spool_id`` is ``None`` only for objects built outside the spool (tests,
    benchmarks): the type 2 Patient ID is then left empty.
    """
    if patient is not None and patient.patient_id.strip():
        return ObjectPatient(patient, known=True)
    given = patient or PatientContext()
    if spool_id is None:
        return ObjectPatient(given, known=False)
    temporary = temporary_patient(gateway_id, spool_id)
    return ObjectPatient(
        replace(
            given,
            patient_id=temporary.patient_id,
            issuer_of_patient_id=temporary.issuer_of_patient_id,
        ),
        known=False,
    )


def with_device_issuer(patient: PatientContext | None, issuer: str | None) -> PatientContext | None:
    """``patient`` with ``issuer`` as Issuer of Patient ID when it has a Patient ID
    and the device sent no issuer of its own."""
    if (
        patient is None
        or not issuer
        or not patient.patient_id.strip()
        or patient.issuer_of_patient_id.strip()
    ):
        return patient
    return replace(patient, issuer_of_patient_id=issuer)


def lesion_label_comment(lesion_id: str) -> str:
    """Image Comments for a lesion label that cannot be a Tracking ID (unknown patient)."""
    return (
        f"Lesion label on the device: {lesion_id} (no Tracking UID: the patient was "
        "not known when the image was taken)"
    )
