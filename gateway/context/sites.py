"""The CID 4029 Dermatology Anatomic Site catalogue, searchable.

All 207 concepts of DICOM CID 4029 as pydicom ships them (PS3.16; SNOMED CT "skin
of …" sites plus FMA and DCM codes; copied in :mod:`gateway.dicom.codes`), for the
page's searchable site list (the accessible alternative to the body map) and for
validating the site of a lesion request. A site is referred to as ``SCHEME:VALUE``
(``SCT:66643007``); a bare value (``66643007``) means the SNOMED CT concept, or the
one concept with that value in another scheme.

Laterality is not part of a site: it is coded separately (CID 244).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Final

from gateway.dicom.codes import CID4029

__all__ = ["CID", "CONTEXT_UID", "Site", "all_sites", "search_sites", "site"]

#: The context group: CID 4029 "Dermatology Anatomic Site".
CID: Final = 4029
#: Its Context Group UID (PS3.16).
CONTEXT_UID: Final = "1.2.840.10008.6.1.1268"


@dataclass(frozen=True, slots=True)
class Site:
    """One CID 4029 concept: code value, coding scheme and meaning."""

    value: str
    scheme: str
    meaning: str

    @property
    def ref(self) -> str:
        """``SCHEME:VALUE``, as requests and the page refer to it."""
        return f"{self.scheme}:{self.value}"


@cache
def all_sites() -> tuple[Site, ...]:
    """Every CID 4029 concept, ordered by meaning."""
    found = {
        (code.scheme_designator, code.value): Site(code.value, code.scheme_designator, code.meaning)
        for code in CID4029
    }
    return tuple(sorted(found.values(), key=lambda s: (s.meaning.lower(), s.ref)))


@cache
def _by_ref() -> dict[str, Site]:
    return {s.ref: s for s in all_sites()}


@cache
def _by_value() -> dict[str, tuple[Site, ...]]:
    table: dict[str, list[Site]] = {}
    for s in all_sites():
        table.setdefault(s.value, []).append(s)
    return {value: tuple(sites) for value, sites in table.items()}


def site(code_ref: str) -> Site | None:
    """The concept ``code_ref`` names (``SCT:66643007``, ``sct:66643007`` or a bare
    ``66643007``), or None when it is not in CID 4029 (or a bare value is ambiguous)."""
    text = code_ref.strip()
    if ":" in text:
        scheme, _, value = text.partition(":")
        return _by_ref().get(f"{scheme.strip().upper()}:{value.strip()}")
    sct = _by_ref().get(f"SCT:{text}")
    if sct is not None:
        return sct
    others = _by_value().get(text, ())
    return others[0] if len(others) == 1 else None


def search_sites(text: str) -> list[Site]:
    """Sites whose meaning or code contains every word of ``text`` (case-insensitive);
    all of them for an empty search."""
    words = text.lower().split()
    return [
        s for s in all_sites() if all(w in s.meaning.lower() or w in s.ref.lower() for w in words)
    ]
