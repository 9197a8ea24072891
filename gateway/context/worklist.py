"""Modality Worklist queries and answers, without I/O.

What DermGate asks a worklist SCP (:func:`build_query`), how it reads each answer
(:func:`decode_items`) and how it re-checks every answer on the box
(:class:`WorklistFilter`), because servers differ in the keys they honour
(CONTEXT.md §3: wlmscpfs ignores SPS ID and code sequences, Orthanc cannot combine a
date range with a time range).

The query is the one a well-behaved modality sends (PS3.4 K.6.1, IHE SWF): the
Scheduled Procedure Step keys inside the single item of the Scheduled Procedure Step
Sequence, no Query/Retrieve Level, a start-date range and no time key, and the return
keys the context stage copies into images (Specific Character Set first: every
answer is decoded with the character set it names).

Nothing here logs: decoding reports what it skipped as counts per reason
(:class:`Decoded`), never the content of a skipped item.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.uid import UID

from gateway.core.capture import PatientContext
from gateway.core.config.context import WorklistSettings
from gateway.core.context import Coded, WorklistEntry

__all__ = [
    "Decoded",
    "WorklistFilter",
    "build_query",
    "decode_items",
    "station_to_match",
]

_ROOT_RETURN_KEYS = (
    "SpecificCharacterSet",
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "AdmissionID",
    "AccessionNumber",
    "ReferringPhysicianName",
    "RequestingPhysician",
    "StudyInstanceUID",
    "RequestedProcedureID",
    "RequestedProcedureDescription",
    "RequestedProcedurePriority",
)
QUERY_CHARSET = "ISO_IR 192"
"""The query's Specific Character Set (UTF-8); each answer is decoded with its own."""

_ROOT_RETURN_SEQUENCES = ("OtherPatientIDsSequence", "ReferencedStudySequence")
_SPS_RETURN_KEYS = (
    "ScheduledStationName",
    "ScheduledProcedureStepStartTime",
    "ScheduledPerformingPhysicianName",
    "ScheduledProcedureStepDescription",
    "ScheduledProcedureStepID",
    "ScheduledProcedureStepStatus",
)


def station_to_match(settings: WorklistSettings, calling_ae: str) -> str:
    """The Scheduled Station AE Title to ask for ("" = any station)."""
    return calling_ae if settings.station_ae_title is None else settings.station_ae_title


def _code_item() -> Dataset:
    item = Dataset()
    item.CodeValue = ""
    item.CodingSchemeDesignator = ""
    item.CodeMeaning = ""
    return item


@dataclass(frozen=True, slots=True)
class WorklistFilter:
    """What DermGate wants from the worklist, checked again on every answer.

    ``station``: Scheduled Station AE Title ("" = any); ``modality`` ("" = any);
    ``first``/``last``: the Scheduled Procedure Step start dates (YYYYMMDD),
    inclusive.
    """

    station: str
    modality: str
    first: str
    last: str

    @classmethod
    def of(cls, settings: WorklistSettings, calling_ae: str, today: date) -> WorklistFilter:
        """The filter for ``[worklist]`` on ``today`` (the box's local date)."""
        days = timedelta(days=settings.window_days)
        return cls(
            station=station_to_match(settings, calling_ae),
            modality=settings.modality,
            first=(today - days).strftime("%Y%m%d"),
            last=(today + days).strftime("%Y%m%d"),
        )

    @property
    def date_range(self) -> str:
        """The start-date matching key: one date, or ``first-last``."""
        return self.first if self.first == self.last else f"{self.first}-{self.last}"

    def keeps(self, entry: WorklistEntry) -> bool:
        """True if ``entry`` is for this station, modality and date window."""
        if self.station and entry.station_ae_title != self.station:
            return False
        if self.modality and entry.modality != self.modality:
            return False
        day = entry.sps_start_date
        return len(day) == 8 and day.isdigit() and self.first <= day <= self.last


def build_query(wanted: WorklistFilter) -> Dataset:
    """The C-FIND identifier: matching keys in the SPS item, return keys empty."""
    ds = Dataset()
    for keyword in _ROOT_RETURN_KEYS:
        setattr(ds, keyword, "")
    # The identifier's own character set, which servers that transcode (Orthanc)
    # answer in: UTF-8, so any name survives (Orthanc would use Latin-1 otherwise).
    ds.SpecificCharacterSet = QUERY_CHARSET
    for keyword in _ROOT_RETURN_SEQUENCES:
        setattr(ds, keyword, Sequence([]))
    ds.RequestedProcedureCodeSequence = Sequence([_code_item()])
    sps = Dataset()
    sps.ScheduledStationAETitle = wanted.station
    sps.Modality = wanted.modality
    sps.ScheduledProcedureStepStartDate = wanted.date_range
    for keyword in _SPS_RETURN_KEYS:
        setattr(sps, keyword, "")
    sps.ScheduledProtocolCodeSequence = Sequence([_code_item()])
    ds.ScheduledProcedureStepSequence = Sequence([sps])
    return ds


# --------------------------------------------------------------------------- decoding


def _text(ds: Dataset, keyword: str) -> str:
    """A single-valued attribute as text ("" when absent or empty)."""
    value = ds.get(keyword)
    if value is None:
        return ""
    if isinstance(value, list | tuple | MultiValue):
        value = "\\".join(str(v) for v in value)
    return str(value).strip()


def _day(ds: Dataset, keyword: str) -> str:
    """A DA as YYYYMMDD (the old ``YYYY.MM.DD`` form accepted)."""
    return _text(ds, keyword).replace(".", "")


def _items(ds: Dataset, keyword: str) -> list[Dataset]:
    value = ds.get(keyword)
    return list(value) if isinstance(value, Sequence) else []


def _codes(ds: Dataset, keyword: str) -> tuple[Coded, ...]:
    found = []
    for item in _items(ds, keyword):
        value = _text(item, "CodeValue") or _text(item, "LongCodeValue")
        if value:
            found.append(
                Coded(value, _text(item, "CodingSchemeDesignator"), _text(item, "CodeMeaning"))
            )
    return tuple(found)


def _digest(*parts: str) -> str:
    """A key for an item without Study Instance UID + SPS ID (no patient data in it)."""
    return "sha256:" + hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


@dataclass(slots=True)
class Decoded:
    """Entries decoded from the answers, and how many were skipped, per reason.

    Reasons name what was missing ("no Patient ID"), never an item's content.
    """

    entries: list[WorklistEntry] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)
    filtered: int = 0
    """Answers for another station, modality or date (the server over-returned)."""

    def summary(self) -> str:
        """``"2 without Patient ID, 1 undecodable"`` (empty when none was skipped)."""
        return ", ".join(f"{n} {why}" for why, n in sorted(self.skipped.items()))


def _entries_of(ds: Dataset, fetched_at: float) -> list[WorklistEntry]:
    patient = PatientContext(
        patient_name=_text(ds, "PatientName"),
        patient_id=_text(ds, "PatientID"),
        issuer_of_patient_id=_text(ds, "IssuerOfPatientID"),
        birth_date=_day(ds, "PatientBirthDate"),
        sex=_text(ds, "PatientSex"),
        accession_number=_text(ds, "AccessionNumber"),
    )
    study_uid = _text(ds, "StudyInstanceUID")
    referenced = tuple(
        uid
        for uid in (
            _text(i, "ReferencedSOPInstanceUID") for i in _items(ds, "ReferencedStudySequence")
        )
        if uid
    )
    steps = _items(ds, "ScheduledProcedureStepSequence") or [Dataset()]
    entries = []
    for sps in steps:
        sps_id = _text(sps, "ScheduledProcedureStepID")
        fields = {
            "referring_physician": _text(ds, "ReferringPhysicianName"),
            "requested_procedure_id": _text(ds, "RequestedProcedureID"),
            "requested_procedure_description": _text(ds, "RequestedProcedureDescription"),
            "sps_description": _text(sps, "ScheduledProcedureStepDescription"),
            "sps_start_date": _day(sps, "ScheduledProcedureStepStartDate"),
            "sps_start_time": _text(sps, "ScheduledProcedureStepStartTime"),
            "modality": _text(sps, "Modality"),
            "station_ae_title": _text(sps, "ScheduledStationAETitle"),
            "performing_physician": _text(sps, "ScheduledPerformingPhysicianName"),
        }
        if sps_id:
            key = f"{study_uid}/{sps_id}"
        else:
            key = _digest(
                study_uid,
                patient.patient_id,
                patient.issuer_of_patient_id,
                patient.accession_number,
                *(str(v) for v in fields.values()),
            )
        entries.append(
            WorklistEntry(
                key=key,
                patient=patient,
                study_uid=study_uid,
                accession_number=patient.accession_number,
                requested_procedure_codes=_codes(ds, "RequestedProcedureCodeSequence"),
                sps_id=sps_id,
                protocol_codes=_codes(sps, "ScheduledProtocolCodeSequence"),
                referenced_study_uids=referenced,
                fetched_at=fetched_at,
                **fields,
            )
        )
    return entries


def _person(entry: WorklistEntry) -> tuple[str, str]:
    return (entry.patient.patient_id, entry.patient.issuer_of_patient_id)


_CONFLICT = WorklistEntry(key="", patient=PatientContext(), study_uid="")


def decode_items(answers: Iterable[Dataset], wanted: WorklistFilter, fetched_at: float) -> Decoded:
    """The entries of ``answers`` that ``wanted`` keeps, one per Scheduled Procedure
    Step, each item's strings decoded with its Specific Character Set.

    Skipped (and counted by reason): items without Patient ID or Study Instance UID
    (an image must never get an empty Patient ID or a made-up study), items that
    cannot be decoded, a second answer with the same key, and items whose step or
    study another patient's item also names (both are left out). Items for another
    station, modality or date than ``wanted`` (servers over-return) are dropped and
    counted in :attr:`Decoded.filtered`.
    """
    out = Decoded()
    kept: dict[str, WorklistEntry] = {}
    for ds in answers:
        try:
            entries = _entries_of(ds, fetched_at)
        except Exception:  # pydicom raises many kinds for a damaged value
            out.skipped["undecodable"] += 1
            continue
        for entry in entries:
            missing = [
                what
                for what, value in (
                    ("Patient ID", entry.patient.patient_id),
                    ("Study Instance UID", entry.study_uid),
                )
                if not value
            ]
            if missing:
                out.skipped["without " + " and ".join(missing)] += 1
            elif not UID(entry.study_uid).is_valid:
                # Copied into every object of the study: a PACS would refuse them all.
                out.skipped["with an invalid Study Instance UID"] += 1
            elif len(entry.patient.patient_id) > 64 or "\\" in entry.patient.patient_id:
                out.skipped["with a Patient ID DICOM cannot carry"] += 1
            elif not wanted.keeps(entry):
                out.filtered += 1
            elif entry.key in kept:
                out.skipped["repeated"] += 1
                if _person(kept[entry.key]) != _person(entry):
                    kept[entry.key] = _CONFLICT
            else:
                kept[entry.key] = entry
    # A study belongs to one patient: a RIS that gives two patients the same Study
    # Instance UID (or the same step) would merge them in the PACS. Neither is used.
    people: dict[str, set[tuple[str, str]]] = {}
    for entry in kept.values():
        if entry is not _CONFLICT:
            people.setdefault(entry.study_uid, set()).add(_person(entry))
    for entry in kept.values():
        if entry is _CONFLICT:
            out.skipped["steps shared by different patients"] += 1
        elif len(people[entry.study_uid]) > 1:
            out.skipped["with a Study Instance UID shared by different patients"] += 1
        else:
            out.entries.append(entry)
    return out
