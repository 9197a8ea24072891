"""Objects with a capture context, read by real peers: DCMTK's dcmdump and Orthanc.

A dermoscopic image and a confocal z-stack of the same lesion, taken in one worklist
session, are written with the session's context and stored into a private Orthanc
over its REST API: Orthanc files them under one patient and one study, with the
worklist's patient and study fields in its main DICOM tags, one series per device,
and both objects carry the lesion's Tracking UID.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from gateway.demo.local_orthanc import OrthancProcess
from gateway.dicom.writers import write_capture
from tests.support.capture_contexts import CONTEXT, LESION, base_job, with_context


def _store(orthanc: OrthancProcess, path: Path) -> dict[str, Any]:
    request = urllib.request.Request(
        orthanc.url + "/instances", data=path.read_bytes(), method="POST"
    )
    request.add_header("Content-Type", "application/dicom")
    with urllib.request.urlopen(request, timeout=10) as response:
        answer: dict[str, Any] = json.loads(response.read())
    assert answer["Status"] == "Success"
    return answer


def test_dcmdump_reads_an_object_with_a_context(tmp_path: Path) -> None:
    dcmdump = shutil.which("dcmdump")
    assert dcmdump is not None, "DCMTK's dcmdump is installed on this machine"
    job = with_context(base_job("dermoscopy", tmp_path / "capture"), CONTEXT)
    write_capture(job, tmp_path / "lesion.dcm")
    result = subprocess.run(
        [dcmdump, "+U8", str(tmp_path / "lesion.dcm")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    dump = result.stdout.lower()
    assert "müller-ødegård^jürgen" in dump
    assert "(0040,0275) sq" in dump  # Request Attributes Sequence
    assert "(0008,001d) sq" in dump  # Sensitive Content Code Sequence
    assert "[acc0001]" in dump
    assert LESION.tracking_uid in dump


@pytest.mark.timeout(120)
def test_orthanc_files_one_sessions_objects_under_the_worklists_patient_and_study(
    tmp_path: Path, orthanc: OrthancProcess
) -> None:
    dermoscopy = with_context(base_job("dermoscopy", tmp_path / "d"), CONTEXT)
    confocal = with_context(base_job("z-stack", tmp_path / "c"), CONTEXT)
    write_capture(dermoscopy, tmp_path / "dermoscopy.dcm")
    write_capture(confocal, tmp_path / "confocal.dcm")

    stored = [_store(orthanc, tmp_path / name) for name in ("dermoscopy.dcm", "confocal.dcm")]

    assert len(orthanc.rest("GET", "/patients")) == 1
    assert len(orthanc.rest("GET", "/studies")) == 1
    study = orthanc.rest("GET", f"/studies/{stored[0]['ParentStudy']}")
    assert study["MainDicomTags"]["StudyInstanceUID"] == CONTEXT.study_uid
    assert study["MainDicomTags"]["AccessionNumber"] == "ACC0001"
    assert study["MainDicomTags"]["StudyDescription"] == "Dermoscopy follow-up"
    assert study["MainDicomTags"]["ReferringPhysicianName"] == "Weiß^Anna"
    assert study["MainDicomTags"]["StudyID"] == "RP0001"
    patient = study["PatientMainDicomTags"]
    assert patient["PatientName"] == "Müller-Ødegård^Jürgen"
    assert patient["PatientID"] == "PID0042"
    assert (patient["PatientBirthDate"], patient["PatientSex"]) == ("19700102", "M")
    assert len(study["Series"]) == 2
    descriptions = {
        orthanc.rest("GET", f"/series/{series}")["MainDicomTags"].get("SeriesDescription")
        for series in study["Series"]
    }
    assert descriptions == {CONTEXT.series_description}
    for answer in stored:
        tags = orthanc.rest("GET", f"/instances/{answer['ID']}/simplified-tags")
        assert tags["TrackingUID"] == LESION.tracking_uid
        assert tags["IssuerOfPatientID"] == "HOSP-A"
