"""The scanner-export checks on their own: manifest, OBJ, MTL, STL, textures, plan.

Hypothesis feeds arbitrary and mutated inputs to every parser: each either accepts
or raises ExportRefused (a reason for ``.refused/``), never anything else. The
plan gives the same capture ids and UIDs for the same content (a re-offer after a
crash is recognised), and none of them carries a name from the folder.
"""

from __future__ import annotations

import io
import json
import struct
from datetime import date
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers.scanner_export.export import ExportIncomplete, plan_export
from drivers.scanner_export.manifest import ExportRefused, parse_manifest
from drivers.scanner_export.mesh import check_image, check_stl, scan_mtl, scan_obj
from gateway.core.capture import ContentType
from gateway.dicom.surface import ModelFileLinks, ModelRole
from tests.support.scanner_export import (
    MTL_TEXT,
    OBJ_TEXT,
    STL_TEXT,
    manifest_for,
    texture_jpeg,
    textured_files,
    write_export,
)

TODAY = date(2026, 11, 30)
SEEDS = [OBJ_TEXT, MTL_TEXT, STL_TEXT, manifest_for(textured_files())]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid input with a few bytes changed, cut, or inserted."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "cut", "insert"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[pos] = draw(st.integers(0, 255))
        elif kind == "cut":
            del data[pos : pos + draw(st.integers(1, 20))]
        else:
            data[pos:pos] = draw(st.binary(max_size=12))
    return bytes(data)


inputs = st.one_of(st.binary(max_size=512), mutated(), st.text(max_size=300).map(str.encode))


def _only_refused(parse: object, data: bytes) -> None:
    try:
        if parse is parse_manifest:
            parse_manifest(data, TODAY)
        elif parse is check_image:
            for kind in ("JPEG", "PNG", "TIFF"):
                check_image(io.BytesIO(data), kind)
        else:
            parse(io.BytesIO(data))  # type: ignore[operator]
    except ExportRefused:
        pass


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(data=inputs)
@pytest.mark.parametrize("parse", [parse_manifest, scan_obj, scan_mtl, check_stl, check_image])
def test_fuzz_parsers_never_raise_anything_but_a_refusal(parse: object, data: bytes) -> None:
    _only_refused(parse, data)


@given(
    patient=st.dictionaries(
        st.sampled_from(["name", "id", "issuer", "birth_date", "sex"]),
        st.one_of(st.text(max_size=80), st.integers(), st.none(), st.lists(st.text(), max_size=2)),
    ),
    files=st.one_of(
        st.none(),
        st.lists(
            st.one_of(
                st.text(max_size=20),
                st.fixed_dictionaries(
                    {"name": st.text(max_size=20)},
                    optional={
                        "size": st.one_of(st.integers(-5, 10**6), st.booleans(), st.text()),
                        "sha256": st.text(max_size=70),
                    },
                ),
            ),
            max_size=4,
        ),
    ),
    scan_time=st.one_of(st.none(), st.text(max_size=30), st.integers()),
)
def test_fuzz_structured_manifests(
    patient: dict[str, object], files: object, scan_time: object
) -> None:
    raw = {
        "scanner": {"manufacturer": "A", "model": "B", "serial": "C", "software": "D"},
        "patient": patient,
        "files": files,
        "scan_time": scan_time,
    }
    try:
        manifest = parse_manifest(json.dumps(raw).encode(), TODAY)
    except ExportRefused:
        return
    for component in manifest.patient.name.replace("=", "^").split("^"):
        assert len(component) <= 64
    assert manifest.patient.sex in ("", "M", "F", "O")
    assert manifest.patient.birth_date == "" or len(manifest.patient.birth_date) == 8


def test_obj_summary_and_material_libraries() -> None:
    summary = scan_obj(io.BytesIO(OBJ_TEXT + b"mtllib extra.mtl body.mtl\n"))
    assert summary.vertices == 4
    assert summary.faces == 2
    assert summary.material_libraries == ("body.mtl", "extra.mtl")


def test_obj_negative_indices_and_crlf_lines() -> None:
    text = b"v 0 0 0\r\nv 1 0 0\r\nv 0 1 0\r\nf -3 -2 -1\r\n"
    assert scan_obj(io.BytesIO(text)).faces == 1
    with pytest.raises(ExportRefused, match="refers to nothing"):
        scan_obj(io.BytesIO(b"v 0 0 0\nf -1 -2 -3\n"))


def test_mtl_texture_names_with_options() -> None:
    text = MTL_TEXT + b"newmtl b\nmap_Kd -s 1 1 1 -o 0 0 0 tex/back.png\nbump -bm 0.5 n.png\n"
    assert scan_mtl(io.BytesIO(text)) == ("skin.jpg", "tex/back.png", "n.png")


def test_binary_stl_size_must_match_its_triangle_count() -> None:
    triangle = struct.pack("<12fH", *([0.0] * 12), 0)
    good = b"\0" * 80 + struct.pack("<I", 2) + triangle * 2
    assert check_stl(io.BytesIO(good)) == 2
    with pytest.raises(ExportRefused):
        check_stl(io.BytesIO(good[:-10]))
    assert check_stl(io.BytesIO(STL_TEXT)) == 1
    with pytest.raises(ExportRefused, match="truncated"):
        check_stl(io.BytesIO(STL_TEXT[: STL_TEXT.index(b"endsolid")]))


def test_texture_checks() -> None:
    check_image(io.BytesIO(texture_jpeg()), "JPEG")
    with pytest.raises(ExportRefused):
        check_image(io.BytesIO(b"II*\0" + b"\0" * 10), "PNG")


def test_plan_ids_and_uids_come_from_content_not_names(tmp_path: Path) -> None:
    files = textured_files()
    a = write_export(tmp_path / "one", "Doe_Jane_1", files, patient={"name": "Doe^Jane"})
    b = write_export(tmp_path / "two", "other", files, patient={"name": "Doe^Jane"})
    plan_a, plan_b = plan_export(a, TODAY), plan_export(b, TODAY)
    assert [f.capture_id for f in plan_a.files] == [f.capture_id for f in plan_b.files]
    assert [f.uids for f in plan_a.files] == [f.uids for f in plan_b.files]
    for planned in plan_a.files:
        assert "Doe" not in planned.capture_id
        assert "Jane" not in planned.capture_id
    assert [f.content_type for f in plan_a.files] == [
        ContentType.JPEG,
        ContentType.MTL,
        ContentType.OBJ,
    ]
    assert len({f.uids.study for f in plan_a.files}) == 1
    texture, material, mesh = plan_a.files
    (mtl_link,) = ModelFileLinks.from_extra(mesh.links.to_extra()).references
    assert mtl_link.sop_instance_uid == material.uids.sop_instance
    assert mtl_link.uri == "body.mtl"
    (texture_link,) = material.links.references
    assert texture_link.sop_instance_uid == texture.uids.sop_instance
    assert texture.links.role is ModelRole.TEXTURE
    assert texture.links.to_extra()["series_number"] == 3
    assert texture.links.to_extra()["instance_number"] == 1
    assert "Doe" not in json.dumps(mesh.links.to_extra())


def test_plan_waits_for_manifest_and_short_files(tmp_path: Path) -> None:
    files = textured_files()
    root = tmp_path / "e"
    root.mkdir()
    with pytest.raises(ExportIncomplete):
        plan_export(root, TODAY)
    manifest = manifest_for(files)
    for name, data in files.items():
        (root / name).write_bytes(data[:10])
    (root / "manifest.json").write_bytes(manifest)
    with pytest.raises(ExportIncomplete):
        plan_export(root, TODAY)


def test_plan_refuses_paths_outside_the_export(tmp_path: Path) -> None:
    files = textured_files()
    files["body.mtl"] = MTL_TEXT.replace(b"skin.jpg", b"../skin.jpg")
    root = write_export(tmp_path, "e", files, listed=False)
    with pytest.raises(ExportRefused, match="texture the material library names is missing"):
        plan_export(root, TODAY)
    manifest = json.loads(manifest_for(textured_files()))
    manifest["files"][0]["name"] = "../../etc/passwd"
    other = write_export(tmp_path, "f", {}, manifest=json.dumps(manifest).encode())
    with pytest.raises(ExportRefused, match="outside the export"):
        plan_export(other, TODAY)
