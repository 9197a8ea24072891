"""Decompression bombs: small files that declare huge images, against ``max_pixels``.

A 200 KB PNG or TIFF can declare 8192 x 8192 pixels (200 MB decoded). DermGate reads
the declared size from the header before decoding and refuses TIFF/PNG images of
more than the device's ``max_pixels`` (default 40 megapixels); a JPEG is carried
without decoding and is not limited (a 61-megapixel camera photo goes through).
Checked with a real ``dermgate run`` on real folders (photo folder and scanner
export): refused with a reason, the gateway's peak memory stays low, nothing of a
bomb reaches the real Orthanc. At wrap time the writer checks again (a capture that
reached the spool by another way is quarantined with the reason).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from gateway.demo.local_orthanc import OrthancProcess, free_port
from tests.support.gateway_process import GatewayProcess, gateway_config
from tests.support.images import BOMB_SIDE, flat_jpeg, png_bomb, small_png, tiff_bomb
from tests.support.photo_folder import photo_folder_toml
from tests.support.scanner_export import OBJ_TEXT, devices_toml, write_export
from tests.support.state import ledger_rows, states
from tests.support.waiting import wait_for

DEFAULT_MAX_PIXELS = 40_000_000


def _vm_hwm_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM in /proc status")


def test_photo_folder_refuses_bombs_before_decoding_and_takes_a_61_megapixel_jpeg(
    tmp_path: Path,
    orthanc: OrthancProcess,
    gateway_factory: Callable[[Path], GatewayProcess],
) -> None:
    camera = tmp_path / "camera"
    camera.mkdir()
    devices = photo_folder_toml(camera, settle=0.3, poll=0.2)
    config = gateway_config(
        tmp_path, pacs_port=orthanc.dicom_port, commit_via=orthanc, devices=devices
    )
    gateway = gateway_factory(config)
    gateway.wait_running()
    assert gateway.proc is not None
    before = _vm_hwm_kib(gateway.proc.pid)

    (camera / "bomb.png").write_bytes(png_bomb(BOMB_SIDE, BOMB_SIDE))
    (camera / "bomb.tif").write_bytes(tiff_bomb(BOMB_SIDE, BOMB_SIDE))
    big = flat_jpeg(9504, 6336)  # 61 megapixels: carried as it is, never decoded
    (camera / "IMG_0061.JPG").write_bytes(big)
    (camera / "IMG_0002.PNG").write_bytes(small_png(320, 240))

    for name in ("bomb.png", "bomb.tif"):
        wait_for((camera / ".refused" / name).exists, 60, f"{name} refused")
        reason = (camera / ".refused" / f"{name}.reason.txt").read_text(encoding="utf-8")
        assert "8192 x 8192 pixels" in reason
        assert f"max_pixels ({DEFAULT_MAX_PIXELS})" in reason
    for name in ("IMG_0061.JPG", "IMG_0002.PNG"):
        wait_for((camera / ".processed" / name).exists, 60, f"{name} processed")

    state_dir = tmp_path / "state"
    wait_for(lambda: states(state_dir) == ["COMMITTED"] * 2, 90, "2 photos COMMITTED")
    assert orthanc.count_instances() == 2, "no bomb reached the PACS"
    grown_mib = (_vm_hwm_kib(gateway.proc.pid) - before) / 1024
    assert grown_mib < 150, f"peak memory grew by {grown_mib:.0f} MiB"
    sizes = sorted(int(r["raw_size"]) for r in ledger_rows(state_dir))
    assert sizes[-1] == len(big)
    assert gateway.stop() == 0


def test_scanner_export_with_a_bomb_texture_is_refused_whole(
    tmp_path: Path, gateway_factory: Callable[[Path], GatewayProcess]
) -> None:
    folder = tmp_path / "exports"
    folder.mkdir()
    config = gateway_config(tmp_path, pacs_port=free_port(), devices=devices_toml(folder))
    gateway = gateway_factory(config)
    gateway.wait_running()
    assert gateway.proc is not None
    before = _vm_hwm_kib(gateway.proc.pid)
    mtl = b"newmtl skin\nKd 1 1 1\nmap_Kd skin.png\n"
    files = {"body.obj": OBJ_TEXT, "body.mtl": mtl, "skin.png": png_bomb(BOMB_SIDE, BOMB_SIDE)}
    write_export(folder, "export-1", files, patient={"id": "P-1"})
    reason_file = folder / ".refused" / "export-1.reason.txt"
    wait_for(reason_file.exists, 60, "the export refused")
    reason = reason_file.read_text(encoding="utf-8")
    assert "a texture cannot be carried in DICOM" in reason
    assert "max_pixels" in reason
    assert ledger_rows(tmp_path / "state") == [], "nothing of the export is in the spool"
    grown_mib = (_vm_hwm_kib(gateway.proc.pid) - before) / 1024
    assert grown_mib < 150, f"peak memory grew by {grown_mib:.0f} MiB"
    assert gateway.stop() == 0


def test_a_devices_own_max_pixels_refuses_smaller_images(
    tmp_path: Path, gateway_factory: Callable[[Path], GatewayProcess]
) -> None:
    strict = tmp_path / "strict"
    strict.mkdir()
    devices = photo_folder_toml(
        strict, name="strict", settle=0.3, poll=0.2, extra="max_pixels = 100000"
    )
    config = gateway_config(tmp_path, pacs_port=free_port(), devices=devices)
    gateway = gateway_factory(config)
    gateway.wait_running()
    (strict / "IMG_0003.PNG").write_bytes(small_png(400, 300))  # 120 000 pixels
    (strict / "IMG_0004.PNG").write_bytes(small_png(300, 300))  # 90 000 pixels
    wait_for((strict / ".refused" / "IMG_0003.PNG").exists, 60, "the PNG over 100000 pixels")
    reason = (strict / ".refused" / "IMG_0003.PNG.reason.txt").read_text(encoding="utf-8")
    assert "400 x 300 pixels" in reason
    assert "max_pixels (100000)" in reason
    wait_for((strict / ".processed" / "IMG_0004.PNG").exists, 60, "the PNG within the limit")
    dicom = tmp_path / "state" / "spool" / "dicom"
    wait_for(lambda: len(list(dicom.glob("*.dcm"))) == 1, 30, "the PNG wrapped")
    assert gateway.stop() == 0
