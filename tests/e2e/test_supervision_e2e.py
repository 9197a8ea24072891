"""Supervision with real peers: a crashing plugin is quarantined, the rest delivers.

``dermgate run`` with three devices: the serial dermatoscope (simulated on a pty),
``test-crasher`` (a third-party plugin that raises after every start) and
``test-broken`` (a plugin whose module does not import). Orthanc is the PACS.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.demo.local_orthanc import OrthancProcess, free_port
from tests.support.gateway_process import GatewayProcess, gateway_config
from tests.support.plugins import broken_plugin_site
from tests.support.simulator import SimulatorProcess
from tests.support.state import device_status, states
from tests.support.waiting import wait_for


def test_crashing_driver_is_quarantined_while_the_dermatoscope_delivers(
    tmp_path: Path,
    orthanc: OrthancProcess,
    gateway_factory: Callable[[Path], GatewayProcess],
    simulator_factory: Callable[..., SimulatorProcess],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    site = broken_plugin_site(tmp_path)
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    )
    link = tmp_path / "ttyDERM0"
    config = gateway_config(
        tmp_path,
        pacs_port=orthanc.dicom_port,
        commit_via=orthanc,
        devices=f"""
[supervision]
restart_initial = 0.2
restart_max = 0.5
quarantine_after = 3
quarantine_window = 60

[[devices]]
driver = "serial-dermatoscope"
name = "scope"
port = "{link}"
stall_timeout = 5
reconnect_max = 1

[[devices]]
driver = "test-crasher"
name = "crasher"
crash_after = 0.3

[[devices]]
driver = "test-broken"
name = "broken"
""",
    )
    sim = simulator_factory("--captures", "3", "--interval", "1.0", link=link)
    gateway = gateway_factory(config)
    state_dir = tmp_path / "state"

    wait_for(
        lambda: device_status(state_dir).get("crasher", {}).get("state") == "QUARANTINED",
        60,
        "the crashing driver to be quarantined",
    )
    assert sim.wait(180) == 0, gateway.log()
    assert len(sim.result()["acknowledged"]) == 3
    wait_for(lambda: states(state_dir) == ["COMMITTED"] * 3, 60, "3 captures COMMITTED")
    assert orthanc.count_instances() == 3

    status = device_status(state_dir)
    crasher = status["crasher"]
    assert crasher["running"] is False
    assert crasher["restarts"] == 2
    assert crasher["last_crash"] == "RuntimeError"
    assert crasher["driver"] == "test-crasher"
    broken = status["broken"]
    assert broken["state"] == "QUARANTINED"
    assert "failed to load" in broken["detail"]
    assert "ModuleNotFoundError" in broken["detail"]
    scope = status["scope"]
    assert scope["running"] is True, "the dermatoscope driver was never disturbed"
    assert scope["restarts"] == 0
    assert scope["last_crash"] is None

    log = gateway.log()
    assert log.count("device crasher: QUARANTINED after 3 crashes") == 1, "logged once"
    assert log.count("device crasher: driver crashed (RuntimeError)") == 3
    assert "test-broken" in log
    assert gateway.stop() == 0
    final = device_status(state_dir)
    assert final["scope"]["state"] == "DISCONNECTED"
    assert final["scope"]["running"] is False
    assert final["crasher"]["state"] == "QUARANTINED", "quarantine is kept until restart"


def test_a_restart_of_the_gateway_gives_a_quarantined_driver_a_fresh_start(
    tmp_path: Path,
    orthanc: OrthancProcess,
    gateway_factory: Callable[[Path], GatewayProcess],
) -> None:
    config = gateway_config(
        tmp_path,
        pacs_port=orthanc.dicom_port,
        devices="""
[supervision]
restart_initial = 0.1
restart_max = 0.2
quarantine_after = 2

[[devices]]
driver = "test-crasher"
name = "crasher"
crash_after = 0.1
""",
    )
    state_dir = tmp_path / "state"
    gateway = gateway_factory(config)
    wait_for(
        lambda: device_status(state_dir).get("crasher", {}).get("state") == "QUARANTINED",
        60,
        "quarantine",
    )
    assert gateway.stop() == 0
    gateway.start()
    gateway.wait_running()
    wait_for(
        lambda: gateway.log().count("device crasher: QUARANTINED after 2 crashes") == 2,
        60,
        "the driver to run (and be quarantined) again after the restart",
    )
    assert gateway.stop() == 0


def test_a_stage_that_will_not_stop_does_not_keep_the_service_from_stopping(
    tmp_path: Path, gateway_factory: Callable[[Path], GatewayProcess]
) -> None:
    """``systemctl stop`` must end the service even when a driver's cleanup never returns.

    ``test-stubborn`` blocks in a thread for an hour when stopped and ignores being
    cancelled again. The service exits 0 after ``stop_timeout`` and its log names the
    stage that would not stop and holds every thread's stack, for whoever must find out
    why.
    """
    config = gateway_config(
        tmp_path,
        pacs_port=free_port(),
        devices="""
[supervision]
stop_timeout = 8

[[devices]]
driver = "test-stubborn"
name = "stubborn"
""",
    )
    gateway = gateway_factory(config)
    gateway.wait_running()
    wait_for(
        lambda: device_status(tmp_path / "state").get("stubborn", {}).get("state") == "READY",
        30,
        "the stubborn driver to be READY",
    )
    # A technician's `kill -USR1`: the stacks, and the service runs on.
    assert gateway.proc is not None
    gateway.proc.send_signal(signal.SIGUSR1)
    wait_for(lambda: "most recent call first" in gateway.log(), 10, "the thread stacks")
    dumps = gateway.log().count("most recent call first")
    time.sleep(0.5)
    assert gateway.proc.poll() is None, "SIGUSR1 must not stop the service"
    assert gateway.stop(timeout=40) == 0, gateway.log()[-3000:]
    log = gateway.log()
    assert "device:stubborn is slow to stop" in log
    assert "stopping took longer than 8 s; exiting anyway" in log
    assert log.count("most recent call first") > dumps  # the stacks at the forced stop
