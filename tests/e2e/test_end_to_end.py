"""End to end with real peers: simulator → gateway → Orthanc.

A simulated dermatoscope on a pty offers captures, ``dermgate run`` receives,
wraps and forwards them, and a real Orthanc stores them. Each instance is found in
Orthanc by SOP Instance UID, passes dciodvfy with zero errors, and its pixel data is
byte-identical to the JPEG the device sent.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydicom
from pydicom.encaps import get_frame
from pydicom.sr._cid_dict import cid_concepts
from pydicom.sr._concepts_dict import concepts

from gateway.demo.local_orthanc import OrthancProcess, free_port
from tests.support.dciodvfy import dciodvfy_errors
from tests.support.gateway_process import GatewayProcess, gateway_config
from tests.support.simulator import SimulatorProcess
from tests.support.state import ledger_rows, states
from tests.support.waiting import wait_for

DERMOSCOPY = "1.2.840.10008.5.1.4.1.1.77.1.7"


def fragment(data: bytes) -> bytes:
    """The single encapsulated JPEG fragment of a Part 10 file."""
    ds = pydicom.dcmread(io.BytesIO(data))
    return get_frame(ds.PixelData, 0, number_of_frames=1)


def test_captures_reach_orthanc_as_valid_dermoscopic_photography(
    tmp_path: Path,
    orthanc: OrthancProcess,
    gateway_factory: Callable[[Path], GatewayProcess],
    simulator_factory: Callable[..., SimulatorProcess],
) -> None:
    config = gateway_config(tmp_path, pacs_port=orthanc.dicom_port, commit_via=orthanc)
    sim = simulator_factory("--captures", "3", "--interval", "0.2")
    gateway = gateway_factory(config)

    assert sim.wait(180) == 0, gateway.log()
    report = sim.result()
    assert len(report["acknowledged"]) == 3
    state_dir = tmp_path / "state"
    wait_for(lambda: states(state_dir) == ["COMMITTED"] * 3, 60, "3 captures COMMITTED")

    rows = {r["device_capture_id"]: r for r in ledger_rows(state_dir)}
    for acked in report["acknowledged"]:
        row = rows[acked["capture_id"]]
        ids = orthanc.find_instances(row["sop_instance_uid"])
        assert len(ids) == 1, "each capture is stored exactly once"
        data = orthanc.instance_file(ids[0])
        stored = tmp_path / f"{row['sop_instance_uid']}.dcm"
        stored.write_bytes(data)
        assert dciodvfy_errors(stored) == []
        ds = pydicom.dcmread(stored)
        assert ds.SOPClassUID == DERMOSCOPY
        assert ds.Modality == "DMS"
        assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.50"
        jpeg = fragment(data)
        assert len(jpeg) in (row["raw_size"], row["raw_size"] + 1)
        assert hashlib.sha256(jpeg[: row["raw_size"]]).hexdigest() == acked["sha256"]
        assert row["raw_size"] > 1_000_000, "the simulator sends realistic, multi-MB JPEGs"
    assert orthanc.count_instances() == 3
    assert_site_and_lesion_reach_pacs(orthanc, rows)
    spool = state_dir / "spool"
    assert list((spool / "raw").iterdir()) == [], "one copy on disk: straight into DICOM"
    assert len(list((spool / "dicom").glob("*.dcm"))) == 3

    listing = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "spool", "list", "--json", "--config", str(config)],
        capture_output=True,
        text=True,
        check=True,
    )
    entries = [json.loads(line) for line in listing.stdout.splitlines()]
    assert [e["state"] for e in entries] == ["COMMITTED"] * 3
    assert {e["sop_instance_uid"] for e in entries} == {
        r["sop_instance_uid"] for r in rows.values()
    }
    assert all(e["attempts"] == 1 for e in entries)

    assert gateway.stop() == 0
    assert "stopped" in gateway.log()


def assert_site_and_lesion_reach_pacs(orthanc: OrthancProcess, rows: dict[str, Any]) -> None:
    """What the clinician chose on the device is in the PACS copy: the anatomic site as
    a SNOMED CT code of CID 4029 with its CID 244 laterality, and the lesion label. The
    simulator names no patient, so each capture has its temporary patient and the
    label is in Image Comments, not a Tracking ID/UID that would be the same "L1" for
    every patient on this dermatoscope.

    The simulator's first capture (id 000001) names a site with laterality L and lesion
    L1; its second names a site but no lesion.
    """
    first = pydicom.dcmread(
        io.BytesIO(
            orthanc.instance_file(orthanc.find_instances(rows["000001"]["sop_instance_uid"])[0])
        )
    )
    cid_4029 = set(cid_concepts[4029]["SCT"])
    site = first.AnatomicRegionSequence[0]
    assert site.CodingSchemeDesignator == "SCT"
    known = {code for keyword in cid_4029 for code in concepts["SCT"][keyword]}
    assert site.CodeValue in known
    assert first.ImageLaterality == "L"
    assert site.AnatomicRegionModifierSequence[0].CodeValue == "7771000"  # SCT "Left"
    assert first.PatientID == f"TMP-test-box-01-{rows['000001']['id']}"
    assert "TrackingID" not in first
    assert "TrackingUID" not in first
    assert "L1" in first.ImageComments
    second = pydicom.dcmread(
        io.BytesIO(
            orthanc.instance_file(orthanc.find_instances(rows["000002"]["sop_instance_uid"])[0])
        )
    )
    assert "AnatomicRegionSequence" in second
    assert "TrackingUID" not in second, "no lesion chosen: no tracking identifiers invented"


def test_captures_without_patient_are_separate_patients_in_orthanc(
    tmp_path: Path,
    orthanc: OrthancProcess,
    gateway_factory: Callable[[Path], GatewayProcess],
    simulator_factory: Callable[..., SimulatorProcess],
) -> None:
    """Two captures without a patient (each also re-offered by the device) become two
    patients in Orthanc, not one blank patient, each named TMP-<gateway id>-<spool id>
    with issuer <gateway id>-TEMP and an empty name."""
    sim = simulator_factory("--captures", "2", "--interval", "0.1", "--reoffer-acked")
    gateway = gateway_factory(gateway_config(tmp_path, pacs_port=orthanc.dicom_port))
    assert sim.wait(180) == 0, gateway.log()
    state_dir = tmp_path / "state"
    wait_for(lambda: states(state_dir) == ["SENT", "SENT"], 60, "delivery")
    assert "acknowledged again" in gateway.log()
    rows = ledger_rows(state_dir)
    assert len(rows) == 2
    patients = orthanc.rest("GET", "/patients?expand")
    assert len(patients) == 2, "one Orthanc patient per capture"
    found = {
        (p["MainDicomTags"].get("PatientID"), p["MainDicomTags"].get("PatientName", ""))
        for p in patients
    }
    assert found == {(f"TMP-test-box-01-{row['id']}", "") for row in rows}
    for row in rows:
        (instance,) = orthanc.find_instances(row["sop_instance_uid"])
        ds = pydicom.dcmread(io.BytesIO(orthanc.instance_file(instance)))
        assert ds.PatientID == f"TMP-test-box-01-{row['id']}"
        assert ds.IssuerOfPatientID == "test-box-01-TEMP"
        assert ds.PatientName == ""
    assert orthanc.count_instances() == 2
    assert gateway.stop() == 0


def test_pacs_down_at_start_then_delivered_with_same_uids(
    tmp_path: Path,
    gateway_factory: Callable[[Path], GatewayProcess],
    simulator_factory: Callable[..., SimulatorProcess],
) -> None:
    """Captures are acknowledged and kept while the PACS is away, and sent once it is back."""
    dicom_port = free_port()
    config = gateway_config(tmp_path, pacs_port=dicom_port)
    sim = simulator_factory("--captures", "2", "--interval", "0.1")
    gateway = gateway_factory(config)
    assert sim.wait(120) == 0, gateway.log()
    state_dir = tmp_path / "state"

    def retried() -> bool:
        rows = ledger_rows(state_dir)
        return len(rows) == 2 and all(r["state"] == "WRAPPED" for r in rows)

    wait_for(retried, 30, "captures kept as WRAPPED while the PACS is down")
    before = {r["id"]: r["sop_instance_uid"] for r in ledger_rows(state_dir)}
    listing = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "spool", "list", "--config", str(config)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "unreachable" in listing.stdout

    pacs = OrthancProcess(tmp_path / "late-orthanc", dicom_port=dicom_port)
    pacs.start()
    try:
        wait_for(lambda: states(state_dir) == ["SENT", "SENT"], 60, "delivery after PACS returns")
        after = {r["id"]: r["sop_instance_uid"] for r in ledger_rows(state_dir)}
        assert after == before
        for spool_id, uid in after.items():
            (instance,) = pacs.find_instances(uid)
            resent = pydicom.dcmread(io.BytesIO(pacs.instance_file(instance)))
            assert resent.PatientID == f"TMP-test-box-01-{spool_id}", "same ID on the re-send"
    finally:
        pacs.stop()
    assert gateway.stop() == 0
