"""From a session request to the patient and order a session is opened with (pure).

:func:`check_patient` validates typed-in demographics; :func:`pick` finds the
worklist item a :class:`PickItem` or a scanned accession number names;
:func:`seed_from_item` turns a worklist item into the session's patient, study
and order. Errors are :class:`ContextError` whose messages never quote the values.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace

from gateway.context.desk import ContextError, ContextErrorCode, PickItem
from gateway.core.capture import PatientContext
from gateway.core.context import OrderContext, RequestedProcedure, SessionSource, WorklistEntry

__all__ = [
    "Seed",
    "check_patient",
    "items_of_patient",
    "matches_search",
    "pick",
    "seed_from_item",
]

_LO_MAX = 64
_PN_COMPONENT_MAX = 64


@dataclass(frozen=True, slots=True)
class Seed:
    """What a new session is opened with."""

    source: SessionSource
    patient: PatientContext
    item: WorklistEntry | None = None
    order: OrderContext | None = None


def _bad(message: str) -> ContextError:
    return ContextError(ContextErrorCode.BAD_PATIENT, message)


def _plain(text: str) -> bool:
    return all(ch.isprintable() for ch in text) and "\\" not in text


def check_patient(patient: PatientContext, default_issuer: str) -> PatientContext:
    """Typed-in demographics, checked and trimmed; the default issuer when none given."""
    pid = patient.patient_id.strip()
    if not pid:
        raise _bad("a Patient ID is required")
    if len(pid) > _LO_MAX or not _plain(pid):
        raise _bad(
            "the Patient ID must be at most 64 characters, without '\\' or control characters"
        )
    issuer = patient.issuer_of_patient_id.strip() or default_issuer
    if len(issuer) > _LO_MAX or not _plain(issuer):
        raise _bad("the issuer must be at most 64 characters, without '\\' or control characters")
    name = patient.patient_name.strip()
    if name and not _valid_pn(name):
        raise _bad(
            "the name must be written Family^Given (at most 64 characters per part, "
            "no '\\' or control characters)"
        )
    birth = patient.birth_date.strip()
    if birth and not _valid_date(birth):
        raise _bad("the birth date must be a real date written YYYYMMDD")
    sex = patient.sex.strip().upper()
    if sex not in ("", "F", "M", "O"):
        raise _bad("sex must be F, M, O or empty")
    return PatientContext(
        patient_name=name,
        patient_id=pid,
        issuer_of_patient_id=issuer,
        birth_date=birth,
        sex=sex,
    )


def _valid_pn(name: str) -> bool:
    if not _plain(name):
        return False
    groups = name.split("=")
    if len(groups) > 3:
        return False
    for group in groups:
        parts = group.split("^")
        if len(parts) > 5 or len(group) > _PN_COMPONENT_MAX:
            return False
    return True


def _valid_date(text: str) -> bool:
    if len(text) != 8 or not text.isascii() or not text.isdigit():
        return False
    try:
        day = dt.date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        return False
    return day.year >= 1900 and day <= dt.date.today()


def pick(items: list[WorklistEntry], request: PickItem) -> WorklistEntry:
    """The one item ``request`` names (NO_SUCH_ITEM / AMBIGUOUS_ITEM otherwise)."""
    given = [
        v for v in (request.item_key, request.accession_number, request.sps_id) if v is not None
    ]
    if len(given) != 1 or not given[0].strip():
        raise ContextError(
            ContextErrorCode.BAD_REQUEST,
            "name exactly one of: a worklist item, an accession number, a procedure step id",
        )
    if request.item_key is not None:
        found = [i for i in items if i.key == request.item_key]
    elif request.accession_number is not None:
        found = [i for i in items if i.accession_number == request.accession_number.strip()]
    else:
        assert request.sps_id is not None
        found = [i for i in items if i.sps_id == request.sps_id.strip()]
    return _one(found)


def _one(found: list[WorklistEntry]) -> WorklistEntry:
    if not found:
        raise ContextError(ContextErrorCode.NO_SUCH_ITEM, "no worklist item matches")
    if len(found) > 1:
        raise ContextError(
            ContextErrorCode.AMBIGUOUS_ITEM,
            f"{len(found)} worklist items match; pick one from the worklist",
        )
    return found[0]


def items_of_patient(items: list[WorklistEntry], patient_id: str) -> list[WorklistEntry]:
    """The items of the patient with Patient ID ``patient_id``."""
    return [i for i in items if i.patient.patient_id == patient_id]


def one_item(found: list[WorklistEntry]) -> WorklistEntry:
    """The only item of ``found`` (NO_SUCH_ITEM / AMBIGUOUS_ITEM otherwise)."""
    return _one(found)


def seed_from_item(item: WorklistEntry, default_issuer: str) -> Seed:
    """A worklist session: the item's patient (an empty issuer takes the default),
    its study and its order."""
    patient = item.patient
    if not patient.issuer_of_patient_id and default_issuer:
        patient = replace(patient, issuer_of_patient_id=default_issuer)
    patient = replace(patient, accession_number=item.accession_number)
    order = OrderContext(
        accession_number=item.accession_number,
        referring_physician=item.referring_physician,
        study_id=item.requested_procedure_id,
        referenced_study_uids=item.referenced_study_uids,
        procedure_codes=item.requested_procedure_codes,
        request=RequestedProcedure(
            requested_procedure_id=item.requested_procedure_id,
            accession_number=item.accession_number,
            study_uid=item.study_uid,
            requested_procedure_description=item.requested_procedure_description,
            requested_procedure_codes=item.requested_procedure_codes,
            sps_id=item.sps_id,
            sps_description=item.sps_description,
            protocol_codes=item.protocol_codes,
        ),
    )
    return Seed(SessionSource.WORKLIST, patient, item, order)


def matches_search(item: WorklistEntry, search: str) -> bool:
    """Whether ``search`` (case-insensitive) is in the item's name, ID, birth date or
    accession number (every word of it, in any of them)."""
    haystack = " ".join(
        (
            item.patient.patient_name.replace("^", " "),
            item.patient.patient_id,
            item.patient.birth_date,
            item.accession_number,
        )
    ).casefold()
    return all(word in haystack for word in search.casefold().split())
