"""A front and back body outline as inline SVG, each region a CID 4029 site with laterality.

The page shows it during a session so a technician can add a lesion by tapping where
it is; the searchable CID 4029 list (:mod:`gateway.context.sites`) is the accessible
alternative with every site (the map has only the common ones).

**Sides are the patient's.** The front view shows the patient facing you, so the
patient's *right* is on the *viewer's left*; the back view shows the patient from
behind, so the patient's right is on the viewer's right. Every region says its side
in its accessible title ("Right thigh, front"), and each view marks the sides with
"R" and "L" next to the figure.

Regions are simple rounded rectangles and circles in a 200 × 460 user-unit view box,
each at least :data:`MIN_TARGET` units on each side: drawn at the page's width (at
least 320 CSS pixels) a unit is at least 1.6 px, so every region is a touch target
of at least 44 × 44 px.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal

from gateway.core.capture import Laterality

__all__ = ["MIN_TARGET", "REGIONS", "VIEW_BOX", "BodyRegion", "body_map_svg", "regions"]

View = Literal["front", "back"]

#: The SVG view box (user units): 200 wide, 460 high.
VIEW_BOX: Final = (0, 0, 200, 460)
#: The smallest width and height of a region, in user units (44 px at 1.6 px/unit).
MIN_TARGET: Final = 28
_MID: Final = VIEW_BOX[2] / 2

Shape = (
    tuple[Literal["rect"], float, float, float, float]
    | tuple[Literal["circle"], float, float, float]
)


@dataclass(frozen=True, slots=True)
class BodyRegion:
    """One tappable region: a CID 4029 site (``scheme``, ``value``) with laterality.

    ``shape`` is ``("rect", x, y, width, height)`` or ``("circle", cx, cy, r)`` in
    the view box; ``label`` names it for people ("Right thigh, front").
    """

    key: str
    view: View
    label: str
    scheme: str
    value: str
    laterality: Laterality
    shape: Shape

    @property
    def site_ref(self) -> str:
        """``SCHEME:VALUE`` of the region's site (as a lesion request takes it)."""
        return f"{self.scheme}:{self.value}"

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        """(x, y, width, height) of the region in the view box."""
        if self.shape[0] == "rect":
            _, x, y, w, h = self.shape
            return x, y, w, h
        _, cx, cy, r = self.shape
        return cx - r, cy - r, 2 * r, 2 * r


def _mirror(shape: Shape) -> Shape:
    if shape[0] == "rect":
        _, x, y, w, h = shape
        return ("rect", VIEW_BOX[2] - x - w, y, w, h)
    _, cx, cy, r = shape
    return ("circle", VIEW_BOX[2] - cx, cy, r)


def _one(view: View, name: str, label: str, code: str, shape: Shape) -> BodyRegion:
    scheme, _, value = code.partition(":")
    return BodyRegion(
        f"{view}-{name}", view, f"{label}, {view}", scheme, value, Laterality.UNPAIRED, shape
    )


def _pair(view: View, name: str, label: str, code: str, viewer_left: Shape) -> list[BodyRegion]:
    """Both sides of a paired region; ``viewer_left`` is the shape on the viewer's left
    (the patient's right in the front view, the patient's left in the back view)."""
    scheme, _, value = code.partition(":")
    left_is_right = view == "front"
    out = []
    for side, shape in ((True, viewer_left), (False, _mirror(viewer_left))):
        right = side == left_is_right
        lat = Laterality.RIGHT if right else Laterality.LEFT
        word = "Right" if right else "Left"
        out.append(
            BodyRegion(
                f"{view}-{name}-{lat.value}",
                view,
                f"{word} {label}, {view}",
                scheme,
                value,
                lat,
                shape,
            )
        )
    return out


def _front() -> list[BodyRegion]:
    v: View = "front"
    return [
        _one(v, "forehead", "Forehead", "SCT:68698007", ("rect", 72, 4, 56, 28)),
        *_pair(v, "cheek", "cheek", "SCT:36141000", ("rect", 72, 32, 28, 34)),
        _one(v, "neck", "Neck", "SCT:11584001", ("rect", 84, 66, 32, 28)),
        *_pair(v, "chest", "chest", "SCT:244106003", ("rect", 58, 94, 42, 56)),
        *_pair(v, "breast", "breast (areola)", "SCT:72005009", ("circle", 80, 126, 14)),
        _one(v, "upper-abdomen", "Upper abdomen", "SCT:699935000", ("rect", 62, 150, 76, 32)),
        _one(v, "lower-abdomen", "Lower abdomen", "SCT:699914002", ("rect", 62, 182, 76, 32)),
        *_pair(v, "groin", "groin", "SCT:39687006", ("rect", 58, 214, 28, 30)),
        _one(v, "genitals", "External genitalia", "SCT:60944009", ("rect", 86, 214, 28, 30)),
        *_pair(v, "upper-arm", "upper arm", "SCT:45981001", ("rect", 26, 94, 30, 70)),
        *_pair(v, "forearm", "forearm", "SCT:70559009", ("rect", 20, 166, 30, 70)),
        *_pair(v, "palm", "palm", "SCT:70887009", ("rect", 14, 238, 34, 34)),
        *_pair(v, "thigh", "thigh", "SCT:61248009", ("rect", 62, 246, 36, 76)),
        *_pair(v, "knee", "knee", "SCT:181553006", ("rect", 64, 322, 32, 28)),
        *_pair(v, "lower-leg", "lower leg", "SCT:25763004", ("rect", 64, 350, 32, 70)),
        *_pair(v, "foot", "foot", "SCT:60496002", ("rect", 58, 420, 38, 32)),
    ]


def _back() -> list[BodyRegion]:
    v: View = "back"
    return [
        _one(v, "scalp", "Scalp", "SCT:43067004", ("rect", 72, 4, 56, 30)),
        _one(v, "occiput", "Back of head", "SCT:79951008", ("rect", 72, 34, 56, 32)),
        _one(v, "nape", "Nape of neck", "SCT:4658004", ("rect", 84, 66, 32, 28)),
        *_pair(v, "upper-back", "upper back", "SCT:699893008", ("rect", 58, 94, 42, 40)),
        *_pair(v, "mid-back", "mid back", "DCM:130323", ("rect", 58, 134, 42, 40)),
        *_pair(v, "lower-back", "lower back", "SCT:113182001", ("rect", 62, 174, 38, 40)),
        *_pair(v, "buttock", "buttock", "SCT:22180002", ("rect", 58, 214, 42, 40)),
        _one(v, "perianal", "Perianal skin", "SCT:59112000", ("rect", 86, 222, 28, 30)),
        *_pair(v, "upper-arm", "upper arm", "SCT:72939005", ("rect", 26, 94, 30, 70)),
        *_pair(v, "forearm", "forearm", "SCT:41550009", ("rect", 20, 166, 30, 70)),
        *_pair(v, "hand", "back of hand", "SCT:281642007", ("rect", 14, 238, 34, 34)),
        *_pair(v, "thigh", "thigh", "SCT:4578000", ("rect", 62, 254, 36, 68)),
        *_pair(v, "knee", "back of knee", "SCT:84507004", ("rect", 64, 322, 32, 28)),
        *_pair(v, "calf", "calf", "SCT:47224004", ("rect", 64, 350, 32, 70)),
        *_pair(v, "heel", "heel", "SCT:84607009", ("rect", 58, 420, 38, 32)),
    ]


#: Every region of both views, drawing order (later regions lie on top).
REGIONS: Final[tuple[BodyRegion, ...]] = (*_front(), *_back())


def regions(view: View) -> list[BodyRegion]:
    """The regions of one view, in drawing order."""
    return [r for r in REGIONS if r.view == view]


def _shape_svg(shape: Shape) -> str:
    if shape[0] == "rect":
        _, x, y, w, h = shape
        return f'<rect x="{x:g}" y="{y:g}" width="{w:g}" height="{h:g}" rx="6"/>'
    _, cx, cy, r = shape
    return f'<circle cx="{cx:g}" cy="{cy:g}" r="{r:g}"/>'


_STYLE: Final = (
    "<style>"
    ".bm-region rect,.bm-region circle{fill:#f1d7c4;stroke:#6b4f3f;stroke-width:1}"
    ".bm-region circle{fill:#e2b8a0}"
    ".bm-region:hover rect,.bm-region:hover circle,"
    ".bm-region:focus rect,.bm-region:focus circle{fill:#ffd166;stroke-width:2.5}"
    ".bm-side{font:bold 14px sans-serif;fill:#333}"
    "</style>"
)


def body_map_svg(view: View, *, href: Callable[[BodyRegion], str]) -> str:
    """The inline SVG of one view: each region an ``<a>`` to ``href(region)`` with an
    accessible ``<title>`` (side, part, view and the site's code), sides marked R/L."""
    (x0, y0, width, height) = VIEW_BOX
    viewer_left, viewer_right = ("R", "L") if view == "front" else ("L", "R")
    caption = (
        "Body map, front: the patient's right is on your left"
        if view == "front"
        else "Body map, back: the patient's right is on your right"
    )
    parts = [
        f'<svg class="body-map" xmlns="http://www.w3.org/2000/svg" '
        f'viewBox="{x0} {y0} {width} {height}" role="group" '
        f'aria-label="{html.escape(caption)}" data-view="{view}" '
        'style="width:100%;min-width:320px;max-width:480px;height:auto">',
        _STYLE,
        f"<title>{html.escape(caption)}</title>",
        f'<text class="bm-side" x="6" y="20" aria-hidden="true">{viewer_left}</text>',
        f'<text class="bm-side" x="{width - 16}" y="20" aria-hidden="true">{viewer_right}</text>',
    ]
    for region in regions(view):
        title = f"{region.label} ({region.site_ref})"
        parts.append(
            f'<a class="bm-region" href="{html.escape(href(region))}" '
            f'aria-label="{html.escape(region.label)}" data-site="{region.site_ref}" '
            f'data-laterality="{region.laterality.value}" data-key="{region.key}">'
            f"<title>{html.escape(title)}</title>{_shape_svg(region.shape)}</a>"
        )
    parts.append("</svg>")
    return "".join(parts)
