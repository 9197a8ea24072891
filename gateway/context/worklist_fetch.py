"""The Modality Worklist C-FIND SCU (pynetdicom), behind one thread seam.

``await fetch_worklist(settings, calling_ae, today=..., now=...)`` runs one query on a
worker thread (:func:`asyncio.to_thread`) and returns a :class:`WorklistAnswer`: the
decoded, locally re-filtered entries (:mod:`gateway.context.worklist`), whether the
answer was cut at ``[worklist] max_items`` (C-CANCEL sent), and counts of what was
skipped. Failures raise :class:`WorklistError`::

    WorklistError                 the query gave no usable worklist; .reason says why
      reason = UNREACHABLE        no association (connection refused, timed out, aborted)
      reason = REFUSED            the SCP rejected the association (e.g. unknown calling AE)
      reason = NOT_OFFERED        associated, but Modality Worklist FIND was not accepted
      reason = FAILED             the C-FIND ended with a failure status (0xA700, 0xC000…)
      reason = NO_ANSWER          the SCP stopped answering (timeout, abort mid-query)

An error's message names the SCP (AE title, host, port) and the status, never
patient data. Every pending answer (0xFF00 and 0xFF01) counts as an item.
"""

from __future__ import annotations

import asyncio
import enum
import time
from dataclasses import dataclass
from datetime import date

from pydicom.dataset import Dataset
from pynetdicom.sop_class import ModalityWorklistInformationFind  # type: ignore[attr-defined]

from gateway.context.worklist import Decoded, WorklistFilter, build_query, decode_items
from gateway.core.config.context import WorklistSettings
from gateway.core.context import WorklistEntry
from gateway.dicom.network import dermgate_ae

__all__ = ["WorklistAnswer", "WorklistError", "WorklistFailure", "fetch_worklist"]

_PENDING = frozenset({0xFF00, 0xFF01})
_CANCELLED = 0xFE00
_MSG_ID = 1


class WorklistFailure(enum.StrEnum):
    """Why a worklist query failed (shown in the status as is)."""

    UNREACHABLE = "unreachable"
    REFUSED = "refused association"
    NOT_OFFERED = "worklist not offered"
    FAILED = "C-FIND failed"
    NO_ANSWER = "no answer"


class WorklistError(Exception):
    """A query that gave no usable worklist; ``reason`` is a :class:`WorklistFailure`,
    the message says where and which status (never patient data)."""

    def __init__(self, reason: WorklistFailure, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass(frozen=True, slots=True)
class WorklistAnswer:
    """One successful query: the entries kept, in the SCP's order.

    ``received``: answers (pending responses) taken; ``truncated``: there were more
    than ``max_items`` and the rest was cancelled; ``filtered``: answers for another
    station, modality or date; ``skipped``: "2 without Patient ID"-style summary of
    unusable items ("" when none).
    """

    entries: list[WorklistEntry]
    received: int
    truncated: bool
    filtered: int
    skipped: str


def _where(settings: WorklistSettings) -> str:
    return f"{settings.ae_title}@{settings.host}:{settings.port}"


def _query(
    settings: WorklistSettings, calling_ae: str, wanted: WorklistFilter
) -> tuple[list[Dataset], bool]:
    """Blocking: one association, one C-FIND; (identifiers, truncated)."""
    ae = dermgate_ae(calling_ae)
    ae.connection_timeout = settings.timeout
    ae.acse_timeout = settings.timeout
    ae.dimse_timeout = settings.timeout
    ae.network_timeout = settings.timeout
    ae.add_requested_context(ModalityWorklistInformationFind)
    where = _where(settings)
    assoc = ae.associate(settings.host, settings.port, ae_title=settings.ae_title)
    if not assoc.is_established:
        if assoc.is_rejected:
            raise WorklistError(WorklistFailure.REFUSED, f"{where} rejected the association")
        raise WorklistError(WorklistFailure.UNREACHABLE, f"no association with {where}")
    try:
        contexts = [
            cx
            for cx in assoc.accepted_contexts
            if cx.abstract_syntax == ModalityWorklistInformationFind
        ]
        if not contexts:
            raise WorklistError(
                WorklistFailure.NOT_OFFERED, f"{where} does not accept Modality Worklist FIND"
            )
        answers: list[Dataset] = []
        truncated = False
        final: int | None = None
        responses = assoc.send_c_find(
            build_query(wanted), ModalityWorklistInformationFind, msg_id=_MSG_ID
        )
        for status, identifier in responses:
            if not status or "Status" not in status:
                break  # no answer within dimse_timeout, or the SCP aborted
            code = int(status.Status)
            if code not in _PENDING:
                final = code
                break
            if truncated:
                continue  # answers already on their way when the SCP saw the cancel
            if len(answers) >= settings.max_items:
                truncated = True
                assoc.send_c_cancel(_MSG_ID, contexts[0].context_id)
                continue
            if identifier is not None:
                answers.append(identifier)
        if final is None:
            raise WorklistError(WorklistFailure.NO_ANSWER, f"{where} stopped answering the C-FIND")
        if final != 0 and not (truncated and final == _CANCELLED):
            if final == _CANCELLED:
                raise WorklistError(WorklistFailure.FAILED, f"{where} cancelled the C-FIND")
            raise WorklistError(
                WorklistFailure.FAILED, f"{where} answered the C-FIND with status 0x{final:04X}"
            )
        return answers, truncated
    finally:
        if assoc.is_established:
            assoc.release()


def _fetch(settings: WorklistSettings, calling_ae: str, today: date, now: float) -> WorklistAnswer:
    wanted = WorklistFilter.of(settings, calling_ae, today)
    try:
        answers, truncated = _query(settings, calling_ae, wanted)
    except (OSError, RuntimeError, ValueError) as err:  # pynetdicom's own failures
        raise WorklistError(
            WorklistFailure.NO_ANSWER, f"query to {_where(settings)} failed ({type(err).__name__})"
        ) from err
    decoded: Decoded = decode_items(answers, wanted, now)
    return WorklistAnswer(
        entries=decoded.entries,
        received=len(answers),
        truncated=truncated,
        filtered=decoded.filtered,
        skipped=decoded.summary(),
    )


async def fetch_worklist(
    settings: WorklistSettings,
    calling_ae: str,
    *,
    today: date | None = None,
    now: float | None = None,
) -> WorklistAnswer:
    """Query the worklist SCP of ``settings`` as ``calling_ae`` (on a worker thread).

    ``today`` is the box's local date (the date window's centre), ``now`` the
    ``fetched_at`` of the entries. Raises :class:`WorklistError`.
    """
    day = date.today() if today is None else today
    stamp = time.time() if now is None else now
    return await asyncio.to_thread(_fetch, settings, calling_ae, day, stamp)
