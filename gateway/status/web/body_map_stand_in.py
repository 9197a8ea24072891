"""STAND-IN for :mod:`gateway.context.body_map` (branch i13-lesions), until it is on main.

The page needs a front/back body outline whose regions carry a CID 4029 site and a
laterality, and a searchable list of every CID 4029 site. The lesion helper owns that
table; this module only lets the page be built and tested meanwhile: a handful of
coarse regions whose codes come from pydicom's PS3.16 tables (by keyword, no codes
typed in here), and the site list read from the same tables. Replace the imports of
this module by the real one when it lands (see :mod:`.lesion_pages`).
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.sr._cid_dict import cid_concepts
from pydicom.sr.codedict import codes

from gateway.core.capture import Laterality

__all__ = ["Region", "Site", "regions", "sites"]


@dataclass(frozen=True, slots=True)
class Site:
    """One CID 4029 concept: ``code`` as "SCHEME:VALUE", ``meaning`` its text."""

    code: str
    meaning: str


@dataclass(frozen=True, slots=True)
class Region:
    """A tappable region of the outline: ``view`` "front"/"back", a rectangle in the
    120 x 176 view box, the site and the laterality it stands for."""

    view: str
    x: float
    y: float
    w: float
    h: float
    site: Site
    laterality: Laterality


def _site(scheme: str, keyword: str) -> Site:
    code = getattr(getattr(codes, scheme), keyword)
    return Site(f"{code.scheme_designator}:{code.value}", str(code.meaning))


_R, _L, _U = Laterality.RIGHT, Laterality.LEFT, Laterality.UNPAIRED
# (keyword, x, y, w, h, laterality) per view; on the front the patient's right is
# the viewer's left, on the back it is the viewer's right.
_FRONT = [
    ("SkinOfFace", 45, 2, 30, 26, _U),
    ("SkinOfChest", 38, 32, 44, 32, _U),
    ("SkinOfAbdomen", 38, 64, 44, 28, _U),
    ("SkinOfAnteriorSurfaceOfUpperArm", 18, 32, 18, 40, _R),
    ("SkinOfAnteriorSurfaceOfUpperArm", 84, 32, 18, 40, _L),
    ("SkinOfHand", 14, 74, 22, 20, _R),
    ("SkinOfHand", 84, 74, 22, 20, _L),
    ("SkinOfAnteriorSurfaceOfThigh", 38, 94, 21, 34, _R),
    ("SkinOfAnteriorSurfaceOfThigh", 61, 94, 21, 34, _L),
    ("SkinOfAnteriorSurfaceOfLowerLeg", 38, 130, 21, 24, _R),
    ("SkinOfAnteriorSurfaceOfLowerLeg", 61, 130, 21, 24, _L),
    ("SkinOfFoot", 34, 156, 25, 17, _R),
    ("SkinOfFoot", 61, 156, 25, 17, _L),
]
_BACK = [
    ("SkinOfScalp", 45, 2, 30, 26, _U),
    ("SkinOfBack", 38, 32, 44, 29, _U),
    ("SkinOfLowerBack", 38, 61, 44, 17, _U),
    ("SkinOfButtock", 38, 78, 21, 16, _L),
    ("SkinOfButtock", 61, 78, 21, 16, _R),
    ("SkinOfPosteriorSurfaceOfUpperArm", 18, 32, 18, 40, _L),
    ("SkinOfPosteriorSurfaceOfUpperArm", 84, 32, 18, 40, _R),
    ("SkinOfHand", 14, 74, 22, 20, _L),
    ("SkinOfHand", 84, 74, 22, 20, _R),
    ("SkinOfPosteriorSurfaceOfThigh", 38, 94, 21, 34, _L),
    ("SkinOfPosteriorSurfaceOfThigh", 61, 94, 21, 34, _R),
    ("SkinOfPosteriorSurfaceOfLowerLeg", 38, 130, 21, 24, _L),
    ("SkinOfPosteriorSurfaceOfLowerLeg", 61, 130, 21, 24, _R),
    ("SkinOfFoot", 34, 156, 25, 17, _L),
    ("SkinOfFoot", 61, 156, 25, 17, _R),
]


def regions() -> list[Region]:
    """The tappable regions of both views."""
    return [
        Region(view, x, y, w, h, _site("SCT", kw), lat)
        for view, table in (("front", _FRONT), ("back", _BACK))
        for kw, x, y, w, h, lat in table
    ]


def sites(search: str = "") -> list[Site]:
    """Every CID 4029 site (pydicom's tables), those whose meaning or code contains
    ``search`` (case-insensitive) when given, sorted by meaning."""
    needle = search.strip().lower()
    found = [
        _site(scheme, kw) for scheme, keywords in cid_concepts[4029].items() for kw in keywords
    ]
    if needle:
        found = [s for s in found if needle in s.meaning.lower() or needle in s.code.lower()]
    return sorted(found, key=lambda s: s.meaning)
