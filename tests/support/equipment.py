"""What every DermGate object says about the equipment: the device in the equipment
modules, DermGate in Contributing Equipment Sequence (0018,A001)."""

from __future__ import annotations

from datetime import datetime

from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from gateway.core.capture import GatewayIdentity
from gateway.dicom.modules import dt


def dermgate_item(ds: Dataset, gateway: GatewayIdentity, now: datetime | None = None) -> Dataset:
    """Assert that ``ds`` has DermGate (``gateway``) as its one Contributing Equipment
    item, with the CID 7005 purpose "Processing Equipment", wrapped at ``now`` when
    given; return the item."""
    assert len(ds.ContributingEquipmentSequence) == 1
    item: Dataset = ds.ContributingEquipmentSequence[0]
    assert item.Manufacturer == "DermGate project"
    assert item.ManufacturerModelName == "DermGate"
    assert item.SoftwareVersions == f"DermGate {gateway.software_version}"
    assert item.DeviceSerialNumber == gateway.gateway_id
    station = gateway.station_name or gateway.gateway_id
    if len(station) <= 16:
        assert item.StationName == station
    else:
        assert "StationName" not in item
    if now is not None:
        assert item.ContributionDateTime == dt(now)
    assert item.ContributionDescription
    (purpose,) = item.PurposeOfReferenceCodeSequence
    processing = codes.CID7005.ProcessingEquipment  # the concept is in CID 7005
    assert (purpose.CodeValue, purpose.CodingSchemeDesignator, purpose.CodeMeaning) == (
        processing.value,
        processing.scheme_designator,
        processing.meaning,
    )
    return item


def device_versions(ds: Dataset) -> list[str]:
    """Software Versions (0018,1020) as a list ([] when absent)."""
    value = ds.get("SoftwareVersions")
    if value is None:
        return []
    return [value] if isinstance(value, str) else [str(v) for v in value]
