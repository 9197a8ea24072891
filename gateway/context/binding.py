"""A capture's context from its session (pure): patient, study, series, lesion, codes.

The context stage reads the session, its series and its lesion from the ledger and
calls :func:`capture_context` and :func:`session_uids`; assigning held captures
uses the same two, so a capture assigned later says what it would have said had
the session been open when it arrived.
"""

from __future__ import annotations

from gateway.context.naming import (
    capture_site,
    sensitive_codes,
    series_description,
    study_description,
)
from gateway.core.capture import CaptureOffer, ContentType, DeviceIdentity, InstanceUIDs
from gateway.core.config.context import SensitiveRule
from gateway.core.context import CaptureContext, LesionContext
from gateway.spool.sessions import SessionRow

__all__ = [
    "capture_context",
    "patient_differs",
    "series_kind",
    "session_uids",
]


def series_kind(offer: CaptureOffer) -> str:
    """The kind of object a capture becomes: one series per device and kind per session."""
    return str(offer.content_type or ContentType.JPEG)


def patient_differs(offer: CaptureOffer, session: SessionRow) -> bool:
    """Whether the device named a patient (by Patient ID) other than the session's."""
    given = offer.patient
    if given is None or not given.patient_id.strip():
        return False
    if given.patient_id.strip() != session.patient.patient_id:
        return True
    issuer = given.issuer_of_patient_id.strip()
    return bool(issuer) and issuer != session.patient.issuer_of_patient_id


def capture_context(
    session: SessionRow,
    identity: DeviceIdentity,
    offer: CaptureOffer,
    lesion: LesionContext | None,
    rules: list[SensitiveRule],
    *,
    study_started: str = "",
    series_number: int | None = None,
    flagged: bool = False,
    instance_number: int | None = None,
) -> CaptureContext:
    """The context of one capture of ``session`` (``lesion``: the device's, else the
    session's current one)."""
    site, scheme = capture_site(offer.anatomic_site, lesion)
    label = lesion.tracking_id if lesion is not None else offer.lesion_id
    requested = ""
    if session.order is not None and session.order.request is not None:
        requested = session.order.request.requested_procedure_description
    return CaptureContext(
        session_id=session.id,
        source=session.source,
        patient=session.patient,
        study_uid=session.study_uid,
        study_description=session.study_description
        or study_description(requested, identity.device_class),
        order=session.order,
        series_description=series_description(identity.device_class, site, scheme, label),
        operator_name=session.operator_name,
        lesion=lesion,
        sensitive=sensitive_codes(rules, site, scheme, session.sensitive or flagged),
        study_started=study_started,
        series_number=series_number,
        instance_number=instance_number,
    )


def session_uids(session: SessionRow, uids: InstanceUIDs, series_uid: str | None) -> InstanceUIDs:
    """The capture's UIDs in the session: the session's study, its series for the
    kind (``series_uid``; None keeps the driver's own series, as a 3D export's files
    need), the same SOP Instance UID."""
    return InstanceUIDs(
        study=session.study_uid,
        series=uids.series if series_uid is None else series_uid,
        sop_instance=uids.sop_instance,
    )
