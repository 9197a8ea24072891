"""Who made each object: the device in the equipment modules, DermGate beside it.

Every object DermGate writes names the device that acquired the image in General
(and, where the IOD has it, Enhanced General) Equipment, with the device's own
firmware as Software Versions, and DermGate, which made the DICOM object from the
device's file, as the one item of Contributing Equipment Sequence (0018,A001) with
the CID 7005 purpose "Processing Equipment". Checked on written files, for every
IOD, with dciodvfy (or the confocal IOD checker), and through a retarget.
"""

from __future__ import annotations

import subprocess
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pydicom
import pytest

from gateway.core.capture import DeviceClass, DeviceIdentity, GatewayIdentity
from gateway.dicom.retarget import retarget
from gateway.dicom.writers import write_capture
from tests.support import confocal_iod
from tests.support import photo_capture as pc
from tests.support.capture_contexts import CONFOCAL_KINDS, CONTEXT, KINDS, base_job, with_context
from tests.support.dciodvfy import dciodvfy_path
from tests.support.equipment import dermgate_item, device_versions


def _dciodvfy(path: Path) -> list[str]:
    result = subprocess.run(
        [str(dciodvfy_path()), str(path)], capture_output=True, text=True, check=False
    )
    return (result.stdout + result.stderr).splitlines()


@pytest.mark.parametrize("kind", KINDS)
def test_software_versions_are_the_device_firmware_and_dermgate_is_contributing_equipment(
    tmp_path: Path, kind: str
) -> None:
    job = base_job(kind, tmp_path / "capture")
    write_capture(job, tmp_path / "object.dcm")
    ds = pydicom.dcmread(tmp_path / "object.dcm", stop_before_pixels=True)

    assert device_versions(ds) == list(job.identity.software_versions)
    assert ds.Manufacturer == job.identity.manufacturer
    dermgate_item(ds, job.gateway, job.now)
    output = _dciodvfy(tmp_path / "object.dcm")
    about_it = [line for line in output if "Contribut" in line or "PurposeOfReference" in line]
    assert about_it == [], "dciodvfy accepts the Contributing Equipment item"
    if kind in CONFOCAL_KINDS:  # dciodvfy has no Confocal Microscopy IOD
        assert confocal_iod.iod_errors(pydicom.dcmread(tmp_path / "object.dcm")) == []
    else:
        assert [line for line in output if line.startswith("Error")] == []


@pytest.mark.parametrize("kind", KINDS)
def test_a_retargeted_object_keeps_dermgate_as_it_wrapped_the_capture(
    tmp_path: Path, kind: str
) -> None:
    held = base_job(kind, tmp_path / "capture")
    write_capture(held, tmp_path / "held.dcm")
    before = pydicom.dcmread(tmp_path / "held.dcm", stop_before_pixels=True)
    # assigned an hour later: the object was still made at the wrap time
    assigned = replace(with_context(held, CONTEXT), now=held.now + timedelta(hours=1))

    retarget(tmp_path / "held.dcm", tmp_path / "moved.dcm", assigned)

    after = pydicom.dcmread(tmp_path / "moved.dcm", stop_before_pixels=True)
    assert dermgate_item(after, held.gateway, held.now) == dermgate_item(before, held.gateway)
    assert device_versions(after) == list(held.identity.software_versions)


def test_a_camera_that_names_no_firmware_gets_no_software_versions_but_dermgate_still(
    tmp_path: Path,
) -> None:
    anonymous = DeviceIdentity("", "", "", (), DeviceClass.CAMERA)
    _, dest, ds = pc.wrap_jpeg(tmp_path, identity=anonymous)
    assert "SoftwareVersions" not in ds, "nothing invented for the device"
    dermgate_item(ds, pc.GATEWAY, pc.NOW)
    assert [line for line in _dciodvfy(dest) if line.startswith("Error")] == []


def test_a_gateway_id_too_long_for_station_name_is_still_the_serial_number(
    tmp_path: Path,
) -> None:
    gateway = GatewayIdentity("clinic-north-dermatology-box-03", "0.1.0")
    job = replace(base_job("dermoscopy", tmp_path / "capture"), gateway=gateway)
    write_capture(job, tmp_path / "object.dcm")
    ds = pydicom.dcmread(tmp_path / "object.dcm", stop_before_pixels=True)
    item = dermgate_item(ds, gateway, job.now)
    assert "StationName" not in ds
    assert "StationName" not in item
    assert item.DeviceSerialNumber == "clinic-north-dermatology-box-03"
