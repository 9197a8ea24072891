"""The lesion tag: how a photo in the folder says which lesion (and site) it shows.

A camera has no field for a lesion, so DermGate defines a convention for the EXIF
**ImageDescription** (IFD0 tag 0x010E), which cameras, phone apps and copy tools
(``exiftool -ImageDescription=…``) can all write::

    DermGate: lesion=L03; site=SCT:66643007; laterality=L

The description must start with ``DermGate:`` (any case); then ``key=value`` pairs
separated by ``;``, each optional, in any order:

* ``lesion``: the lesion label (1 to 64 printable characters, no backslash); it
  becomes the Tracking ID within the session's patient;
* ``site``: a SNOMED CT code value from DICOM CID 4029, bare or as ``SCT:VALUE``;
* ``laterality``: ``R``, ``L``, ``B`` or ``U``.

A description that does not start with ``DermGate:`` is not a tag: it is dropped
when the EXIF is read and never goes anywhere (it may name a person). A value
that breaks a rule is ignored (the photo is still taken, without it); unknown keys
are ignored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

__all__ = ["PREFIX", "LesionTag", "format_lesion_tag", "is_lesion_tag", "parse_lesion_tag"]

#: What an ImageDescription starts with to be a lesion tag (compared case-insensitively).
PREFIX: Final = "DermGate:"
_SCT_CODE: Final = re.compile(r"[0-9]{6,18}")
_LATERALITIES: Final = frozenset({"R", "L", "B", "U"})


@dataclass(frozen=True, slots=True)
class LesionTag:
    """The lesion a photo's tag names; each None when not said (or not valid)."""

    lesion_id: str | None = None
    anatomic_site: str | None = None
    laterality: str | None = None


def is_lesion_tag(description: str) -> bool:
    """Whether an ImageDescription is a DermGate lesion tag."""
    return description.strip().lower().startswith(PREFIX.lower())


def format_lesion_tag(
    lesion_id: str | None = None, anatomic_site: str | None = None, laterality: str | None = None
) -> str:
    """The ImageDescription naming this lesion (what the simulated camera writes)."""
    parts = []
    if lesion_id is not None:
        parts.append(f"lesion={lesion_id}")
    if anatomic_site is not None:
        parts.append(f"site={anatomic_site}")
    if laterality is not None:
        parts.append(f"laterality={laterality}")
    return f"{PREFIX} {'; '.join(parts)}"


def parse_lesion_tag(description: str | None) -> LesionTag:
    """The lesion a tag names (an empty :class:`LesionTag` for no tag)."""
    if description is None or not is_lesion_tag(description):
        return LesionTag()
    body = description.strip()[len(PREFIX) :]
    values: dict[str, str] = {}
    for part in body.split(";"):
        key, sep, value = part.partition("=")
        if sep:
            values.setdefault(key.strip().lower(), value.strip())
    label = values.get("lesion")
    if label is not None and not (
        0 < len(label) <= 64 and label.isprintable() and "\\" not in label
    ):
        label = None
    site = values.get("site")
    if site is not None:
        site = site[4:].strip() if site.upper().startswith("SCT:") else site
        if _SCT_CODE.fullmatch(site) is None:
            site = None
    side = values.get("laterality")
    side = side.upper() if side is not None and side.upper() in _LATERALITIES else None
    return LesionTag(label, site, side)
