"""Surface Scan objects (OBJ, MTL, STL) pass the pinned dciodvfy and keep the document
byte for byte. The builder's own rules are in ``tests/unit/test_dicom_surface.py``.
"""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest

from gateway.core.capture import (
    ContentType,
)
from gateway.dicom.surface import (
    ModelFileLinks,
    ModelRole,
    write_encapsulated_3d,
)
from tests.support.dciodvfy import dciodvfy_errors
from tests.support.scanner_export import MTL_SOP, MTL_TEXT, OBJ_SOP, OBJ_TEXT, STL_SOP, STL_TEXT
from tests.support.surface_capture import (
    MTL_LINK,
    PATIENT,
    TEXTURE_LINK,
    surface_job,
    surface_links,
)

CASES = [
    (ContentType.OBJ, OBJ_TEXT, surface_links(ModelRole.MESH, (MTL_LINK,)), OBJ_SOP),
    (ContentType.MTL, MTL_TEXT, surface_links(ModelRole.MATERIAL, (TEXTURE_LINK,)), MTL_SOP),
    (ContentType.STL, STL_TEXT, surface_links(ModelRole.MESH), STL_SOP),
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
    written = write_encapsulated_3d(surface_job(tmp_path, content_type, data, links), dest)
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
