"""STOW-RS requests planned and their instances judged (no I/O but a file header).

:func:`plan_requests` groups instances per study and by size; :func:`judge` gives
an instance its outcome from the store's per-instance answer, :func:`not_listed`
when the answer names it nowhere (the table in :mod:`gateway.forward.stow`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pydicom

from gateway.core.errors import DeliveryErrorCode
from gateway.forward.cstore import StoreOutcome, StoreRequest, Verdict, classify_status
from gateway.forward.stow_answer import ALREADY_STORED, StowAnswer

MIB = 1024 * 1024
REFUSED = frozenset({400, 415})
"""HTTP statuses that refuse the request itself (with 413: not retried blindly)."""


@dataclass(frozen=True, slots=True)
class StowItem:
    """One instance to send, with what its file says."""

    request: StoreRequest
    study_uid: str
    sop_instance_uid: str
    size: int


def read_header(request: StoreRequest) -> StowItem:
    """Study and SOP Instance UID and size of one file (blocking; pixel data not read)."""
    dataset = pydicom.dcmread(
        request.path,
        stop_before_pixels=True,
        specific_tags=["StudyInstanceUID", "SOPInstanceUID"],
        defer_size=1024,
    )
    return StowItem(
        request,
        str(dataset.StudyInstanceUID),
        str(dataset.SOPInstanceUID),
        request.path.stat().st_size,
    )


def plan_requests(items: Sequence[StowItem], max_bytes: int) -> list[list[StowItem]]:
    """Group ``items`` per study (in order of first appearance); small ones share a
    request up to ``max_bytes``, a larger one goes alone."""
    studies: dict[str, list[StowItem]] = {}
    for item in items:
        studies.setdefault(item.study_uid, []).append(item)
    planned: list[list[StowItem]] = []
    for members in studies.values():
        current: list[StowItem] = []
        size = 0
        for item in members:
            if item.size >= max_bytes:
                planned.append([item])
                continue
            if current and size + item.size > max_bytes:
                planned.append(current)
                current, size = [], 0
            current.append(item)
            size += item.size
        if current:
            planned.append(current)
    return planned


def judge(item: StowItem, answer: StowAnswer, confirm: str) -> StoreOutcome | None:
    """The outcome the answer gives this instance; None when it names it nowhere."""
    spool_id = item.request.spool_id
    uid = item.sop_instance_uid
    confirmed = confirm == "response"
    if uid in answer.stored:
        warning = answer.stored[uid]
        if warning is None:
            return StoreOutcome(spool_id, Verdict.SUCCESS, "STOW-RS stored", confirmed=confirmed)
        return StoreOutcome(
            spool_id,
            Verdict.WARNING,
            f"STOW-RS stored with warning 0x{warning:04X}",
            warning,
            confirmed=confirmed,
        )
    if uid not in answer.failed:
        return None
    reason = answer.failed[uid]
    if reason in ALREADY_STORED:
        return StoreOutcome(
            spool_id,
            Verdict.WARNING,
            f"STOW-RS: already stored (0x{reason:04X}); read-back confirms it",
            reason,
        )
    verdict = Verdict.RETRYABLE if reason is None else classify_status(reason)
    if verdict.delivered:  # a warning status among the failures: not stored
        verdict = Verdict.RETRYABLE
    shown = "no reason given" if reason is None else f"0x{reason:04X}"
    return StoreOutcome(
        spool_id,
        verdict,
        f"STOW-RS failure reason {shown}",
        reason,
        code=DeliveryErrorCode.STORE_FAILED,
    )


def not_listed(item: StowItem, name: str, status: int, retry_after: float | None) -> StoreOutcome:
    """The outcome of an instance the answer names nowhere, by the HTTP status."""
    spool_id = item.request.spool_id
    if status == 413:
        return StoreOutcome(
            spool_id,
            Verdict.PERMANENT,
            f"{name}: HTTP 413: the request ({item.size / MIB:.1f} MB, one instance) was "
            "too large for the store; set a smaller max_request_mb or raise the store's "
            "limit",
            413,
            code=DeliveryErrorCode.TOO_LARGE,
        )
    if status in REFUSED:
        return StoreOutcome(
            spool_id,
            Verdict.PERMANENT,
            f"{name}: HTTP {status}: the store refused the instance"
            + (" (media type not supported)" if status == 415 else ""),
            status,
            code=DeliveryErrorCode.REQUEST_REFUSED,
        )
    if 200 <= status < 300 or status == 409:
        return StoreOutcome(
            spool_id,
            Verdict.RETRYABLE,
            f"{name}: HTTP {status}: the answer does not list the instance as stored",
            status,
            code=DeliveryErrorCode.NOT_STORED,
        )
    return StoreOutcome(
        spool_id,
        Verdict.RETRYABLE,
        f"{name}: HTTP {status}",
        status,
        unreachable=status in (502, 504),
        code=DeliveryErrorCode.HTTP_ERROR,
        retry_after=retry_after,
    )


def for_all(
    chunk: list[StowItem],
    verdict: Verdict,
    detail: str,
    code: DeliveryErrorCode,
    *,
    status: int | None = None,
    unreachable: bool = False,
    retry_after: float | None = None,
) -> list[StoreOutcome]:
    """The same outcome for every instance of ``chunk`` (no answer to read)."""
    return [
        StoreOutcome(
            item.request.spool_id,
            verdict,
            detail,
            status,
            unreachable=unreachable,
            code=code,
            retry_after=retry_after,
        )
        for item in chunk
    ]


__all__ = [
    "MIB",
    "REFUSED",
    "StowItem",
    "for_all",
    "judge",
    "not_listed",
    "plan_requests",
    "read_header",
]
