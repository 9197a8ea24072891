"""Every DICOM object DermGate writes carries its capture's context (gateway.dicom.context).

One capture of each IOD family is wrapped without and with a worklist-style context
(non-ASCII names, issuer, accession, request attributes, a lesion with site,
laterality and tracking, sensitive codes); the files are read back and checked
attribute by attribute, and dciodvfy (the confocal checker for the confocal IODs)
must report no error the object without context does not have, and no attribute
outside the IOD.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, replace
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset

from gateway.core.capture import CaptureOffer
from gateway.core.context import Coded, LesionContext
from gateway.core.patient import lesion_label_comment
from gateway.dicom.context import SENSITIVE_CONTENT_CODE_SEQUENCE, apply_context, sensitive_items
from gateway.dicom.jpeg import read_jpeg_info
from gateway.dicom.writers import begin_inline, jpeg_dataset, write_capture
from tests.support import confocal_iod
from tests.support.capture_contexts import (
    CONFOCAL_KINDS,
    CONTEXT,
    DOCUMENT_KINDS,
    KINDS,
    LESION,
    PATIENT,
    REQUEST,
    SENSITIVE,
    STUDY_UID,
    TRACKING_KINDS,
    UNSCHEDULED,
    base_job,
    with_context,
)
from tests.support.dciodvfy import dciodvfy_path


@dataclass(frozen=True)
class Written:
    """One capture wrapped without and with the worklist context."""

    kind: str
    plain: Path
    bound: Path


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Written]:
    root = tmp_path_factory.mktemp("context")
    objects = {}
    for kind in KINDS:
        job = base_job(kind, root / kind)
        plain, bound = root / f"{kind}-plain.dcm", root / f"{kind}-bound.dcm"
        write_capture(job, plain)
        write_capture(with_context(job, CONTEXT), bound)
        objects[kind] = Written(kind, plain, bound)
    return objects


def _codes(items: object) -> list[tuple[str, str, str]]:
    return [
        (
            str(item.get("CodeValue") or item.get("LongCodeValue")),
            str(item.CodingSchemeDesignator),
            str(item.CodeMeaning),
        )
        for item in items  # type: ignore[attr-defined]
    ]


def _coded(*codes: Coded) -> list[tuple[str, str, str]]:
    return [(c.value, c.scheme, c.meaning) for c in codes]


@pytest.mark.parametrize("kind", KINDS)
def test_every_object_carries_patient_order_and_study(
    written: dict[str, Written], kind: str
) -> None:
    ds = pydicom.dcmread(written[kind].bound, stop_before_pixels=True)
    # Patient, as the worklist gave it (UTF-8 round trip of non-ASCII names)
    assert str(ds.PatientName) == "Müller-Ødegård^Jürgen"
    assert (ds.PatientID, ds.IssuerOfPatientID) == ("PID0042", "HOSP-A")
    assert (ds.PatientBirthDate, ds.PatientSex) == ("19700102", "M")
    # General Study: the worklist's study and order
    assert ds.StudyInstanceUID == STUDY_UID
    assert ds.AccessionNumber == "ACC0001"
    assert str(ds.ReferringPhysicianName) == "Weiß^Anna"
    assert ds.StudyID == "RP0001"
    assert ds.StudyDescription == "Dermoscopy follow-up"
    assert _codes(ds.ProcedureCodeSequence) == _coded(*REQUEST.requested_procedure_codes)
    assert "ReferencedStudySequence" not in ds  # no SOP class to reference it with
    # General Series (Encapsulated Document Series for the 3D documents)
    assert ds.SeriesDescription == "Dermatoscope, skin of forearm, lesion L03"
    (request,) = ds.RequestAttributesSequence
    assert request.RequestedProcedureID == "RP0001"
    assert request.AccessionNumber == "ACC0001"
    assert request.StudyInstanceUID == STUDY_UID
    assert request.RequestedProcedureDescription == "Dermoscopy follow-up"
    assert _codes(request.RequestedProcedureCodeSequence) == _coded(
        *REQUEST.requested_procedure_codes
    )
    assert request.ScheduledProcedureStepID == "SPS0001"
    assert request.ScheduledProcedureStepDescription == "Dermoscopy, left forearm"
    assert _codes(request.ScheduledProtocolCodeSequence) == _coded(*REQUEST.protocol_codes)
    assert request.ScheduledProtocolCodeSequence[1].LongCodeValue == "PROTOCOL-RCM-ZSTACK-0001"
    assert _codes(ds.PerformedProtocolCodeSequence) == _coded(*REQUEST.protocol_codes)
    if kind in DOCUMENT_KINDS:
        assert "OperatorsName" not in ds
    else:
        assert str(ds.OperatorsName) == "Šimić^Tina"
    # SOP Common: Sensitive Content Code Sequence, by tag
    assert _codes(ds[SENSITIVE_CONTENT_CODE_SEQUENCE].value) == _coded(*SENSITIVE)
    assert ds.SeriesNumber is not None  # the builder's, untouched


@pytest.mark.parametrize("kind", KINDS)
def test_the_lesion_names_site_side_and_tracking_where_the_iod_has_them(
    written: dict[str, Written], kind: str
) -> None:
    plain = pydicom.dcmread(written[kind].plain, stop_before_pixels=True)
    ds = pydicom.dcmread(written[kind].bound, stop_before_pixels=True)
    if kind in TRACKING_KINDS:
        assert (ds.TrackingID, ds.TrackingUID) == (LESION.tracking_id, LESION.tracking_uid)
    else:
        assert "TrackingID" not in ds
        assert "TrackingUID" not in ds
    assert ds.get("ImageComments") != lesion_label_comment("L-07")
    if kind in DOCUMENT_KINDS:
        assert "AnatomicRegionSequence" not in ds
        assert "ImageLaterality" not in ds
        return
    forearm = ("70559009", "SCT", "Skin of anterior surface of forearm")
    assert ds.ImageLaterality == "R"
    assert "Laterality" not in ds  # Series Laterality only without Image Laterality
    if kind in CONFOCAL_KINDS:
        (anatomy,) = ds.SharedFunctionalGroupsSequence[0].FrameAnatomySequence
        assert _codes(anatomy.AnatomicRegionSequence) == [forearm]
        assert anatomy.FrameLaterality == "R"
        assert "AnatomicRegionSequence" not in ds
    else:
        (region,) = ds.AnatomicRegionSequence
        assert _codes([region]) == [forearm]
        assert _codes(region.AnatomicRegionModifierSequence) == [("24028007", "SCT", "Right")]
    # the image comments the builder wrote for other reasons stay
    if "ImageComments" in plain and plain.ImageComments != lesion_label_comment("L-07"):
        assert ds.ImageComments == plain.ImageComments


def _verdict(path: Path) -> tuple[list[str], list[str]]:
    """dciodvfy's errors, and its "not present in standard DICOM IOD" warnings."""
    result = subprocess.run(
        [str(dciodvfy_path()), str(path)], capture_output=True, text=True, check=False
    )
    lines = (result.stdout + result.stderr).splitlines()
    errors = [line for line in lines if line.startswith("Error")]
    outside = [line for line in lines if "not present in standard DICOM IOD" in line]
    return errors, outside


@pytest.mark.parametrize("kind", KINDS)
def test_the_context_adds_no_error_and_nothing_outside_the_iod(
    written: dict[str, Written], kind: str
) -> None:
    if kind in CONFOCAL_KINDS:  # dciodvfy has no Confocal Microscopy IOD
        plain = confocal_iod.iod_errors(pydicom.dcmread(written[kind].plain))
        assert confocal_iod.iod_errors(pydicom.dcmread(written[kind].bound)) == plain == []
        return
    plain_errors, plain_outside = _verdict(written[kind].plain)
    errors, outside = _verdict(written[kind].bound)
    assert errors == plain_errors
    assert outside == plain_outside == []


@pytest.mark.parametrize("kind", ["dermoscopy", "z-stack", "sc16", "stl"])
def test_an_unscheduled_capture_has_no_accession_and_no_request(tmp_path: Path, kind: str) -> None:
    job = with_context(base_job(kind, tmp_path), UNSCHEDULED)
    write_capture(job, tmp_path / "out.dcm")
    ds = pydicom.dcmread(tmp_path / "out.dcm", stop_before_pixels=True)
    assert (ds.PatientID, str(ds.PatientName)) == ("PID0099", "Doe^Jane")
    assert ds.StudyInstanceUID == "2.25.99001"
    assert ds.AccessionNumber == ""  # present (type 2), empty: never invented
    assert ds.ReferringPhysicianName == ""
    assert ds.StudyID == ""
    for keyword in (
        "RequestAttributesSequence",
        "ProcedureCodeSequence",
        "PerformedProtocolCodeSequence",
        "TrackingID",
        "TrackingUID",
        "OperatorsName",
    ):
        assert keyword not in ds
    assert SENSITIVE_CONTENT_CODE_SEQUENCE not in ds
    assert ds.StudyDescription == "Dermatology"
    if kind == "dermoscopy":  # no lesion: the device's site and side stay
        assert ds.AnatomicRegionSequence[0].CodeValue == "79951008"
        assert ds.ImageLaterality == "L"


def test_without_a_context_the_objects_are_as_before(written: dict[str, Written]) -> None:
    for kind in KINDS:
        ds = pydicom.dcmread(written[kind].plain, stop_before_pixels=True)
        for keyword in (
            "RequestAttributesSequence",
            "ProcedureCodeSequence",
            "PerformedProtocolCodeSequence",
            "StudyDescription",
            "SeriesDescription",
            "OperatorsName",
        ):
            assert keyword not in ds, (kind, keyword)
        assert SENSITIVE_CONTENT_CODE_SEQUENCE not in ds
        assert ds.AccessionNumber == ""
    # the temporary patient's lesion label stays a comment, not a Tracking UID
    derm = pydicom.dcmread(written["dermoscopy"].plain, stop_before_pixels=True)
    assert derm.PatientID.startswith("TMP-")
    assert derm.ImageComments == lesion_label_comment("L-07")
    assert "TrackingUID" not in derm


def test_the_inline_path_writes_the_wrappers_file(tmp_path: Path) -> None:
    job = with_context(base_job("dermoscopy", tmp_path), CONTEXT)
    write_capture(job, tmp_path / "wrapped.dcm")
    received = job.source.read_bytes()
    jpeg = read_jpeg_info(job.source)
    start = begin_inline(
        identity=job.identity,
        offer=job.offer,
        uids=job.uids,
        jpeg=jpeg,
        received=received,
        gateway=job.gateway,
        now=job.now,
        patient_spool_id=job.patient_spool_id,
        context=job.context,
    )
    assert start is not None
    assert start.start + start.end == (tmp_path / "wrapped.dcm").read_bytes()


def test_the_devices_patient_field_does_not_change_the_object(tmp_path: Path) -> None:
    """Intake may not copy the context's patient into the offer: same object either way."""
    job = with_context(base_job("dermoscopy", tmp_path), CONTEXT)
    jpeg = read_jpeg_info(job.source)
    common = {"identity": job.identity, "uids": job.uids, "jpeg": jpeg, "gateway": job.gateway}
    with_patient = jpeg_dataset(**common, offer=job.offer, now=job.now, context=CONTEXT)  # type: ignore[arg-type]
    without = jpeg_dataset(
        **common,  # type: ignore[arg-type]
        offer=replace(job.offer, patient=None),
        now=job.now,
        patient_spool_id=11,
        context=CONTEXT,
    )
    assert with_patient == without


def test_a_lesion_without_a_known_site_keeps_the_devices_site(tmp_path: Path) -> None:
    unplaced = replace(CONTEXT, lesion=LesionContext("L04", "2.25.44", site=None))
    job = with_context(base_job("dermoscopy", tmp_path), unplaced)
    write_capture(job, tmp_path / "out.dcm")
    ds = pydicom.dcmread(tmp_path / "out.dcm", stop_before_pixels=True)
    assert ds.AnatomicRegionSequence[0].CodeValue == "79951008"  # the device's
    assert ds.ImageLaterality == "L"
    assert (ds.TrackingID, ds.TrackingUID) == ("L04", "2.25.44")


def test_a_dcm_site_of_cid_4029_is_written_with_its_meaning(tmp_path: Path) -> None:
    back = replace(CONTEXT, lesion=replace(LESION, site="130323", site_scheme="DCM"))
    job = with_context(base_job("mosaic", tmp_path), back)
    write_capture(job, tmp_path / "out.dcm")
    ds = pydicom.dcmread(tmp_path / "out.dcm", stop_before_pixels=True)
    (region,) = ds.SharedFunctionalGroupsSequence[0].FrameAnatomySequence[0].AnatomicRegionSequence
    assert _codes([region]) == [("130323", "DCM", "Skin of mid back")]


def test_sensitive_codes_are_appended_and_upstream_ones_never_dropped() -> None:
    upstream = Coded("UP-1", "99UPSTREAM", "Flagged by the device")
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.104.3"  # Encapsulated STL
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = (
        upstream.value,
        upstream.scheme,
        upstream.meaning,
    )
    ds.add_new(SENSITIVE_CONTENT_CODE_SEQUENCE, "SQ", [item])
    bare = CaptureOffer(device_capture_id="x")
    apply_context(ds, CONTEXT, bare)
    assert sensitive_items(ds) == [upstream, *SENSITIVE]
    apply_context(ds, CONTEXT, bare)  # applied again: no duplicate
    assert sensitive_items(ds) == [upstream, *SENSITIVE]
    # moved to a context without flags: the previous context's go, upstream stays
    apply_context(ds, UNSCHEDULED, bare, replaced_sensitive=SENSITIVE)
    assert sensitive_items(ds) == [upstream]


def test_a_context_without_patient_id_is_refused(tmp_path: Path) -> None:
    nobody = replace(CONTEXT, patient=replace(PATIENT, patient_id=" "))
    with pytest.raises(ValueError, match="Patient ID"):
        write_capture(with_context(base_job("dermoscopy", tmp_path), nobody), tmp_path / "x.dcm")
    assert not (tmp_path / "x.dcm").exists()
