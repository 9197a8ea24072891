"""The CID 4029 catalogue and the body map the page embeds.

Every region is a real CID 4029 site, the sides are the patient's (mirrored between
the front and back views), every region is a touch target with an accessible name,
and the searchable list finds sites by meaning or code.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import Counter

import pytest

from gateway.context.body_map import (
    MIN_TARGET,
    REGIONS,
    VIEW_BOX,
    BodyRegion,
    body_map_svg,
    regions,
)
from gateway.context.sites import all_sites, search_sites, site
from gateway.core.capture import Laterality

SVG = "{http://www.w3.org/2000/svg}"


def test_catalogue_has_every_cid_4029_concept() -> None:
    """All 207 concepts, SCT, FMA and DCM, each once."""
    sites = all_sites()
    assert len(sites) == 207
    assert Counter(s.scheme for s in sites) == {"SCT": 148, "FMA": 35, "DCM": 24}
    assert len({s.ref for s in sites}) == 207


def test_site_accepts_scheme_prefixed_and_bare_codes() -> None:
    """``SCT:…``, lower-case scheme and bare values resolve; others are None."""
    back = site("SCT:66643007")
    assert back is not None
    assert back.meaning == "Skin of back"
    assert site("66643007") == back == site(" sct:66643007 ")
    mid_back = site("130323")
    assert mid_back is not None
    assert mid_back.ref == "DCM:130323"
    assert site("SCT:130323") is None  # a DCM value under the wrong scheme
    assert site("12345") is None
    assert site("") is None
    assert site("SCT:") is None


def test_search_matches_meaning_and_code_case_insensitively() -> None:
    """Words must all match, in meaning or code; empty search lists everything."""
    assert {s.meaning for s in search_sites("FOREARM anterior")} == {
        "Skin of anterior surface of forearm"
    }
    assert [s.ref for s in search_sites("43067004")] == ["SCT:43067004"]
    assert [s.ref for s in search_sites("dcm:130323")] == ["DCM:130323"]
    assert len(search_sites("breast")) == 4
    assert len(search_sites("")) == 207
    assert search_sites("no such place") == []


def test_every_region_is_a_cid_4029_site() -> None:
    """The map writes no code outside CID 4029, and its regions are distinct."""
    for region in REGIONS:
        found = site(region.site_ref)
        assert found is not None, region.key
        assert found.ref == region.site_ref
    assert len({r.key for r in REGIONS}) == len(REGIONS)
    assert len({(r.view, r.site_ref, r.laterality) for r in REGIONS}) == len(REGIONS)


@pytest.mark.parametrize("view", ["front", "back"])
def test_sides_are_the_patients(view: str) -> None:
    """Front: the patient's right is on the viewer's left; back: on the viewer's right.
    Paired regions are mirror images; midline ones are unpaired."""
    middle = VIEW_BOX[2] / 2
    for region in regions(view):  # type: ignore[arg-type]
        x, _, w, _ = region.bbox
        centre = x + w / 2
        if region.laterality is Laterality.UNPAIRED:
            assert centre == pytest.approx(middle), region.key
            continue
        on_viewer_left = centre < middle
        patient_right = region.laterality is Laterality.RIGHT
        assert on_viewer_left == (patient_right == (view == "front")), region.key
        word = "Right" if patient_right else "Left"
        assert region.label.startswith(word), region.key


def test_sensitive_sites_are_on_the_map() -> None:
    """Genital, perianal and breast regions exist where CID 4029 has them."""
    refs = {r.site_ref for r in REGIONS}
    assert {"SCT:60944009", "SCT:59112000", "SCT:72005009"} <= refs


def test_regions_are_touch_targets() -> None:
    """Each region is at least MIN_TARGET units both ways (44 px at 320 px width)."""
    assert VIEW_BOX[2] / 320 * 44 <= MIN_TARGET
    for region in REGIONS:
        _, _, w, h = region.bbox
        assert min(w, h) >= MIN_TARGET, region.key


@pytest.mark.parametrize("view", ["front", "back"])
def test_svg_links_every_region_with_a_title(view: str) -> None:
    """The SVG parses; each region is an <a> to its href with an accessible title."""

    def href(region: BodyRegion) -> str:
        return f"/lesion?site={region.site_ref}&side={region.laterality.value}"

    root = ET.fromstring(body_map_svg(view, href=href))  # type: ignore[arg-type]
    assert root.tag == f"{SVG}svg"
    caption = root.get("aria-label") or ""
    assert ("right is on your left" in caption) == (view == "front")
    links = root.findall(f"{SVG}a")
    expected = regions(view)  # type: ignore[arg-type]
    assert len(links) == len(expected)
    for link, region in zip(links, expected, strict=True):
        assert link.get("href") == href(region)
        title = link.find(f"{SVG}title")
        assert title is not None
        assert title.text is not None
        assert title.text.startswith(region.label)
        assert region.site_ref in title.text
        assert link.get("aria-label") == region.label
        assert link.get("data-laterality") == region.laterality.value


def test_href_is_escaped() -> None:
    """An href with markup characters cannot break out of the attribute."""
    svg = body_map_svg("front", href=lambda r: '"><script>x</script>')
    assert "<script>" not in svg
    ET.fromstring(svg)
