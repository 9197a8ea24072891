"""Encapsulated OBJ / MTL / STL writer (gateway.dicom.surface).

Every object passes the pinned dciodvfy (which knows the three IODs) with zero
errors (``tests/e2e/test_dicom_surface.py``); the document comes back byte for byte (odd lengths padded, Encapsulated
Document Length exact); links name the right UIDs with a valid UR value; the same
capture wraps to the same bytes; memory stays flat for a large mesh.
"""

from __future__ import annotations

import os
import tracemalloc
from pathlib import Path

import pydicom
import pytest

from gateway.core.capture import (
    CaptureOffer,
    ContentType,
)
from gateway.dicom.errors import WrapError
from gateway.dicom.job import WrapJob
from gateway.dicom.surface import (
    VL_PHOTOGRAPHIC_SOP_CLASS,
    ModelRole,
    write_encapsulated_3d,
)
from tests.support.scanner_export import MTL_TEXT, OBJ_TEXT
from tests.support.surface_capture import (
    MTL_LINK,
    TEXTURE_LINK,
    surface_job,
    surface_links,
)


def test_links_name_uids_and_percent_encoded_uris(tmp_path: Path) -> None:
    dest = tmp_path / "mtl.dcm"
    write_encapsulated_3d(
        surface_job(
            tmp_path, ContentType.MTL, MTL_TEXT, surface_links(ModelRole.MATERIAL, (TEXTURE_LINK,))
        ),
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
    job = surface_job(
        tmp_path, ContentType.OBJ, OBJ_TEXT, surface_links(ModelRole.MESH, (MTL_LINK,))
    )
    write_encapsulated_3d(job, tmp_path / "a.dcm")
    write_encapsulated_3d(job, tmp_path / "b.dcm")
    assert (tmp_path / "a.dcm").read_bytes() == (tmp_path / "b.dcm").read_bytes()


def test_large_mesh_is_streamed_with_flat_memory(tmp_path: Path) -> None:
    source = tmp_path / "big.stl"
    size = 64 * 1024 * 1024 + 1
    with source.open("wb") as fh:
        fh.truncate(size)  # sparse: 64 MiB of zeros without writing them
    job = surface_job(tmp_path, ContentType.STL, b"", surface_links(ModelRole.MESH))
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
    job = surface_job(tmp_path, ContentType.OBJ, OBJ_TEXT, surface_links(ModelRole.MESH))
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
    empty = surface_job(tmp_path, ContentType.STL, b"", surface_links(ModelRole.MESH))
    with pytest.raises(WrapError, match="empty"):
        write_encapsulated_3d(empty, tmp_path / "y.dcm")
    assert not (tmp_path / "x.dcm").exists()
    assert not (tmp_path / "y.dcm").exists()
