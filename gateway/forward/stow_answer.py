"""Reading a DICOMweb store's answers: STOW-RS per-instance results, QIDO-RS
listings and ``Retry-After`` (pure functions, no I/O).

A STOW-RS answer (PS3.18 §10.5.3) is a Store Instances Response Module: Referenced
SOP Sequence (0008,1199) lists what was stored (a Warning Reason (0008,1196) may
say it was coerced), Failed SOP Sequence (0008,1198) what was not, with a Failure
Reason (0008,1197). Either comes as DICOM JSON (``application/dicom+json``, asked
for) or as DICOM XML (``application/dicom+xml``, the Native DICOM Model) from a
store that ignores Accept. What cannot be read yields an empty result: then every
instance of the request counts as "in neither sequence", i.e. not delivered.
"""

from __future__ import annotations

import email.utils
import json
import time
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from typing import Any

REFERENCED_SOP_SEQUENCE = "00081199"
FAILED_SOP_SEQUENCE = "00081198"
REFERENCED_SOP_INSTANCE_UID = "00081155"
FAILURE_REASON = "00081197"
WARNING_REASON = "00081196"
SOP_INSTANCE_UID = "00080018"

ALREADY_STORED = frozenset({0xB00E, 0x0111})
"""Failure reasons that mean "the store has this instance already": Azure's 45070
(0xB00E) and PS3.7's 0x0111 Duplicate SOP Instance. Delivered once read-back
confirms it."""


@dataclass(frozen=True, slots=True)
class StowAnswer:
    """Per-instance results of one STOW-RS request, by SOP Instance UID."""

    stored: dict[str, int | None] = field(default_factory=dict)
    """Referenced SOP Sequence: UID → Warning Reason (None: none given)."""
    failed: dict[str, int | None] = field(default_factory=dict)
    """Failed SOP Sequence: UID → Failure Reason (None: none given)."""


def _json_int(element: Any) -> int | None:
    if not isinstance(element, dict):
        return None
    values = element.get("Value")
    if isinstance(values, list) and values and isinstance(values[0], int):
        return int(values[0])
    return None


def _json_uid(element: Any) -> str | None:
    if not isinstance(element, dict):
        return None
    values = element.get("Value")
    if isinstance(values, list) and values and isinstance(values[0], str):
        return values[0].strip()
    return None


def _json_items(dataset: Any, tag: str, reason_tag: str) -> dict[str, int | None]:
    if not isinstance(dataset, dict):
        return {}
    sequence = dataset.get(tag)
    items = sequence.get("Value") if isinstance(sequence, dict) else None
    found: dict[str, int | None] = {}
    for item in items if isinstance(items, list) else []:
        if isinstance(item, dict) and (uid := _json_uid(item.get(REFERENCED_SOP_INSTANCE_UID))):
            found[uid] = _json_int(item.get(reason_tag))
    return found


def _xml_items(root: ElementTree.Element, tag: str, reason_tag: str) -> dict[str, int | None]:
    found: dict[str, int | None] = {}
    for sequence in root.iter():
        if _local(sequence.tag) != "DicomAttribute" or sequence.get("tag") != tag:
            continue
        for item in sequence:
            if _local(item.tag) != "Item":
                continue
            uid = reason = None
            for attribute in item:
                value = next((v.text for v in attribute if _local(v.tag) == "Value"), None)
                if attribute.get("tag") == REFERENCED_SOP_INSTANCE_UID and value:
                    uid = value.strip()
                elif attribute.get("tag") == reason_tag and value and value.strip().isdigit():
                    reason = int(value.strip())
            if uid:
                found[uid] = reason
    return found


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def parse_stow_answer(body: bytes, content_type: str) -> StowAnswer:
    """The per-instance results in a STOW-RS answer body (empty if unreadable)."""
    if not body.strip():
        return StowAnswer()
    if "xml" in content_type.lower():
        if b"<!DOCTYPE" in body.upper() or b"<!ENTITY" in body.upper():
            return StowAnswer()  # no DTD, no entities: nothing to expand or fetch
        try:
            root = ElementTree.fromstring(body)  # noqa: S314 (DTDs refused above)
        except ElementTree.ParseError:
            return StowAnswer()
        return StowAnswer(
            _xml_items(root, REFERENCED_SOP_SEQUENCE, WARNING_REASON),
            _xml_items(root, FAILED_SOP_SEQUENCE, FAILURE_REASON),
        )
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return StowAnswer()
    if isinstance(document, list) and len(document) == 1:  # some stores wrap it in a list
        document = document[0]
    return StowAnswer(
        _json_items(document, REFERENCED_SOP_SEQUENCE, WARNING_REASON),
        _json_items(document, FAILED_SOP_SEQUENCE, FAILURE_REASON),
    )


def parse_qido_uids(body: bytes) -> list[str]:
    """SOP Instance UIDs in a QIDO-RS instance listing (DICOM JSON array)."""
    if not body.strip():
        return []  # 204 No Content: nothing matches
    document = json.loads(body)
    if not isinstance(document, list):
        raise ValueError("a QIDO-RS answer is a JSON array")  # noqa: TRY004 (a bad answer)
    return [
        uid
        for item in document
        if isinstance(item, dict) and (uid := _json_uid(item.get(SOP_INSTANCE_UID)))
    ]


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` (RFC 9110 §10.2.3: delay in seconds, or an HTTP date) in seconds
    from now; None when absent or unreadable, never negative."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


__all__ = [
    "ALREADY_STORED",
    "StowAnswer",
    "parse_qido_uids",
    "parse_stow_answer",
    "retry_after_seconds",
]
