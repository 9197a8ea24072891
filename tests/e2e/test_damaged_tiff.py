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

from collections.abc import Callable
from pathlib import Path

from gateway.demo.local_orthanc import free_port
from tests.support.gateway_process import GatewayProcess, gateway_config
from tests.support.images import tiff_with_a_damaged_second_directory
from tests.support.scanner_export import MTL_TEXT, OBJ_TEXT, devices_toml, write_export
from tests.support.state import ledger_rows
from tests.support.waiting import wait_for


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
