"""An export rewritten while it is being captured is not acknowledged as it was.

Moving an export into ``.processed/`` is the acknowledgement: whatever is in the
folder at that moment must be what was captured. A scanner workstation that
re-exports into the same folder name while the gateway is still streaming (a
corrected patient id, say) changes the manifest after it was planned; the files
streamed afterwards still match the plan, so only a look at the export after the
last commit shows the change. The export must then be looked at again (the new
manifest captured) rather than moved away with a manifest no capture came from.

A real ``dermgate run`` watches a real folder; the PACS is unreachable.
"""

from __future__ import annotations

import io
import json
import struct
import time
from collections.abc import Callable
from pathlib import Path

from PIL import Image

from gateway.demo.local_orthanc import free_port
from tests.support.gateway_process import GatewayProcess, gateway_config
from tests.support.scanner_export import devices_toml, manifest_for, textured_files, write_export
from tests.support.state import ledger_rows
from tests.support.waiting import wait_for

TRIANGLES = 4_000_000  # a 200 MB binary STL: its capture takes a while


def test_manifest_rewritten_during_capture_is_captured_before_acknowledgement(
    tmp_path: Path, gateway_factory: Callable[[Path], GatewayProcess]
) -> None:
    folder = tmp_path / "exports"
    folder.mkdir()
    config = gateway_config(tmp_path, pacs_port=free_port(), devices=devices_toml(folder))
    gateway = gateway_factory(config)
    gateway.wait_running()
    stl = b"binary stl".ljust(80, b" ") + struct.pack("<I", TRIANGLES) + bytes(50 * TRIANGLES)
    files = {"body.stl": stl}
    export = write_export(folder, "export-1", files, patient={"id": "P-OLD"})
    staging = tmp_path / "state" / "spool" / "staging"

    deadline = time.monotonic() + 60
    while not any(staging.glob("*.part")):
        assert time.monotonic() < deadline, "the capture never started"
        time.sleep(0.005)
    (export / "manifest.json").write_bytes(manifest_for(files, patient={"id": "P-NEW"}))

    processed = folder / ".processed" / "export-1"
    wait_for(processed.exists, 120, "the export acknowledged")
    assert json.loads((processed / "manifest.json").read_bytes())["patient"]["id"] == "P-NEW"
    patients = [
        json.loads(r["patient_json"])["patient_id"]
        for r in ledger_rows(tmp_path / "state")
        if r["patient_json"]
    ]
    assert "P-NEW" in patients, "the acknowledged manifest was never captured"
    assert gateway.stop() == 0


def test_texture_dicom_cannot_carry_refuses_the_export_before_anything_is_captured(
    tmp_path: Path, gateway_factory: Callable[[Path], GatewayProcess]
) -> None:
    """A 4:4:4 JPEG texture (common at high quality settings) cannot be carried
    unchanged; found only at wrapping, the mesh and material would reach the PACS
    naming a texture that never follows. The export is refused whole instead."""
    folder = tmp_path / "exports"
    folder.mkdir()
    config = gateway_config(tmp_path, pacs_port=free_port(), devices=devices_toml(folder))
    gateway = gateway_factory(config)
    gateway.wait_running()
    out = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 160, 140)).save(out, "JPEG", quality=95, subsampling="4:4:4")
    files = {**textured_files(), "skin.jpg": out.getvalue()}
    write_export(folder, "export-2", files, patient={"id": "P-2"})

    reason = folder / ".refused" / "export-2.reason.txt"
    wait_for(reason.exists, 60, "the export refused")
    assert "4:4:4" in reason.read_text(encoding="utf-8")
    assert ledger_rows(tmp_path / "state") == [], "nothing of a refused export is spooled"
    assert gateway.stop() == 0
