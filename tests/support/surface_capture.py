"""The scanner, patient, linked instances and wrap job the Surface Scan tests share."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from gateway.core.capture import (
    CaptureOffer,
    ContentType,
    DeviceClass,
    DeviceIdentity,
    GatewayIdentity,
    InstanceUIDs,
    PatientContext,
)
from gateway.dicom.job import WrapJob
from gateway.dicom.surface import (
    VL_PHOTOGRAPHIC_SOP_CLASS,
    LinkedInstance,
    ModelFileLinks,
    ModelRole,
)
from tests.support.scanner_export import MTL_SOP

IDENTITY = DeviceIdentity(
    "DermGate Reference Devices", "TB-3D", "TB3D-1", ("4.2.0",), DeviceClass.BODY_SCANNER
)


GATEWAY = GatewayIdentity("box-1", "0.1.0")


NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


PATIENT = PatientContext("山田^太郎", "P-1", "", "19800101", "M")


STUDY = "2.25.1000"


MTL_LINK = LinkedInstance("body file.mtl", MTL_SOP, "2.25.1002", "2.25.10021")


TEXTURE_LINK = LinkedInstance("Åsa skin.jpg", VL_PHOTOGRAPHIC_SOP_CLASS, "2.25.1003", "2.25.10031")


def surface_job(
    tmp_path: Path, content_type: ContentType, data: bytes, links: ModelFileLinks
) -> WrapJob:
    """The wrap job for one file of a scanner export (``data`` written under ``tmp_path``)."""
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


def surface_links(role: ModelRole, refs: tuple[LinkedInstance, ...] = ()) -> ModelFileLinks:
    """The links of one export file: its role and the instances it refers to."""
    series = {ModelRole.MESH: 1, ModelRole.MATERIAL: 2, ModelRole.TEXTURE: 3}[role]
    frame = "2.25.777" if role is ModelRole.MESH else ""
    return ModelFileLinks(role, series, 1, "ab" * 32, refs, frame, "mm")
