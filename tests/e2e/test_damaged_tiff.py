"""A TIFF whose second image directory is damaged: refused with a reason, never a crash.

Pillow counts a TIFF's images by reading every directory; a damaged later
directory makes it raise ``TypeError("Missing dimensions")`` (found by fuzzing the
native photo writer). Uncaught, that error took down the wrapping stage, and with
it the gateway, again at every restart (the capture stays CAPTURED); in the
photo-folder driver it crashed the driver on every look until it was quarantined.
It must be a WrapError like any other damaged image, refused before the
acknowledgement (photo folder, scanner export), quarantined with a reason otherwise.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from PIL import Image

from gateway.capture import (
    CaptureOffer,
    ContentType,
    DeviceClass,
    DeviceIdentity,
    GatewayIdentity,
    InstanceUIDs,
)
from gateway.dicom.errors import WrapError
from gateway.dicom.job import WrapJob
from gateway.dicom.photo import check_native_image, write_vl_photographic_native
from gateway.dicom.uids import new_uid
from gateway.local_orthanc import free_port
from tests.support.gateway_process import GatewayProcess, gateway_config
from tests.support.scanner_export import MTL_TEXT, OBJ_TEXT, devices_toml, write_export
from tests.support.state import ledger_rows
from tests.support.waiting import wait_for


def tiff_with_a_damaged_second_directory() -> bytes:
    """A valid one-image RGB TIFF whose next-directory pointer leads to a directory
    without ImageWidth/ImageLength."""
    out = io.BytesIO()
    Image.new("RGB", (37, 23), (200, 30, 30)).save(out, "TIFF")
    data = bytearray(out.getvalue())
    first = struct.unpack_from("<I", data, 4)[0]
    entries = struct.unpack_from("<H", data, first)[0]
    if len(data) % 2:
        data += b"\0"
    struct.pack_into("<I", data, first + 2 + 12 * entries, len(data))
    data += struct.pack("<H", 1) + struct.pack("<HHII", 259, 3, 1, 1) + struct.pack("<I", 0)
    return bytes(data)


def test_damaged_second_directory_is_a_wrap_error(tmp_path: Path) -> None:
    source = tmp_path / "texture.tif"
    source.write_bytes(tiff_with_a_damaged_second_directory())
    with pytest.raises(WrapError, match="not a readable TIFF image"):
        check_native_image(source, ContentType.TIFF)
    job = WrapJob(
        identity=DeviceIdentity("Acme", "Scan3D", "S-1", ("1",), DeviceClass.BODY_SCANNER),
        offer=CaptureOffer(device_capture_id="tex-1", content_type=ContentType.TIFF),
        uids=InstanceUIDs(new_uid(), new_uid(), new_uid()),
        source=source,
        gateway=GatewayIdentity("gw-1", "0.1"),
        now=datetime(2026, 11, 30, 12, tzinfo=UTC),
    )
    with pytest.raises(WrapError, match="not a readable TIFF image"):
        write_vl_photographic_native(job, tmp_path / "out.dcm")
    assert not (tmp_path / "out.dcm").exists()


def test_export_with_such_a_texture_is_refused_whole_and_the_gateway_runs_on(
    tmp_path: Path, gateway_factory: Callable[[Path], GatewayProcess]
) -> None:
    """The scanner-export driver decodes TIFF/PNG textures as the writer would before
    taking anything: an export whose texture cannot be carried is refused whole (it
    would otherwise reach the PACS as a mesh naming a texture that never follows)."""
    folder = tmp_path / "exports"
    folder.mkdir()
    config = gateway_config(tmp_path, pacs_port=free_port(), devices=devices_toml(folder))
    gateway = gateway_factory(config)
    gateway.wait_running()
    mtl = MTL_TEXT.replace(b"skin.jpg", b"skin.tif")
    files = {
        "body.obj": OBJ_TEXT,
        "body.mtl": mtl,
        "skin.tif": tiff_with_a_damaged_second_directory(),
    }
    write_export(folder, "export-1", files)

    reason = folder / ".refused" / "export-1.reason.txt"
    wait_for(reason.exists, 60, "the export refused")
    assert "not a readable TIFF image" in reason.read_text(encoding="utf-8")
    assert ledger_rows(tmp_path / "state") == [], "nothing of a refused export is spooled"
    assert gateway.stop() == 0, gateway.log()
