"""Modality Performed Procedure Step datasets (PS3.3 C.17, PS3.4 F.7): pure builders.

:func:`creation_dataset` is the N-CREATE attribute list (status IN PROGRESS) and
:func:`final_dataset` the N-SET modification list that ends the step (COMPLETED,
listing every series and instance, or DISCONTINUED). Every type 1 and type 2
attribute of PS3.4 Table F.7.2-1 for the SCU is present; type 2 ones the box does
not know are empty. Values come from the worklist item the session was opened from
(Scheduled Step Attributes Sequence: its Study Instance UID, Accession Number,
Requested Procedure and Scheduled Procedure Step IDs and descriptions, Scheduled
Protocol Code Sequence) and from the box (Performed Station AE Title, the PPS ID,
start and end, Modality). No I/O, no clock: times are passed in (local, aware).

Images are listed in each series' Referenced Image Sequence; other objects (the
encapsulated OBJ/MTL/STL of a 3D scan, structured reports) in its Referenced
Non-Image Composite SOP Instance Sequence.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from gateway.core.capture import PatientContext
from gateway.core.context import Coded
from gateway.core.procedure_step import StepStatus
from gateway.dicom.modules import SPECIFIC_CHARACTER_SET, da, tm

__all__ = [
    "MPPS_SOP_CLASS",
    "PerformedObject",
    "PerformedSeries",
    "PerformedStep",
    "ScheduledStep",
    "creation_dataset",
    "final_dataset",
    "is_image",
]

MPPS_SOP_CLASS: Final = "1.2.840.10008.3.1.2.3.3"
"""Modality Performed Procedure Step SOP Class."""

#: Referenced SOP Class UID of a Referenced Study Sequence item (PS3.4 F.7.2.1.1:
#: Detached Study Management, retired, still the value the table names).
_STUDY_REFERENCE_CLASS: Final = "1.2.840.10008.3.1.2.3.1"

#: PPS Discontinuation Reason (CID 9300) of a step that ended with nothing stored.
_DISCONTINUED_UNSPECIFIED: Final = Coded("110513", "DCM", "Discontinued for unspecified reason")

#: SOP classes that are not images: encapsulated documents (PDF, CDA, STL, OBJ,
#: MTL: 1.2.840.10008.5.1.4.1.1.104.x), structured reports (…88.x), raw data (…66).
_NON_IMAGE_PREFIXES: Final = (
    "1.2.840.10008.5.1.4.1.1.104.",
    "1.2.840.10008.5.1.4.1.1.88.",
    "1.2.840.10008.5.1.4.1.1.66",
)


def is_image(sop_class_uid: str) -> bool:
    """Whether instances of ``sop_class_uid`` go in a Referenced Image Sequence."""
    return not sop_class_uid.startswith(_NON_IMAGE_PREFIXES)


@dataclass(frozen=True, slots=True)
class ScheduledStep:
    """The worklist item's step, as the Scheduled Step Attributes Sequence names it."""

    study_uid: str
    referenced_study_uids: tuple[str, ...] = ()
    accession_number: str = ""
    requested_procedure_id: str = ""
    requested_procedure_description: str = ""
    sps_id: str = ""
    sps_description: str = ""
    protocol_codes: tuple[Coded, ...] = ()


@dataclass(frozen=True, slots=True)
class PerformedStep:
    """What the box performs: ``started`` local and aware; ``description`` the PPS
    Description, ``procedure_type`` the Performed Procedure Type Description."""

    pps_id: str
    station_ae_title: str
    station_name: str
    started: datetime
    modality: str
    study_id: str = ""
    description: str = ""
    procedure_type: str = ""
    procedure_codes: tuple[Coded, ...] = ()
    protocol_codes: tuple[Coded, ...] = ()


@dataclass(frozen=True, slots=True)
class PerformedObject:
    """One stored instance."""

    sop_class_uid: str
    sop_instance_uid: str


@dataclass(frozen=True, slots=True)
class PerformedSeries:
    """One series of the step, with every instance stored in it."""

    series_uid: str
    protocol_name: str
    description: str = ""
    operator_name: str = ""
    objects: tuple[PerformedObject, ...] = ()


def _codes(codes: Iterable[Coded]) -> Sequence:
    items = []
    for code in codes:
        item = Dataset()
        if len(code.value) > 16:
            item.LongCodeValue = code.value
        else:
            item.CodeValue = code.value
        item.CodingSchemeDesignator = code.scheme
        item.CodeMeaning = code.meaning
        items.append(item)
    return Sequence(items)


def _scheduled_item(step: ScheduledStep) -> Dataset:
    item = Dataset()
    item.StudyInstanceUID = step.study_uid
    references = []
    for uid in step.referenced_study_uids:
        ref = Dataset()
        ref.ReferencedSOPClassUID = _STUDY_REFERENCE_CLASS
        ref.ReferencedSOPInstanceUID = uid
        references.append(ref)
    item.ReferencedStudySequence = Sequence(references)
    item.AccessionNumber = step.accession_number
    item.RequestedProcedureID = step.requested_procedure_id
    item.RequestedProcedureDescription = step.requested_procedure_description
    item.ScheduledProcedureStepID = step.sps_id
    item.ScheduledProcedureStepDescription = step.sps_description
    item.ScheduledProtocolCodeSequence = _codes(step.protocol_codes)
    return item


def creation_dataset(
    patient: PatientContext, scheduled: ScheduledStep, performed: PerformedStep
) -> Dataset:
    """The N-CREATE attribute list of a step IN PROGRESS.

    ``patient`` is the worklist item's (a worklist session always has a Patient ID);
    Issuer of Patient ID is written only with a Patient ID it qualifies.
    """
    if not patient.patient_id:
        raise ValueError("a performed procedure step needs the worklist item's Patient ID")
    if performed.started.utcoffset() is None:
        raise ValueError("started must be timezone-aware")
    ds = Dataset()
    ds.SpecificCharacterSet = SPECIFIC_CHARACTER_SET
    # Performed Procedure Step Relationship
    ds.ScheduledStepAttributesSequence = Sequence([_scheduled_item(scheduled)])
    ds.PatientName = patient.patient_name
    ds.PatientID = patient.patient_id
    if patient.issuer_of_patient_id:
        ds.IssuerOfPatientID = patient.issuer_of_patient_id
    ds.PatientBirthDate = patient.birth_date
    ds.PatientSex = patient.sex
    ds.ReferencedPatientSequence = Sequence()
    # Performed Procedure Step Information
    ds.PerformedProcedureStepID = performed.pps_id
    ds.PerformedStationAETitle = performed.station_ae_title
    ds.PerformedStationName = performed.station_name
    ds.PerformedLocation = ""
    ds.PerformedProcedureStepStartDate = da(performed.started)
    ds.PerformedProcedureStepStartTime = tm(performed.started)
    ds.PerformedProcedureStepStatus = str(StepStatus.IN_PROGRESS)
    ds.PerformedProcedureStepDescription = performed.description
    ds.PerformedProcedureTypeDescription = performed.procedure_type
    ds.ProcedureCodeSequence = _codes(performed.procedure_codes)
    ds.PerformedProcedureStepEndDate = ""
    ds.PerformedProcedureStepEndTime = ""
    # Image Acquisition Results
    ds.Modality = performed.modality
    ds.StudyID = performed.study_id
    ds.PerformedProtocolCodeSequence = _codes(performed.protocol_codes)
    ds.PerformedSeriesSequence = Sequence()
    return ds


def _series_item(series: PerformedSeries) -> Dataset:
    item = Dataset()
    item.PerformingPhysicianName = ""
    item.ProtocolName = series.protocol_name
    item.OperatorsName = series.operator_name
    item.SeriesInstanceUID = series.series_uid
    item.SeriesDescription = series.description
    item.RetrieveAETitle = ""
    images: list[Dataset] = []
    others: list[Dataset] = []
    for obj in series.objects:
        ref = Dataset()
        ref.ReferencedSOPClassUID = obj.sop_class_uid
        ref.ReferencedSOPInstanceUID = obj.sop_instance_uid
        (images if is_image(obj.sop_class_uid) else others).append(ref)
    item.ReferencedImageSequence = Sequence(images)
    item.ReferencedNonImageCompositeSOPInstanceSequence = Sequence(others)
    return item


def final_dataset(
    status: StepStatus,
    ended: datetime,
    series: Iterable[PerformedSeries],
    protocol_codes: tuple[Coded, ...] = (),
) -> Dataset:
    """The N-SET modification list that ends a step: COMPLETED or DISCONTINUED.

    A COMPLETED step lists at least one series (PS3.4 F.7.2.2.2: Performed Series
    Sequence is type 1 then); a DISCONTINUED one lists what was stored, if anything,
    and gives its reason as "Discontinued for unspecified reason" (CID 9300).
    """
    if status is StepStatus.IN_PROGRESS:
        raise ValueError("the final N-SET is COMPLETED or DISCONTINUED")
    if ended.utcoffset() is None:
        raise ValueError("ended must be timezone-aware")
    items = [_series_item(s) for s in series]
    if status is StepStatus.COMPLETED and not items:
        raise ValueError("a COMPLETED step lists at least one series")
    ds = Dataset()
    ds.SpecificCharacterSet = SPECIFIC_CHARACTER_SET
    ds.PerformedProcedureStepStatus = str(status)
    ds.PerformedProcedureStepEndDate = da(ended)
    ds.PerformedProcedureStepEndTime = tm(ended)
    ds.PerformedProtocolCodeSequence = _codes(protocol_codes)
    ds.PerformedSeriesSequence = Sequence(items)
    if status is StepStatus.DISCONTINUED:
        ds.PerformedProcedureStepDiscontinuationReasonCodeSequence = _codes(
            [_DISCONTINUED_UNSPECIFIED]
        )
    return ds
