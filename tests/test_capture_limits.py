"""A size a device announces is a claim to check against limits, not an allocation.

A capture larger than ``[spool] max_capture_mb`` (announced, or streamed beyond it
when no size was announced) is refused with its own reason, TOO_LARGE, and the
next capture goes through. The global ``disk_full`` alarm stays down: it is raised
only when the disk really is below its reserve (tests/test_disk_space.py), never
because a device claimed 2^63-1 bytes.

Devices are the real simulators at their wire (a pty for the serial dermatoscope,
the emulated USB backend for the confocal microscope) against ``dermgate run``;
the alarm is looked for where a fleet sees it, in the MQTT events and state.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.capture import CaptureOffer, ContentType, DeviceClass, DeviceIdentity
from gateway.devices.contract import CaptureRefused, RefusalReason
from gateway.local_orthanc import OrthancProcess, free_port
from gateway.spool.files import SpoolDirs
from gateway.spool.intake import Intake
from gateway.spool.ledger import Ledger
from tests.conftest import (
    GatewayProcess,
    SimulatorProcess,
    gateway_config,
    ledger_rows,
    states,
    wait_for,
)
from tests.mqtt_support import Mosquitto, Recorder, mosquitto, recorder_factory
from tests.photo_folder_support import photo_folder_toml, start_camera
from tests.test_usb_confocal import ConfocalSimulator, confocal_config, confocal_sim

__all__ = ["confocal_sim", "mosquitto", "recorder_factory"]  # fixtures used here

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


def test_a_dropped_photo_over_the_limit_is_refused_as_too_large_by_intake(
    tmp_path: Path, gateway_factory: Callable[[Path], GatewayProcess]
) -> None:
    """Folder drivers go through intake like every driver: the limit holds for them.

    Where the refused file then goes (left in place, or set aside in ``.refused/``)
    is the folder driver's business; here: nothing is spooled or acknowledged.
    """
    folder = tmp_path / "photos"
    folder.mkdir()
    config = gateway_config(tmp_path, pacs_port=free_port(), devices=photo_folder_toml(folder))
    config.write_text(config.read_text() + "\n[spool]\nmax_capture_mb = 1\n")
    camera = start_camera(folder, tmp_path, "--photos", "1", "--width", "3000", "--height", "2000")
    try:
        gateway = gateway_factory(config)
        wait_for(lambda: "TOO_LARGE" in gateway.log(), 60, "the photo refused as too large")
        photos = [p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg")]
        assert [p.stat().st_size > MIB for p in photos] == [True], "one photo, over 1 MiB"
        assert ledger_rows(tmp_path / "state") == []
        assert not (folder / ".processed").exists() or not any((folder / ".processed").iterdir())
        assert "DISK FULL" not in gateway.log()
        assert gateway.stop() == 0
    finally:
        camera.stop()


# --- the intake itself: every driver goes through it -------------------------------


@pytest.fixture
async def intake(tmp_path: Path) -> AsyncIterator[Intake]:
    """The real intake on a fresh spool, with a 1 MiB capture limit."""
    dirs = SpoolDirs(tmp_path / "spool")
    dirs.create()
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    ledger.start()
    yield Intake(ledger, dirs, lambda: None, max_capture_bytes=MIB)
    ledger.close()


CAMERA = DeviceIdentity("Acme", "Cam 1", "CAM-1", ("1.0",), DeviceClass.CAMERA)


def staged(intake: Intake) -> list[Path]:
    """Files left in the staging folder."""
    return list(intake.dirs.staging.iterdir())


async def test_an_announced_size_over_the_limit_is_refused_before_anything_is_staged(
    intake: Intake,
) -> None:
    offer = CaptureOffer("big", length=MIB + 1, content_type=ContentType.TIFF)
    with pytest.raises(CaptureRefused) as caught:
        await intake.begin("photo-folder", CAMERA, offer)
    assert caught.value.reason is RefusalReason.TOO_LARGE
    assert "max_capture_mb" in caught.value.detail
    assert staged(intake) == []
    exact = CaptureOffer("exact", length=MIB, content_type=ContentType.TIFF)
    sink = await intake.begin("photo-folder", CAMERA, exact)
    await sink.abort("test")


@pytest.mark.parametrize("announced", [None, 1000], ids=["unannounced", "understated"])
async def test_bytes_streamed_beyond_the_limit_are_refused_and_discarded(
    intake: Intake, announced: int | None
) -> None:
    offer = CaptureOffer("stream", length=announced, content_type=ContentType.TIFF)
    sink = await intake.begin("photo-folder", CAMERA, offer)
    chunk = b"\x00" * (256 * 1024)
    for _ in range(4):  # exactly the limit: accepted so far
        await sink.write(chunk)
    with pytest.raises(CaptureRefused) as caught:
        await sink.write(b"\x00")
    assert caught.value.reason is RefusalReason.TOO_LARGE
    assert staged(intake) == [], "the staging file is gone"
    assert ledger_rows(intake.ledger.path.parent) == []
    # A capture within the limit goes through afterwards.
    data = chunk * 4
    sink = await intake.begin("photo-folder", CAMERA, CaptureOffer("fits", length=len(data)))
    await sink.write(data)
    receipt = await sink.commit(length=len(data), sha256=hashlib.sha256(data).hexdigest())
    assert not receipt.duplicate
