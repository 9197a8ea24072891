"""End to end: simulated scanner workstation → export folder → gateway → real Orthanc.

The simulator writes realistic exports (a body mesh of a few MB here, its MTL and
two JPEG textures, the manifest last) into a real folder; ``dermgate run`` with the
``scanner-export`` driver picks them up. Checked in Orthanc: every object of an
export in one study, the right SOP classes, links that resolve (OBJ → MTL, MTL →
textures), the patient from the manifest in every object; dciodvfy finds no error;
the patient's name and id appear neither in the gateway log nor in ``spool list``;
a SIGKILL of the gateway mid-export and a restart give every object exactly once.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import unquote

import pydicom
import pytest

from gateway.demo.local_orthanc import OrthancProcess
from tests.support.dciodvfy import dciodvfy_errors
from tests.support.gateway_process import GatewayProcess, gateway_config
from tests.support.scanner_export import (
    MTL_SOP,
    OBJ_SOP,
    STL_SOP,
    VL_PHOTO_SOP,
    Simulator,
    devices_toml,
    spool_listing,
    start_simulator,
    stored_datasets,
    study_instances,
)
from tests.support.state import ledger_rows, states
from tests.support.waiting import wait_for

PATIENT_NAME = "Lindqvist^Åsa"
PATIENT_ID = "PID-778812"


@pytest.fixture
def simulators() -> Iterator[list[Simulator]]:
    """Simulators started by a test; killed at the end if still running."""
    started: list[Simulator] = []
    yield started
    for sim in started:
        sim.close()


def _config(tmp_path: Path, orthanc: OrthancProcess, folder: Path) -> Path:
    return gateway_config(
        tmp_path, pacs_port=orthanc.dicom_port, commit_via=orthanc, devices=devices_toml(folder)
    )


def test_textured_export_reaches_orthanc_as_one_linked_study(
    tmp_path: Path,
    orthanc: OrthancProcess,
    gateway_factory: Callable[[Path], GatewayProcess],
    simulators: list[Simulator],
) -> None:
    folder = tmp_path / "exports"
    folder.mkdir()
    config = _config(tmp_path, orthanc, folder)
    gateway = gateway_factory(config)
    gateway.wait_running()
    sim = start_simulator(
        folder,
        tmp_path / "report.json",
        "--mesh-mb",
        "3",
        "--patient-name",
        PATIENT_NAME,
        "--patient-id",
        PATIENT_ID,
        "--birth-date",
        "19791224",
        "--sex",
        "F",
    )
    simulators.append(sim)
    assert sim.wait(180) == 0, gateway.log()
    report = sim.result()
    assert len(report["acknowledged"]) == 1
    export_name = report["acknowledged"][0]
    assert PATIENT_NAME.split("^")[0] in export_name, "the export folder carries the patient name"
    state_dir = tmp_path / "state"
    wait_for(lambda: states(state_dir) == ["COMMITTED"] * 4, 90, "4 objects COMMITTED")

    rows = ledger_rows(state_dir)
    studies = {r["study_uid"] for r in rows}
    assert len(studies) == 1, "all files of one export share one study"
    # The mesh and its materials were written once: straight into their DICOM files.
    models = [r for r in rows if r["sop_class_uid"] in (OBJ_SOP, MTL_SOP)]
    assert [r["raw_name"] for r in models] == ["", ""], "no raw copy of a model"
    ids = study_instances(orthanc, studies.pop())
    assert len(ids) == 4
    by_class: dict[str, list[pydicom.Dataset]] = {}
    for path, ds in stored_datasets(orthanc, ids, tmp_path / "stored"):
        assert dciodvfy_errors(path) == [], f"{ds.SOPClassUID.name}: {dciodvfy_errors(path)}"
        by_class.setdefault(str(ds.SOPClassUID), []).append(ds)
        assert str(ds.PatientName) == PATIENT_NAME
        assert ds.PatientID == PATIENT_ID
        assert ds.PatientBirthDate == "19791224"
        assert ds.PatientSex == "F"
    assert Counter({k: len(v) for k, v in by_class.items()}) == Counter(
        {OBJ_SOP: 1, MTL_SOP: 1, VL_PHOTO_SOP: 2}
    )
    obj, mtl = by_class[OBJ_SOP][0], by_class[MTL_SOP][0]
    textures = {str(t.SOPInstanceUID): t for t in by_class[VL_PHOTO_SOP]}
    assert obj.Modality == mtl.Modality == "M3D"
    assert obj.MIMETypeOfEncapsulatedDocument == "model/obj"
    assert mtl.MIMETypeOfEncapsulatedDocument == "model/mtl"
    # The OBJ names its MTL by the string in its own text, and by the MTL's UIDs.
    (link,) = obj.ReferencedInstanceSequence
    assert link.ReferencedSOPInstanceUID == mtl.SOPInstanceUID
    assert link.ReferencedSOPClassUID == MTL_SOP
    document = bytes(obj.EncapsulatedDocument)[: obj.EncapsulatedDocumentLength]
    mtl_name = unquote(link.RelativeURIReferenceWithinEncapsulatedDocument)
    assert f"mtllib {mtl_name}\n".encode() in document
    # The MTL names each texture; every one resolves to a stored texture.
    material_text = bytes(mtl.EncapsulatedDocument)[: mtl.EncapsulatedDocumentLength]
    assert {r.ReferencedSOPInstanceUID for r in mtl.ReferencedInstanceSequence} == set(textures)
    for ref in mtl.ReferencedInstanceSequence:
        texture_name = unquote(ref.RelativeURIReferenceWithinEncapsulatedDocument)
        assert f"map_Kd {texture_name}\n".encode() in material_text
        assert ref.ReferencedSOPClassUID == VL_PHOTO_SOP
    # The document is the scanner's file, byte for byte.
    processed = folder / ".processed" / export_name
    obj_file = next(processed.glob("*.obj"))
    assert len(document) == obj_file.stat().st_size > 2_000_000
    assert hashlib.sha256(document).digest() == hashlib.sha256(obj_file.read_bytes()).digest()
    assert sorted(t.InstanceNumber for t in textures.values()) == [1, 2]
    assert {t.SeriesNumber for t in textures.values()} == {3}

    # No patient data outside the DICOM objects.
    listing = spool_listing(config)
    given = PATIENT_NAME.split("^")[1]
    for secret in (PATIENT_NAME, PATIENT_NAME.split("^")[0], given, PATIENT_ID, export_name):
        assert secret not in gateway.log(), f"{secret!r} leaked into the gateway log"
        assert secret not in listing, f"{secret!r} leaked into spool list"
    assert gateway.stop() == 0


def test_stl_export_with_garbage_and_reoffer(
    tmp_path: Path,
    orthanc: OrthancProcess,
    gateway_factory: Callable[[Path], GatewayProcess],
    simulators: list[Simulator],
) -> None:
    """Kit faults: a junk entry is refused with a reason; a re-copied export is processed
    again without a second object; an unplugged copy is never sent half."""
    folder = tmp_path / "exports"
    folder.mkdir()
    config = _config(tmp_path, orthanc, folder)
    gateway = gateway_factory(config)
    gateway.wait_running()
    sim = start_simulator(
        folder,
        tmp_path / "report.json",
        "--stl",
        "--mesh-mb",
        "1",
        "--scans",
        "2",
        "--garbage",
        "--reoffer",
        "--unplug-mid-transfer",
        "--seed",
        "7",
    )
    simulators.append(sim)
    assert sim.wait(180) == 0, gateway.log()
    report = sim.result()
    assert len(report["acknowledged"]) == 2
    assert report["offered"] == 5  # 2 exports, 1 junk, 2 re-copies
    (junk,) = report["refused"]
    assert junk["id"].startswith("junk-")
    assert "not an export" in junk["reason"]
    state_dir = tmp_path / "state"
    wait_for(lambda: states(state_dir) == ["COMMITTED"] * 2, 90, "2 STL objects COMMITTED")
    assert orthanc.count_instances() == 2
    for row in ledger_rows(state_dir):
        (orthanc_id,) = orthanc.find_instances(row["sop_instance_uid"])
        path = tmp_path / f"{orthanc_id}.dcm"
        path.write_bytes(orthanc.instance_file(orthanc_id))
        assert dciodvfy_errors(path) == []
        ds = pydicom.dcmread(path)
        assert ds.SOPClassUID == STL_SOP
        assert ds.MeasurementUnitsCodeSequence[0].CodeValue == "mm"
    for name in report["acknowledged"]:
        assert (folder / ".processed" / name).is_dir()
        assert (folder / ".processed" / f"{name}.2").is_dir()
    assert gateway.stop() == 0


def test_gateway_killed_mid_export_sends_every_object_exactly_once(
    tmp_path: Path,
    orthanc: OrthancProcess,
    gateway_factory: Callable[[Path], GatewayProcess],
    simulators: list[Simulator],
) -> None:
    folder = tmp_path / "exports"
    folder.mkdir()
    config = _config(tmp_path, orthanc, folder)
    gateway = gateway_factory(config)
    gateway.wait_running()
    sim = start_simulator(folder, tmp_path / "report.json", "--mesh-mb", "12", "--scans", "2")
    simulators.append(sim)
    state_dir = tmp_path / "state"
    # Kill once some, but not all, files of the first export are in the spool.
    wait_for(lambda: 1 <= len(ledger_rows(state_dir)) < 4, 120, "the export half captured", 0.02)
    gateway.kill()
    captured_before = len(ledger_rows(state_dir))
    assert not (folder / ".processed").exists() or not any((folder / ".processed").iterdir()), (
        "nothing is acknowledged before all of the export is durable"
    )
    time.sleep(1.0)
    gateway = gateway_factory(config)
    assert sim.wait(240) == 0, gateway.log()
    wait_for(lambda: states(state_dir) == ["COMMITTED"] * 8, 120, "8 objects COMMITTED")
    rows = ledger_rows(state_dir)
    assert len(rows) == 8
    assert captured_before >= 1
    assert len({r["sop_instance_uid"] for r in rows}) == 8
    for row in rows:
        assert len(orthanc.find_instances(row["sop_instance_uid"])) == 1
    assert orthanc.count_instances() == 8
    assert len({r["study_uid"] for r in rows}) == 2
    assert gateway.stop() == 0
    leftovers = list((state_dir / "spool" / "staging").iterdir())
    assert leftovers == []
    assert not os.listdir(folder / ".refused")
