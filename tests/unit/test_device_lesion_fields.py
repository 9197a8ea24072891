"""How each device protocol carries a lesion: the confocal stack header's optional
fields, the scanner manifest's fields and the photo folder's EXIF lesion tag.

Old devices (no lesion fields) keep working; present but invalid values are refused
(confocal header, manifest) or ignored (a photo's tag), never passed on.
"""

from __future__ import annotations

import dataclasses
import io
from datetime import date

import pytest

from drivers.photo_folder.exif import read_exif
from drivers.photo_folder.lesion_tag import LesionTag, format_lesion_tag, parse_lesion_tag
from drivers.photo_folder.offers import offer_for
from drivers.photo_folder.photos import FileIdentity, Photo
from drivers.photo_folder.simulator import make_photo
from drivers.scanner_export.manifest import ExportRefused, LesionFields, parse_manifest
from drivers.usb_confocal.driver import offer_for as confocal_offer
from drivers.usb_confocal.messages import StackHeader
from drivers.usb_confocal.sim_device import plan_stack
from gateway.driver_api import ContentType, Laterality
from tests.support.scanner_export import manifest_for, textured_files

# --- USB confocal ---------------------------------------------------------------------


def _header(**lesion: str) -> dict[str, object]:
    stack = plan_stack(
        0, prefix="S", frames=2, first_frames=0, mosaic=False, width=8, height=8, bits=8
    )
    return {**stack.header.to_json(), **lesion}


def test_confocal_header_carries_the_lesion_to_the_offer() -> None:
    """Lesion fields in the header become the offer's; a header without them is still valid."""
    header = StackHeader.from_json(
        _header(anatomic_site="66643007", laterality="L", lesion_id="L3")
    )
    assert StackHeader.from_json(header.to_json()) == header
    offer = confocal_offer(header)
    assert (offer.anatomic_site, offer.laterality, offer.lesion_id) == (
        "66643007",
        Laterality.LEFT,
        "L3",
    )
    old = confocal_offer(StackHeader.from_json(_header()))
    assert (old.anatomic_site, old.laterality, old.lesion_id) == (None, None, None)
    assert "lesion_id" not in StackHeader.from_json(_header()).to_json()


@pytest.mark.parametrize(
    "bad",
    [
        {"anatomic_site": "SCT:66643007"},
        {"anatomic_site": "back"},
        {"laterality": "left"},
        {"lesion_id": ""},
        {"lesion_id": "L\n3"},
        {"lesion_id": "x" * 65},
    ],
)
def test_confocal_header_with_a_bad_lesion_field_is_invalid(bad: dict[str, str]) -> None:
    """A present but invalid value makes the header invalid, naming the field."""
    with pytest.raises(ValueError, match=next(iter(bad))):
        StackHeader.from_json(_header(**bad))


# --- scanner export -------------------------------------------------------------------


def _manifest(**fields: object) -> bytes:
    return manifest_for(textured_files(), **fields)


def test_manifest_lesion_fields() -> None:
    """Optional; ``SCT:`` prefix accepted; absent means not said."""
    parsed = parse_manifest(
        _manifest(anatomic_site="SCT:66643007", laterality="R", lesion_id=" L12 "), date.today()
    )
    assert parsed.lesion == LesionFields("66643007", "R", "L12")
    assert parse_manifest(_manifest(), date.today()).lesion == LesionFields()


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"anatomic_site": "skin of back"}, "anatomic site"),
        ({"anatomic_site": 66643007}, "anatomic site"),
        ({"laterality": "X"}, "laterality"),
        ({"lesion_id": "L1\\L2"}, "lesion id"),
        ({"lesion_id": "x" * 65}, "lesion id"),
    ],
)
def test_manifest_with_a_bad_lesion_field_is_refused(fields: dict[str, object], words: str) -> None:
    """A bad lesion field refuses the export with a reason naming the field."""
    with pytest.raises(ExportRefused, match=words):
        parse_manifest(_manifest(**fields), date.today())


# --- photo folder ---------------------------------------------------------------------


def test_lesion_tag_round_trip_and_lenient_parsing() -> None:
    """The simulator's tag parses back; bad values and unknown keys are ignored."""
    tag = format_lesion_tag("L03", "SCT:66643007", "L")
    assert parse_lesion_tag(tag) == LesionTag("L03", "66643007", "L")
    assert parse_lesion_tag("dermgate:site=66643007") == LesionTag(None, "66643007", None)
    assert parse_lesion_tag("DermGate: lesion=a\\b; site=back; laterality=Q; x=1") == LesionTag()
    assert parse_lesion_tag("Jane Doe, mole on back") == LesionTag()
    assert parse_lesion_tag(None) == LesionTag()


@pytest.mark.parametrize("fmt", ["jpeg", "png", "tiff"])
def test_photo_lesion_tag_reaches_the_offer(fmt: str) -> None:
    """A photo whose EXIF ImageDescription is a lesion tag offers that lesion."""
    data = make_photo(
        1, width=64, height=48, fmt=fmt, description=format_lesion_tag("L3", "66643007", "B")
    )
    exif = read_exif(io.BytesIO(data))
    photo = Photo(ContentType.JPEG, exif, "0" * 64, FileIdentity(0, 0, len(data), 0))
    offer = offer_for(photo)
    assert (offer.lesion_id, offer.anatomic_site, offer.laterality) == (
        "L3",
        "66643007",
        Laterality.BOTH,
    )


def test_other_image_descriptions_are_dropped_unread() -> None:
    """A description that is not a lesion tag never leaves the EXIF reader."""
    data = make_photo(1, width=64, height=48, description="Doe^Jane 1970-01-31 left shoulder")
    exif = read_exif(io.BytesIO(data))
    assert exif.lesion_tag is None
    assert "Doe" not in repr(dataclasses.asdict(exif))
    offer = offer_for(Photo(ContentType.JPEG, exif, "0" * 64, FileIdentity(0, 0, len(data), 0)))
    assert (offer.lesion_id, offer.anatomic_site, offer.laterality) == (None, None, None)
