"""Devices that abuse the wire: keep-alive bytes, trickles and hostile identity strings.

``dermgate run`` (under the file-descriptor limit systemd gives a service) serves a
simulated device, and a real Orthanc is the PACS:

- a serial dermatoscope that, instead of finishing a capture, keeps the line busy
  with lone 0x00 bytes or with its last DATA frame again and again, and a USB
  confocal microscope that trickles garbage after a stack's first frame: the
  capture makes no progress toward its end, so it is NAKed TIMEOUT after
  ``stall_timeout`` whatever bytes keep arriving. The driver stays healthy (never
  cancelled as hung, never restarted or quarantined) and the honest re-offer and
  the captures after it are acknowledged and reach the PACS;
- a microscope whose serial number holds a newline and a backslash: the string is
  cleaned where it enters, so the log has no forged line, ``dermgate spool list``
  one line per capture, and Device Serial Number one value without a backslash.
"""

from __future__ import annotations

import io
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pydicom
import pytest

from gateway.demo.local_orthanc import OrthancProcess
from tests.support.gateway_process import GatewayProcess, gateway_config
from tests.support.simulator import SimulatorProcess
from tests.support.state import device_status, states
from tests.support.usb_confocal import ConfocalSimulator
from tests.support.waiting import wait_for

HOSTILE_SERIAL = "SN1\nFAKE LOG LINE\\x"

# The watchdog would cancel a driver TRANSFERRING without progress after
# hang_timeout; the stall must be caught well before that, by the driver itself.
SUPERVISION = """
[supervision]
restart_initial = 0.2
restart_max = 0.5
quarantine_after = 2
quarantine_window = 600
hang_timeout = 12
"""


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Callable[[Path], GatewayProcess]]:
    """Start ``dermgate run`` under the service's limits; killed at the end if still up."""
    started: list[GatewayProcess] = []

    def start(config: Path) -> GatewayProcess:
        gateway = GatewayProcess(config, tmp_path / "gateway.log")
        gateway.start()
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        if gateway.proc is not None and gateway.proc.poll() is None:
            gateway.proc.kill()
            gateway.proc.wait()
        gateway.close_logs()


def assert_driver_stayed_healthy(
    gateway: GatewayProcess, state_dir: Path, name: str, refusal: str
) -> None:
    """READY right after the refusal; never cancelled as hung, restarted nor quarantined."""
    status = device_status(state_dir)[name]
    log = gateway.log()
    assert "driver hung" not in log, log[-4000:]
    assert "QUARANTINED" not in log
    assert status["restarts"] == 0
    assert status["last_crash"] is None
    assert status["running"] is True
    # (DISCONNECTED by now: the simulated device leaves once all its captures are ACKed)
    assert status["state"] in ("READY", "DISCONNECTED")
    after = log[log.index(refusal) :].splitlines()[1:]
    states_after = [line.split(": ", 2)[2] for line in after if f"device {name}: " in line]
    assert states_after[0].startswith("READY"), states_after


@pytest.mark.parametrize("fault", ["keepalive-zeros", "repeat-last-data"])
def test_serial_capture_kept_alive_without_progress_is_naked_timeout(
    tmp_path: Path,
    orthanc: OrthancProcess,
    service: Callable[[Path], GatewayProcess],
    simulator_factory: Callable[..., SimulatorProcess],
    fault: str,
) -> None:
    link = tmp_path / "ttyDERM0"
    config = gateway_config(
        tmp_path,
        pacs_port=orthanc.dicom_port,
        commit_via=orthanc,
        devices=f"""{SUPERVISION}
[[devices]]
driver = "serial-dermatoscope"
name = "scope"
port = "{link}"
stall_timeout = 2
reconnect_max = 1
""",
    )
    sim = simulator_factory(
        "--captures", "2", "--interval", "0.2", "--retry-delay", "0.5", "--fault", fault, link=link
    )
    gateway = service(config)
    assert sim.wait(120) == 0, gateway.log()[-6000:]
    report = sim.result()
    assert {"capture_id": "000001", "reason": "TIMEOUT"} in report["refused"], report
    assert sorted(item["capture_id"] for item in report["acknowledged"]) == ["000001", "000002"]
    state_dir = tmp_path / "state"
    wait_for(lambda: states(state_dir) == ["COMMITTED"] * 2, 60, "2 captures COMMITTED")
    assert orthanc.count_instances() == 2
    assert_driver_stayed_healthy(gateway, state_dir, "scope", "capture 000001 refused: TIMEOUT")
    assert gateway.stop() == 0


def confocal_devices(tmp_path: Path) -> str:
    return f"""{SUPERVISION}
[[devices]]
driver = "usb-confocal"
name = "rcm"
usb_backend = "emulated:{tmp_path / "rcm.sock"}"
stall_timeout = 2
reconnect_max = 1
"""


def test_usb_stack_trickling_garbage_is_naked_timeout(
    tmp_path: Path,
    orthanc: OrthancProcess,
    service: Callable[[Path], GatewayProcess],
    confocal_sim: Callable[..., ConfocalSimulator],
) -> None:
    sim = confocal_sim(
        "--stacks", "2", "--frames", "3", "--fault", "trickle-garbage", "--retry-delay", "0.5"
    )
    config = gateway_config(
        tmp_path,
        pacs_port=orthanc.dicom_port,
        commit_via=orthanc,
        devices=confocal_devices(tmp_path),
    )
    gateway = service(config)
    assert sim.wait(120) == 0, gateway.log()[-6000:]
    report = sim.result()
    assert {"id": "RCM1-0000-00001", "reason": "TIMEOUT"} in report["refused"], report
    assert sorted(report["acknowledged"]) == ["RCM1-0000-00001", "RCM1-0000-00002"]
    state_dir = tmp_path / "state"
    wait_for(lambda: states(state_dir) == ["COMMITTED"] * 2, 60, "2 stacks COMMITTED")
    assert orthanc.count_instances() == 2
    assert_driver_stayed_healthy(gateway, state_dir, "rcm", "stack RCM1-0000-00001 failed: TIMEOUT")
    assert gateway.stop() == 0


def test_a_hostile_usb_serial_number_is_cleaned_where_it_enters(
    tmp_path: Path,
    orthanc: OrthancProcess,
    service: Callable[[Path], GatewayProcess],
    confocal_sim: Callable[..., ConfocalSimulator],
) -> None:
    sim = confocal_sim("--stacks", "2", "--frames", "2", "--serial-number", HOSTILE_SERIAL)
    config = gateway_config(
        tmp_path,
        pacs_port=orthanc.dicom_port,
        commit_via=orthanc,
        devices=confocal_devices(tmp_path),
    )
    gateway = service(config)
    assert sim.wait(120) == 0, gateway.log()[-6000:]
    state_dir = tmp_path / "state"
    wait_for(lambda: states(state_dir) == ["COMMITTED"] * 2, 60, "2 stacks COMMITTED")

    log = gateway.log()
    assert "SN1FAKE LOG LINE/x" in log, "the cleaned serial number is what the log shows"
    assert not [line for line in log.splitlines() if line.startswith("FAKE")], "no forged line"

    listing = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "spool", "list", "--config", str(config)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert len(listing) == 1 + 2, listing  # the heading and one line per capture
    assert all("usb-confocal:SN1FAKE LOG LINE/x" in line for line in listing[1:]), listing

    instances = orthanc.rest("GET", "/instances")
    assert len(instances) == 2
    for instance in instances:
        ds = pydicom.dcmread(io.BytesIO(orthanc.instance_file(instance)))
        assert ds["DeviceSerialNumber"].VM == 1
        assert ds.DeviceSerialNumber == "SN1FAKE LOG LINE/x"
    assert gateway.stop() == 0
