"""Encapsulated OBJ / MTL / STL writer (gateway.dicom.surface), checked with dciodvfy.

Every object passes the pinned dciodvfy (which knows the three IODs) with zero
errors; the document comes back byte for byte (odd lengths padded, Encapsulated
Document Length exact); links name the right UIDs with a valid UR value; the same
capture wraps to the same bytes; memory stays flat for a large mesh.
"""

from __future__ import annotations

import os
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path

import pydicom
import pytest

from gateway.capture import (
    CaptureOffer,
    ContentType,
    DeviceClass,
    DeviceIdentity,
    GatewayIdentity,
    InstanceUIDs,
    PatientContext,
)
from gateway.dicom.errors import WrapError
from gateway.dicom.job import WrapJob
from gateway.dicom.surface import (
    VL_PHOTOGRAPHIC_SOP_CLASS,
    LinkedInstance,
    ModelFileLinks,
    ModelRole,
    write_encapsulated_3d,
)
from tests.support.dciodvfy import dciodvfy_errors
from tests.support.scanner_export import MTL_SOP, MTL_TEXT, OBJ_SOP, OBJ_TEXT, STL_SOP, STL_TEXT

IDENTITY = DeviceIdentity(
    "DermGate Reference Devices", "TB-3D", "TB3D-1", ("4.2.0",), DeviceClass.BODY_SCANNER
)
GATEWAY = GatewayIdentity("box-1", "0.1.0")
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
PATIENT = PatientContext("山田^太郎", "P-1", "", "19800101", "M")
STUDY = "2.25.1000"
MTL_LINK = LinkedInstance("body file.mtl", MTL_SOP, "2.25.1002", "2.25.10021")
TEXTURE_LINK = LinkedInstance("Åsa skin.jpg", VL_PHOTOGRAPHIC_SOP_CLASS, "2.25.1003", "2.25.10031")


def _job(tmp_path: Path, content_type: ContentType, data: bytes, links: ModelFileLinks) -> WrapJob:
    source = tmp_path / f"source.{content_type.name.lower()}"
    source.write_bytes(data)
    offer = CaptureOffer(
        device_capture_id="x",
        acquired_at=datetime(2026, 11, 30, 10, 15),
        content_type=content_type,
        extra=links.to_extra(),
        patient=PATIENT,
    )
    uids = InstanceUIDs(STUDY, f"2.25.100{links.series_number}", f"2.25.9{links.series_number}")
    return WrapJob(IDENTITY, offer, uids, source, GATEWAY, NOW)


def _links(role: ModelRole, refs: tuple[LinkedInstance, ...] = ()) -> ModelFileLinks:
    series = {ModelRole.MESH: 1, ModelRole.MATERIAL: 2, ModelRole.TEXTURE: 3}[role]
    frame = "2.25.777" if role is ModelRole.MESH else ""
    return ModelFileLinks(role, series, 1, "ab" * 32, refs, frame, "mm")


CASES = [
    (ContentType.OBJ, OBJ_TEXT, _links(ModelRole.MESH, (MTL_LINK,)), OBJ_SOP),
    (ContentType.MTL, MTL_TEXT, _links(ModelRole.MATERIAL, (TEXTURE_LINK,)), MTL_SOP),
    (ContentType.STL, STL_TEXT, _links(ModelRole.MESH), STL_SOP),
]


@pytest.mark.parametrize(("content_type", "data", "links", "sop_class"), CASES)
@pytest.mark.parametrize("odd", [False, True])
def test_object_passes_dciodvfy_and_keeps_the_document(
    tmp_path: Path,
    content_type: ContentType,
    data: bytes,
    links: ModelFileLinks,
    sop_class: str,
    odd: bool,
) -> None:
    data = data + (b"\n" if (len(data) % 2 == 0) == odd else b"")
    assert len(data) % 2 == int(odd)
    dest = tmp_path / "out.dcm"
    written = write_encapsulated_3d(_job(tmp_path, content_type, data, links), dest)
    assert written.sop_class_uid == sop_class
    assert dciodvfy_errors(dest) == []
    ds = pydicom.dcmread(dest)
    assert ds.SOPClassUID == sop_class
    assert ds.Modality == "M3D"
    assert ds.MIMETypeOfEncapsulatedDocument == str(content_type)
    assert ds.EncapsulatedDocumentLength == len(data)
    assert len(ds.EncapsulatedDocument) == len(data) + (len(data) & 1)
    assert bytes(ds.EncapsulatedDocument)[: len(data)] == data
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    assert str(ds.PatientName) == PATIENT.patient_name
    assert ds.MeasurementUnitsCodeSequence[0].CodeValue == "mm"
    assert ds.MeasurementUnitsCodeSequence[0].CodingSchemeDesignator == "UCUM"
    assert ds.SeriesNumber == links.series_number
    assert ds.InstanceNumber == 1
    assert ("FrameOfReferenceUID" in ds) == (content_type is not ContentType.MTL)


def test_links_name_uids_and_percent_encoded_uris(tmp_path: Path) -> None:
    dest = tmp_path / "mtl.dcm"
    write_encapsulated_3d(
        _job(tmp_path, ContentType.MTL, MTL_TEXT, _links(ModelRole.MATERIAL, (TEXTURE_LINK,))),
        dest,
    )
    ds = pydicom.dcmread(dest)
    (item,) = ds.ReferencedInstanceSequence
    assert item.ReferencedSOPInstanceUID == TEXTURE_LINK.sop_instance_uid
    assert item.ReferencedSOPClassUID == VL_PHOTOGRAPHIC_SOP_CLASS
    assert item.RelativeURIReferenceWithinEncapsulatedDocument == "%C3%85sa%20skin.jpg"
    # Common Instance Reference: the same instance, listed under its series.
    (series,) = ds.ReferencedSeriesSequence
    assert series.SeriesInstanceUID == TEXTURE_LINK.series_uid
    assert series.ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == (
        TEXTURE_LINK.sop_instance_uid
    )


def test_same_capture_wraps_to_the_same_bytes(tmp_path: Path) -> None:
    job = _job(tmp_path, ContentType.OBJ, OBJ_TEXT, _links(ModelRole.MESH, (MTL_LINK,)))
    write_encapsulated_3d(job, tmp_path / "a.dcm")
    write_encapsulated_3d(job, tmp_path / "b.dcm")
    assert (tmp_path / "a.dcm").read_bytes() == (tmp_path / "b.dcm").read_bytes()


def test_large_mesh_is_streamed_with_flat_memory(tmp_path: Path) -> None:
    source = tmp_path / "big.stl"
    size = 64 * 1024 * 1024 + 1
    with source.open("wb") as fh:
        fh.truncate(size)  # sparse: 64 MiB of zeros without writing them
    job = _job(tmp_path, ContentType.STL, b"", _links(ModelRole.MESH))
    job = WrapJob(job.identity, job.offer, job.uids, source, job.gateway, job.now)
    dest = tmp_path / "big.dcm"
    tracemalloc.start()
    try:
        write_encapsulated_3d(job, dest)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB for a 64 MiB document"
    ds = pydicom.dcmread(dest, stop_before_pixels=True, defer_size=1024)
    assert ds.EncapsulatedDocumentLength == size
    assert os.path.getsize(dest) > size


def test_missing_links_or_empty_file_are_quarantined_with_a_reason(tmp_path: Path) -> None:
    job = _job(tmp_path, ContentType.OBJ, OBJ_TEXT, _links(ModelRole.MESH))
    bare = WrapJob(
        job.identity,
        CaptureOffer("x", content_type=ContentType.OBJ),
        job.uids,
        job.source,
        job.gateway,
        job.now,
    )
    with pytest.raises(WrapError, match="export links"):
        write_encapsulated_3d(bare, tmp_path / "x.dcm")
    empty = _job(tmp_path, ContentType.STL, b"", _links(ModelRole.MESH))
    with pytest.raises(WrapError, match="empty"):
        write_encapsulated_3d(empty, tmp_path / "y.dcm")
    assert not (tmp_path / "x.dcm").exists()
    assert not (tmp_path / "y.dcm").exists()
