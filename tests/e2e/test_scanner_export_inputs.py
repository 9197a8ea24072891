"""Bad and awkward exports, each through a real ``dermgate run`` watching a real folder.

Each damaged export must end in ``.refused/`` with a reason file in plain words
that holds no patient data, and nothing of it may be in the spool (validated
before anything is captured: never half an export). Exports still being copied
are never taken; valid non-Latin patient names are kept; correctable fields are
corrected as the manifest module documents.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest

from gateway.demo.local_orthanc import free_port
from tests.support.gateway_process import GatewayProcess, gateway_config
from tests.support.scanner_export import (
    MTL_TEXT,
    OBJ_TEXT,
    devices_toml,
    manifest_for,
    textured_files,
    write_export,
)
from tests.support.state import ledger_rows
from tests.support.waiting import wait_for

NAME = "Okonkwo^Chiamaka"
PATIENT = {"name": NAME, "id": "SECRET-4711", "birth_date": "19850214", "sex": "F"}


@dataclass
class Watched:
    """A gateway watching ``folder`` (its PACS is unreachable: nothing leaves)."""

    folder: Path
    state_dir: Path
    gateway: GatewayProcess

    def refused_reason(self, name: str, timeout: float = 30) -> str:
        """Wait for ``name`` to be refused; return its reason."""
        reason = self.folder / ".refused" / f"{name}.reason.txt"
        wait_for(reason.exists, timeout, f"{name} refused")
        assert (self.folder / ".refused" / name).exists()
        return reason.read_text(encoding="utf-8")

    def processed(self, name: str, timeout: float = 30) -> None:
        """Wait for ``name`` to be acknowledged."""
        wait_for((self.folder / ".processed" / name).exists, timeout, f"{name} processed")

    def wrapped(self, count: int) -> list[pydicom.Dataset]:
        """Wait for ``count`` DICOM files in the spool; return them."""
        dicom = self.state_dir / "spool" / "dicom"
        wait_for(lambda: len(list(dicom.glob("*.dcm"))) >= count, 30, f"{count} DICOM files")
        return [pydicom.dcmread(p) for p in sorted(dicom.glob("*.dcm"))]


@pytest.fixture
def watched(tmp_path: Path, gateway_factory: Callable[[Path], GatewayProcess]) -> Iterator[Watched]:
    folder = tmp_path / "exports"
    folder.mkdir()
    config = gateway_config(
        tmp_path, pacs_port=free_port(), devices=devices_toml(folder, incomplete_timeout=4)
    )
    gateway = gateway_factory(config)
    gateway.wait_running()
    yield Watched(folder, tmp_path / "state", gateway)
    assert gateway.stop() == 0


def _assert_refused_cleanly(w: Watched, name: str, expected: str) -> str:
    reason = w.refused_reason(name)
    assert expected in reason
    assert ledger_rows(w.state_dir) == [], "nothing of a refused export is in the spool"
    log = w.gateway.log()
    for secret in (NAME, "Okonkwo", "Chiamaka", PATIENT["id"], "19850214", name):
        assert secret not in reason
        assert secret not in log
    return reason


def test_corrupt_obj_is_refused(watched: Watched) -> None:
    files = textured_files()
    files["body.obj"] = b"mtllib body.mtl\nv 0 0 0\n\x00\x13\x9a\xff binary junk\nf 1 1 1\n"
    write_export(watched.folder, "Okonkwo_1", files, patient=PATIENT)
    _assert_refused_cleanly(watched, "Okonkwo_1", "OBJ file is not text")


def test_obj_with_a_face_pointing_nowhere_is_refused(watched: Watched) -> None:
    files = textured_files()
    files["body.obj"] = OBJ_TEXT + b"f 1/1/1 2/2/1 99/3/1\n"
    write_export(watched.folder, "Okonkwo_2", files, patient=PATIENT)
    _assert_refused_cleanly(watched, "Okonkwo_2", "refers to nothing")


@pytest.mark.parametrize(("kind", "data"), [("obj", OBJ_TEXT), ("mtl", MTL_TEXT)])
def test_truncated_obj_or_mtl_is_refused(watched: Watched, kind: str, data: bytes) -> None:
    files = textured_files()
    files[f"body.{kind}"] = data[: len(data) - 5]  # cut mid-line
    # Without sizes in the manifest only the text itself can show the truncation.
    write_export(watched.folder, "Okonkwo_3", files, patient=PATIENT, listed=False)
    _assert_refused_cleanly(watched, "Okonkwo_3", f"{kind.upper()} file ends in the middle")


def test_texture_named_but_missing_is_refused(watched: Watched) -> None:
    files = textured_files()
    del files["skin.jpg"]
    write_export(watched.folder, "Okonkwo_4", files, patient=PATIENT)
    _assert_refused_cleanly(watched, "Okonkwo_4", "texture the material library names is missing")


def test_corrupt_texture_jpeg_is_refused(watched: Watched) -> None:
    files = textured_files()
    files["skin.jpg"] = b"\xff\xd8\xff\xe0 this is not really a JPEG" * 10
    write_export(watched.folder, "Okonkwo_5", files, patient=PATIENT)
    _assert_refused_cleanly(watched, "Okonkwo_5", "texture JPEG is damaged")


def test_truncated_texture_jpeg_is_refused(watched: Watched) -> None:
    files = textured_files()
    files["skin.jpg"] = files["skin.jpg"][:-40]
    write_export(watched.folder, "Okonkwo_6", files, patient=PATIENT)
    _assert_refused_cleanly(watched, "Okonkwo_6", "End Of Image")


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("birth_date", "19851302", "birth date is not a calendar date"),
        ("birth_date", "14.02.1985", "birth date is not YYYYMMDD"),
        ("birth_date", "20991231", "birth date is after the scan"),
        ("name", "Okonkwo^" + "C" * 65, "longer than 64 characters"),
        ("name", "Okonkwo\\Chiamaka", "backslash"),
        ("sex", "unknown-ish", "sex is not M, F, O"),
        ("id", "X" * 65, "patient id is longer than 64"),
    ],
)
def test_invalid_patient_fields_are_refused_without_naming_the_value(
    watched: Watched, field: str, value: str, expected: str
) -> None:
    patient = {**PATIENT, field: value}
    write_export(watched.folder, "Okonkwo_7", textured_files(), patient=patient)
    reason = _assert_refused_cleanly(watched, "Okonkwo_7", expected)
    assert value not in reason


def test_non_latin_name_is_kept_and_correctable_fields_corrected(watched: Watched) -> None:
    """山田^太郎 is a valid DICOM name in UTF-8; 'female' and an ISO date are corrected."""
    patient = {"name": "山田^太郎=ヤマダ^タロウ", "id": "JP-1", "birth_date": "1985-02-14"}
    patient["sex"] = "female"
    files = {"body.stl": b"solid s\nfacet normal 0 0 1\nouter loop\nvertex 0 0 0\n"}
    files["body.stl"] += b"vertex 1 0 0\nvertex 0 1 0\nendloop\nendfacet\nendsolid s\n"
    write_export(watched.folder, "yamada", files, patient=patient)
    watched.processed("yamada")
    (ds,) = watched.wrapped(1)
    assert str(ds.PatientName) == "山田^太郎=ヤマダ^タロウ"
    assert ds.PatientBirthDate == "19850214"
    assert ds.PatientSex == "F"
    assert ds.PatientID == "JP-1"
    assert "山田" not in watched.gateway.log()


def test_export_without_patient_is_one_temporary_patient(watched: Watched) -> None:
    """No name is invented; the export's objects share one study, so they share one
    temporary patient: the one named after the export's first spool id."""
    write_export(watched.folder, "anon", textured_files())
    watched.processed("anon")
    objects = watched.wrapped(3)
    first = min(int(row["id"]) for row in ledger_rows(watched.state_dir))
    for ds in objects:
        assert ds.PatientName == ""
        assert ds.PatientID == f"TMP-test-box-01-{first}"
        assert ds.IssuerOfPatientID == "test-box-01-TEMP"
    assert len({ds.StudyInstanceUID for ds in objects}) == 1


def test_half_copied_export_is_never_sent(watched: Watched) -> None:
    """Files present but shorter than the manifest lists: waited for, never captured;
    once the copy completes the export is taken whole."""
    files = textured_files()
    manifest = manifest_for(files, patient=PATIENT)
    root = watched.folder / "Okonkwo_8"
    root.mkdir()
    (root / "skin.jpg").write_bytes(files["skin.jpg"])
    (root / "body.mtl").write_bytes(files["body.mtl"])
    (root / "body.obj").write_bytes(files["body.obj"][:40])
    (root / "manifest.json").write_bytes(manifest)
    # Several settle periods (0.5 s) and scans pass: nothing is captured.
    wait_for(lambda: "still being copied" in watched.gateway.log(), 20, "the copy noticed")
    assert ledger_rows(watched.state_dir) == []
    assert not (watched.folder / ".processed" / "Okonkwo_8").exists()
    (root / "body.obj").write_bytes(files["body.obj"])
    watched.processed("Okonkwo_8")
    assert len(ledger_rows(watched.state_dir)) == 3


def test_export_without_manifest_is_not_taken_and_then_refused(watched: Watched) -> None:
    files = textured_files()
    root = watched.folder / "Okonkwo_9"
    root.mkdir()
    for name, data in files.items():
        (root / name).write_bytes(data)
    reason = _assert_refused_cleanly(watched, "Okonkwo_9", "stayed incomplete")
    assert "no manifest" in reason


def test_checksum_mismatch_is_refused(watched: Watched) -> None:
    files = textured_files()
    manifest = json.loads(manifest_for(files, patient=PATIENT))
    manifest["files"][0]["sha256"] = "0" * 64
    write_export(watched.folder, "Okonkwo_10", files, manifest=json.dumps(manifest).encode("utf-8"))
    _assert_refused_cleanly(watched, "Okonkwo_10", "differs from the manifest's checksum")


@pytest.mark.parametrize(
    ("manifest", "expected"),
    [
        (b"\x00\x01not json", "not valid UTF-8 JSON"),
        (b'{"scanner": {"manufacturer": "A"}}', "does not name the scanner's model"),
        (b"[1, 2, 3]", "not a JSON object"),
    ],
)
def test_broken_manifest_is_refused(watched: Watched, manifest: bytes, expected: str) -> None:
    write_export(watched.folder, "Okonkwo_11", textured_files(), manifest=manifest)
    _assert_refused_cleanly(watched, "Okonkwo_11", expected)


def test_stray_file_is_refused(watched: Watched) -> None:
    (watched.folder / "Okonkwo.txt").write_bytes(b"hello")
    _assert_refused_cleanly(watched, "Okonkwo.txt", "not an export")
