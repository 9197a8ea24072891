"""``[[routes]]``: which captures go to which destinations, and which jump the queue.

Semantics (README "Several destinations and routes"):

* No ``[[routes]]``: every capture goes to every destination, at normal priority.
* With routes, a capture goes to the union of ``to`` of every route whose ``match``
  it satisfies. Within a ``match`` every key given must hold (and); a key listing
  several values holds when any of them does (or); an empty ``match`` matches every
  capture. A destination's delivery is high priority when any matching route that
  names it says ``priority = "high"``.
* A capture that no route sends anywhere is kept and set aside (QUARANTINED, reason
  "no route …"), never dropped; it is routed again when the routes change (next
  start) or on ``dermgate spool retry``.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Literal

from pydantic import Field, field_validator

from gateway.core.capture import DeviceClass
from gateway.core.config.base import _Strict

__all__ = ["PRIORITY_HIGH", "PRIORITY_NORMAL", "RouteMatch", "RouteSettings", "sop_class_uid"]

#: ``deliveries.priority`` of a ``priority = "high"`` route (higher goes first).
PRIORITY_HIGH = 1
#: ``deliveries.priority`` otherwise.
PRIORITY_NORMAL = 0

_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")


@cache
def _sop_classes_by_name() -> dict[str, str]:
    from pydicom._uid_dict import UID_dictionary

    names: dict[str, str] = {}
    for uid, entry in UID_dictionary.items():
        name, kind, _info, _retired, keyword = entry
        if kind != "SOP Class":
            continue
        names[_squash(name)] = uid
        names[_squash(keyword)] = uid
    return names


def _squash(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def sop_class_uid(value: str) -> str:
    """The SOP Class UID ``value`` names: a UID as is, or a keyword or name pydicom knows
    (``"DermoscopicPhotographyImageStorage"``, ``"Dermoscopic Photography Image Storage"``;
    case, spaces and punctuation do not matter). Raises :class:`ValueError`."""
    text = value.strip()
    if _UID.match(text):
        if len(text) > 64:
            raise ValueError(f"{text[:20]}…: a UID has at most 64 characters")
        return text
    uid = _sop_classes_by_name().get(_squash(text))
    if uid is None:
        raise ValueError(
            f"{value!r} is neither a UID nor a SOP class name (write e.g. "
            '"DermoscopicPhotographyImageStorage" or "1.2.840.10008.5.1.4.1.1.77.1.7")'
        )
    return uid


def _listed(value: object) -> object:
    """A single value stands for a list of one (``driver = "x"`` = ``driver = ["x"]``)."""
    return [value] if isinstance(value, str) else value


class RouteMatch(_Strict):
    """``[routes.match]``: what a capture must be for its route to apply."""

    device_class: list[DeviceClass] = Field(
        default_factory=list,
        description="Device classes: one or a list; the capture's device is any of them.",
    )
    driver: list[str] = Field(
        default_factory=list,
        description="Driver ids (`[[devices]] driver`): one or a list.",
    )
    device: list[str] = Field(
        default_factory=list,
        description="Configured device names (`[[devices]] name`, or `DRIVER-N` without "
        "one): one or a list.",
    )
    sop_class: list[str] = Field(
        default_factory=list,
        description="SOP classes of the written object, by UID, keyword or name "
        '(`"DermoscopicPhotographyImageStorage"`, `"VL Photographic Image Storage"`): '
        "one or a list.",
    )
    sensitive: bool | None = Field(
        default=None,
        description="`true`: only captures flagged sensitive (by a technician, the session "
        "or `[[context.sensitive]]`); `false`: only unflagged ones. A capture flagged after "
        "arrival is routed again while not yet sent.",
    )

    @field_validator("device_class", "driver", "device", "sop_class", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return _listed(value)

    @field_validator("sop_class")
    @classmethod
    def _sop_classes(cls, value: list[str]) -> list[str]:
        return [sop_class_uid(v) for v in value]

    @field_validator("driver", "device")
    @classmethod
    def _not_blank(cls, value: list[str]) -> list[str]:
        if any(not v.strip() for v in value):
            raise ValueError("an empty name matches nothing")
        return value

    def matches(
        self,
        *,
        device_class: str | None,
        driver: str,
        device: str | None,
        sop_class_uid: str | None,
        sensitive: bool,
    ) -> bool:
        """Whether a capture with these facts satisfies every key given."""
        if self.device_class and device_class not in self.device_class:
            return False
        if self.driver and driver not in self.driver:
            return False
        if self.device and device not in self.device:
            return False
        if self.sop_class and sop_class_uid not in self.sop_class:
            return False
        return self.sensitive is None or self.sensitive == sensitive


class RouteSettings(_Strict):
    """One ``[[routes]]`` entry: captures matching ``match`` go to ``to``."""

    match: RouteMatch = Field(
        default_factory=RouteMatch,
        description="What the capture must be (every key given must hold), as a table "
        '(below) or inline: `match = { device_class = "confocal-microscope" }`. Absent or '
        "empty: every capture.",
        json_schema_extra={"doc_default": "`{}`"},
    )
    to: list[str] = Field(
        min_length=1,
        description='Destination names (`[[destinations]] name`), e.g. `["pacs", "research"]`.',
    )
    priority: Literal["normal", "high"] = Field(
        default="normal",
        description='`"high"`: these deliveries are sent before every normal one waiting '
        "for the same destination (an urgent consult jumps a backlog).",
    )

    @field_validator("to", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return _listed(value)

    def priority_value(self) -> int:
        """The ``deliveries.priority`` this route gives."""
        return PRIORITY_HIGH if self.priority == "high" else PRIORITY_NORMAL
