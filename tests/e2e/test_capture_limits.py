"""A size a device announces is a claim to check against limits, not an allocation.

A capture larger than ``[spool] max_capture_mb`` (announced, or streamed beyond it
when no size was announced) is refused with its own reason, TOO_LARGE, and the
next capture goes through. The global ``disk_full`` alarm stays down: it is raised
only when the disk really is below its reserve (tests/e2e/test_disk_space.py), never
because a device claimed 2^63-1 bytes.

Devices are the real simulators at their wire (a pty for the serial dermatoscope,
the emulated USB backend for the confocal microscope, real files in real folders
for the folder drivers) against ``dermgate run``; the alarm is looked for where a
fleet sees it, in the MQTT events and state. For a folder driver too large is
permanent (the entry goes to ``.refused/``), while a full disk is not (the entry
waits, and the driver says so once, not at every retry).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from drivers.photo_folder import simulator as camera
from gateway.demo.local_orthanc import OrthancProcess, free_port
from tests.support.gateway_process import GatewayProcess, gateway_config
from tests.support.mqtt import Mosquitto, Recorder
from tests.support.photo_folder import photo_folder_toml
from tests.support.scanner_export import OBJ_TEXT, devices_toml, textured_files, write_export
from tests.support.simulator import SimulatorProcess
from tests.support.state import ledger_rows, states
from tests.support.usb_confocal import ConfocalSimulator, confocal_config
from tests.support.waiting import wait_for

MIB = 1024 * 1024
BASE = "dermgate/test-box-01"


def with_mqtt(config: Path, broker: Mosquitto) -> Path:
    """Append a ``[mqtt]`` section for ``broker`` to a gateway configuration."""
    with config.open("a", encoding="utf-8") as fh:
        fh.write("\n" + broker.config_section())
    return config


def events(rec: Recorder) -> list[dict[str, Any]]:
    """Every event the gateway published, in arrival order."""
    return [m.json() for m in rec.on(f"{BASE}/events")]


def assert_no_disk_alarm(rec: Recorder, gateway: GatewayProcess) -> None:
    """Neither an event nor the state nor the log ever said the disk was full."""
    alarms = [e for e in events(rec) if e["kind"].startswith("alarm_")]
    assert not [e for e in alarms if e.get("code") == "disk_full"], alarms
    for message in rec.on(f"{BASE}/state"):
        state = message.json()
        assert state["disk"]["full"] is False
        assert "disk_full" not in {a["code"] for a in state["alarms"]}
    assert "DISK FULL" not in gateway.log()


def test_a_dermatoscope_announcing_2_63_bytes_gets_nak_too_large_and_no_disk_alarm(
    tmp_path: Path,
    orthanc: OrthancProcess,
    mosquitto: Mosquitto,
    recorder_factory: Callable[..., Recorder],
    gateway_factory: Callable[[Path], GatewayProcess],
    simulator_factory: Callable[..., SimulatorProcess],
) -> None:
    rec = recorder_factory(mosquitto, [f"{BASE}/#"])
    config = with_mqtt(gateway_config(tmp_path, pacs_port=orthanc.dicom_port), mosquitto)
    gateway = gateway_factory(config)
    gateway.wait_running()
    # Capture 1 is first offered with CAPTURE_BEGIN length 2^63-1; its re-offer is true.
    sim = simulator_factory(
        "--captures", "2", "--interval", "0.2", "--retry-delay", "1", "--fault", "huge-length"
    )
    assert sim.wait(120) == 0, gateway.log()
    report = sim.result()
    assert report["refused"] == [{"capture_id": "000001", "reason": "TOO_LARGE"}]
    acked = [a["capture_id"] for a in report["acknowledged"]]
    assert sorted(acked) == ["000001", "000002"], "the next captures go through"
    state_dir = tmp_path / "state"
    wait_for(lambda: states(state_dir) == ["SENT"] * 2, 60, "both captures sent")
    rec.wait(
        lambda: [e for e in events(rec) if e["kind"] == "capture_delivered"][1:], 30, "2 delivered"
    )
    log = gateway.log()
    assert "TOO_LARGE" in log
    assert "max_capture_mb" in log, "the refusal names the limit to change"
    assert_no_disk_alarm(rec, gateway)
    assert gateway.stop() == 0


def test_a_confocal_header_claiming_9_petabytes_gets_nak_too_large_and_no_disk_alarm(
    tmp_path: Path,
    orthanc: OrthancProcess,
    mosquitto: Mosquitto,
    recorder_factory: Callable[..., Recorder],
    gateway_factory: Callable[[Path], GatewayProcess],
    confocal_sim: Callable[..., ConfocalSimulator],
) -> None:
    rec = recorder_factory(mosquitto, [f"{BASE}/#"])
    config = with_mqtt(confocal_config(tmp_path, orthanc), mosquitto)
    sim = confocal_sim("--stacks", "2", "--frames", "3", "--size", "64x64", "--announce-huge")
    gateway = gateway_factory(config)
    assert sim.wait(120) == 0, gateway.log()
    report = sim.result()
    first, second = sorted(report["stacks"])
    assert report["refused"] == [{"id": first, "reason": "TOO_LARGE"}]
    assert sorted(report["acknowledged"]) == [first, second]
    assert report["unanswered"] == 0, "the claim was answered at once, not left to time out"
    wait_for(lambda: len(ledger_rows(tmp_path / "state")) == 2, 30, "both stacks spooled")
    assert "TOO_LARGE" in gateway.log()
    assert_no_disk_alarm(rec, gateway)
    assert gateway.stop() == 0


def test_max_capture_mb_sets_the_limit(
    tmp_path: Path,
    gateway_factory: Callable[[Path], GatewayProcess],
    simulator_factory: Callable[..., SimulatorProcess],
) -> None:
    config = gateway_config(tmp_path, pacs_port=free_port())
    config.write_text(config.read_text() + "\n[spool]\nmax_capture_mb = 1\n")
    sim = simulator_factory("--captures", "1", "--retry-delay", "0.5")  # ~2.7 MB photos
    gateway = gateway_factory(config)
    wait_for(lambda: len(sim.result()["refused"]) >= 2, 60, "the capture refused twice")
    assert {r["reason"] for r in sim.result()["refused"]} == {"TOO_LARGE"}
    assert "the limit is 1 MiB ([spool] max_capture_mb)" in gateway.log()
    assert ledger_rows(tmp_path / "state") == []
    assert gateway.stop() == 0


def limited(config: Path, max_capture_mb: int = 1) -> Path:
    """Append ``[spool] max_capture_mb`` to a gateway configuration."""
    config.write_text(config.read_text() + f"\n[spool]\nmax_capture_mb = {max_capture_mb}\n")
    return config


def device_state(state_dir: Path, name: str) -> str:
    """The device's state in the gateway's status snapshot ("" before the first write)."""
    path = state_dir / "status" / "devices.json"
    if not path.exists():
        return ""
    document = json.loads(path.read_text(encoding="utf-8"))
    return next((str(d["state"]) for d in document["devices"] if d["name"] == name), "")


def lines_with(log: str, *fragments: str) -> list[str]:
    """The log lines that hold every one of ``fragments``."""
    return [line for line in log.splitlines() if all(f in line for f in fragments)]


def test_a_dropped_photo_over_the_limit_is_set_aside_and_the_next_photo_arrives(
    tmp_path: Path, orthanc: OrthancProcess, gateway_factory: Callable[[Path], GatewayProcess]
) -> None:
    """Too large is permanent: retrying cannot make the photo smaller. It goes to
    ``.refused/`` with a reason naming the limit (logged once), the driver stays READY
    (no ERROR) and the photo dropped after it reaches the PACS."""
    folder = tmp_path / "photos"
    folder.mkdir()
    devices = photo_folder_toml(folder)
    config = limited(gateway_config(tmp_path, pacs_port=orthanc.dicom_port, devices=devices))
    gateway = gateway_factory(config)
    gateway.wait_running()
    big = camera.make_photo(1, width=3800, height=2500)
    assert len(big) > 2 * MIB
    (folder / "IMG_0001.JPG").write_bytes(big)
    wait_for((folder / ".refused" / "IMG_0001.JPG").exists, 30, "the large photo set aside")
    reason = (folder / ".refused" / "IMG_0001.JPG.reason.txt").read_text(encoding="utf-8")
    assert "the limit is 1 MiB ([spool] max_capture_mb)" in reason
    assert str(len(big)) in reason, "the reason says how large the photo is"

    (folder / "IMG_0002.JPG").write_bytes(camera.make_photo(2, width=640, height=480))
    wait_for((folder / ".processed" / "IMG_0002.JPG").exists, 30, "the small photo processed")
    wait_for(lambda: orthanc.count_instances() == 1, 30, "the small photo in Orthanc")
    state_dir = tmp_path / "state"
    assert len(ledger_rows(state_dir)) == 1, "nothing of the large photo was spooled"
    time.sleep(6)  # longer than a retry of an entry left in the folder (5 s)
    log = gateway.log()
    assert len(lines_with(log, "max_capture_mb")) == 1, "the refusal is logged once"
    assert not lines_with(log, "device camera: ERROR"), "no ERROR state"
    assert device_state(state_dir, "camera") == "READY"
    assert (folder / ".refused" / "IMG_0001.JPG").read_bytes() == big
    assert "DISK FULL" not in log
    assert gateway.stop() == 0


def test_a_scanner_export_with_a_mesh_over_the_limit_is_refused_whole(
    tmp_path: Path, orthanc: OrthancProcess, gateway_factory: Callable[[Path], GatewayProcess]
) -> None:
    """An export with one file over the limit is refused as a whole before any of its
    files is captured (no partial scan reaches the PACS); the next export arrives."""
    folder = tmp_path / "exports"
    folder.mkdir()
    devices = devices_toml(folder)
    config = limited(gateway_config(tmp_path, pacs_port=orthanc.dicom_port, devices=devices))
    gateway = gateway_factory(config)
    gateway.wait_running()
    padding = b"# " + b"x" * 61 + b"\n"
    mesh = OBJ_TEXT + padding * (2 * MIB // len(padding) + 1)
    assert len(mesh) > 2 * MIB
    write_export(folder, "export-1", {**textured_files(1), "body.obj": mesh}, patient={"id": "P1"})
    reason_file = folder / ".refused" / "export-1.reason.txt"
    wait_for(reason_file.exists, 30, "the export with the large mesh refused")
    reason = reason_file.read_text(encoding="utf-8")
    assert "the limit is 1 MiB ([spool] max_capture_mb)" in reason
    assert str(len(mesh)) in reason

    write_export(folder, "export-2", textured_files(2), patient={"id": "P2"})
    wait_for((folder / ".processed" / "export-2").exists, 30, "the next export processed")
    wait_for(lambda: orthanc.count_instances() == 3, 30, "the next export in Orthanc")
    state_dir = tmp_path / "state"
    assert len(ledger_rows(state_dir)) == 3, "nothing of the refused export was spooled"
    time.sleep(3)  # several retry intervals (1 s)
    log = gateway.log()
    assert len(lines_with(log, "max_capture_mb")) == 1, "the refusal is logged once"
    assert not lines_with(log, "device scanner: ERROR"), "no ERROR state"
    assert device_state(state_dir, "scanner") == "READY"
    assert orthanc.count_instances() == 3
    assert gateway.stop() == 0


def test_a_full_disk_keeps_folder_entries_waiting_and_says_so_once(
    tmp_path: Path,
    small_disk: Path,
    orthanc: OrthancProcess,
    gateway_factory: Callable[[Path], GatewayProcess],
) -> None:
    """DISK_FULL is transient: the photo and the export stay where they are and are
    tried again, but the refusal is logged, and the ERROR state entered, once (not at
    every retry); when space is back both go through and the drivers are READY."""
    photos = tmp_path / "photos"
    photos.mkdir()
    exports = tmp_path / "exports"
    exports.mkdir()
    devices = photo_folder_toml(photos) + devices_toml(exports)
    config = gateway_config(tmp_path, pacs_port=orthanc.dicom_port, devices=devices)
    text = config.read_text().replace(str(tmp_path / "state"), str(small_disk / "state"))
    config.write_text(text + "\n[spool]\nreserve_mb = 16\n")
    state_dir = small_disk / "state"
    gateway = gateway_factory(config)
    gateway.wait_running()
    filler = small_disk / "filler"
    with filler.open("wb") as fh:
        fh.write(b"\0" * (shutil.disk_usage(small_disk).free - 8 * MIB))
    (photos / "IMG_0001.JPG").write_bytes(camera.make_photo(1, width=640, height=480))
    write_export(exports, "export-1", textured_files(1), patient={"id": "P1"})
    wait_for(lambda: "DISK FULL" in gateway.log(), 30, "the disk-full alarm")
    time.sleep(12)  # two retries of the photo (5 s), many of the export (1 s)
    log = gateway.log()
    assert len(lines_with(log, "camera:", "DISK_FULL", "WARNING")) == 1, log
    assert len(lines_with(log, "scanner:", "DISK_FULL", "WARNING")) == 1, log
    assert len(lines_with(log, "device camera: ERROR")) == 1, log
    assert len(lines_with(log, "device scanner: ERROR")) == 1, log
    assert device_state(state_dir, "camera") == "ERROR"
    assert device_state(state_dir, "scanner") == "ERROR"
    assert (photos / "IMG_0001.JPG").exists()
    assert (exports / "export-1").exists()
    assert ledger_rows(state_dir) == []

    filler.unlink()
    wait_for((photos / ".processed" / "IMG_0001.JPG").exists, 30, "the photo processed")
    wait_for((exports / ".processed" / "export-1").exists, 30, "the export processed")
    wait_for(lambda: orthanc.count_instances() == 4, 30, "all in Orthanc")
    wait_for(lambda: device_state(state_dir, "camera") == "READY", 10, "camera READY")
    wait_for(lambda: device_state(state_dir, "scanner") == "READY", 10, "scanner READY")
    assert not (photos / ".refused").exists() or not any((photos / ".refused").iterdir())
    assert not (exports / ".refused").exists() or not any((exports / ".refused").iterdir())
    assert gateway.stop() == 0


# --- the intake itself: every driver goes through it -------------------------------


# --- a folder driver whose host does not announce the limit: intake's refusal ------
