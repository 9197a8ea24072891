"""Home Assistant's view of a box, through a real Mosquitto and ``dermgate run``.

The retained discovery configs pass Home Assistant's rules (origin, the page's link,
diagnostic entities); the entities' templates, rendered on the retained state as
Home Assistant renders them, flip the destination's connectivity and the problem
sensor when the PACS (a real Orthanc) goes down and comes back; the quarantine
sensor drops once a retried capture is delivered; a destination dropped from the
configuration loses its entity; and the box's health is in the state.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from gateway.demo.local_orthanc import OrthancProcess, free_port
from gateway.status.ha_discovery import SENSORS
from tests.support.gateway_process import GatewayProcess, gateway_config
from tests.support.ha_schema import check_all, render
from tests.support.mqtt import Mosquitto, Recorder
from tests.support.simulator import SimulatorProcess
from tests.support.spool import dermgate
from tests.support.state import ledger_rows, states
from tests.support.usb_confocal import ConfocalSimulator, confocal_config
from tests.support.waiting import wait_for

GID = "test-box-01"
BASE = f"dermgate/{GID}"
STATUS, STATE = f"{BASE}/status", f"{BASE}/state"
BINARY = f"homeassistant/binary_sensor/{GID}"
PROBLEM = f"{BINARY}/problem/config"
PACS = f"{BINARY}/dest_pacs/config"
OLD = f"{BINARY}/dest_oldpacs/config"
QUARANTINED = f"homeassistant/sensor/{GID}_quarantined/config"
PUBLIC = "https://derm-box.clinic.test:8443/"


def add_sections(config: Path, broker: Mosquitto, web: bool = False) -> Path:
    """``[mqtt]`` for ``broker`` (and ``[web]`` with a public address)."""
    with config.open("a", encoding="utf-8") as fh:
        fh.write("\n" + broker.config_section())
        if web:
            fh.write(f'\n[web]\nlisten = "127.0.0.1:{free_port()}"\npublic_url = "{PUBLIC}"\n')
    return config


def latest(rec: Recorder, topic: str) -> Any:
    got = [m for m in rec.on(topic) if m.payload]
    return got[-1].json() if got else None


def entity(rec: Recorder, config_topic: str) -> str | None:
    """The entity's state now: its template on the newest state document."""
    config, state = latest(rec, config_topic), latest(rec, STATE)
    if config is None or state is None:
        return "no config or state yet"
    return render(config, state)


def test_connectivity_and_problem_follow_a_pacs_outage_and_the_configs_are_valid(
    tmp_path: Path,
    orthanc: OrthancProcess,
    mosquitto: Mosquitto,
    recorder_factory: Callable[..., Recorder],
    gateway_factory: Callable[[Path], GatewayProcess],
    simulator_factory: Callable[..., SimulatorProcess],
) -> None:
    # An earlier configuration had a destination "oldpacs": its entity is retained.
    seed = recorder_factory(mosquitto, [OLD])
    seed.publish(OLD, json.dumps({"name": "Destination oldpacs"}), retain=True)
    rec = recorder_factory(mosquitto, [f"{BASE}/#", "homeassistant/#"])
    config = add_sections(
        gateway_config(tmp_path, pacs_port=orthanc.dicom_port, commit_via=orthanc),
        mosquitto,
        web=True,
    )
    gateway = gateway_factory(config)
    gateway.wait_running()
    wanted = {f"homeassistant/sensor/{GID}_{key}/config" for key in SENSORS}
    wanted |= {PROBLEM, PACS, f"{BINARY}/under_voltage/config"}
    rec.wait(lambda: wanted <= {m.topic for m in rec.all()}, 60, "every discovery config")
    rec.wait(lambda: [m for m in rec.on(OLD) if not m.payload], 30, "oldpacs deleted")

    # What Home Assistant finds retained when it starts later.
    late = recorder_factory(mosquitto, ["homeassistant/#"])
    late.wait(lambda: wanted <= {m.topic for m in late.all()}, 20, "retained configs")
    retained = [(m.topic, m.json()) for m in late.all() if m.payload]
    assert all(m.retain for m in late.all())
    assert OLD not in {t for t, _ in retained}, "the removed destination's entity is gone"
    configs = check_all(retained)
    assert set(configs) == wanted
    for body in configs.values():
        assert body["device"]["configuration_url"] == PUBLIC
        assert body["origin"]["name"] == "DermGate"
        assert body["origin"]["sw_version"] == body["device"]["sw_version"]

    # Up, nothing sent yet: the PACS's connectivity is unknown, and nothing is wrong.
    rec.wait(lambda: entity(rec, PROBLEM) == "OFF", 30, "no problem at the start")
    assert entity(rec, PACS) is None
    state = latest(rec, STATE)
    assert state["verdict"]["colour"] == "green"
    started = datetime.fromisoformat(
        render(configs[f"homeassistant/sensor/{GID}_uptime/config"], state) or ""
    )
    assert started.utcoffset() is not None
    assert "pi" in state["health"]  # this machine's own health (a Pi or not)
    if not state["health"]["pi"]:
        assert entity(rec, f"{BINARY}/under_voltage/config") is None  # unknown, no fault

    # The PACS goes down while a capture is to be sent.
    orthanc.stop()
    sim = simulator_factory("--captures", "1")
    assert sim.wait(120) == 0, gateway.log()
    rec.wait(lambda: entity(rec, PACS) == "OFF", 90, "the PACS shown disconnected")
    assert entity(rec, PROBLEM) == "ON"
    assert latest(rec, STATE)["verdict"]["colour"] == "red"

    # And comes back: delivered, connected, no problem.
    orthanc.start()
    wait_for(lambda: states(tmp_path / "state") == ["COMMITTED"], 120, "delivered after the outage")
    rec.wait(lambda: entity(rec, PACS) == "ON", 60, "the PACS shown connected")
    rec.wait(lambda: entity(rec, PROBLEM) == "OFF", 60, "no problem any more")
    assert gateway.stop() == 0


def test_the_quarantine_sensor_drops_once_a_retried_capture_is_delivered(
    tmp_path: Path,
    shipped_orthanc: OrthancProcess,
    gateway_factory: Callable[[Path], GatewayProcess],
    confocal_sim: Callable[..., ConfocalSimulator],
    mosquitto: Mosquitto,
    recorder_factory: Callable[..., Recorder],
) -> None:
    state_dir = tmp_path / "state"
    config = add_sections(confocal_config(tmp_path, shipped_orthanc), mosquitto)
    rec = recorder_factory(mosquitto, [STATE, QUARANTINED, PROBLEM])
    sim = confocal_sim("--stacks", "1", "--frames", "3", "--size", "32x32")
    gateway = gateway_factory(config)
    assert sim.wait(120) == 0, gateway.log()
    wait_for(lambda: states(state_dir) == ["QUARANTINED"], 60, "the refusal")
    rec.wait(lambda: entity(rec, QUARANTINED) == "1", 30, "one capture set aside")
    assert entity(rec, PROBLEM) == "ON"  # amber: a capture needs a look
    assert gateway.stop() == 0

    # The PACS administrator accepts the class; the technician sends it again.
    shipped_orthanc.stop()
    shipped_orthanc.extra["UnknownSopClassAccepted"] = True
    shipped_orthanc.start()
    capture = ledger_rows(state_dir)[0]
    retried = dermgate("retry", str(capture["id"]), config=config)
    assert retried.returncode == 0, retried.stderr
    gateway.start()
    wait_for(lambda: states(state_dir) == ["COMMITTED"], 120, "delivery after the fix")
    rec.wait(lambda: entity(rec, QUARANTINED) == "0", 60, "the sensor back at 0")
    state = latest(rec, STATE)
    assert state["spool"]["quarantined"] == 0
    rec.wait(lambda: entity(rec, PROBLEM) == "OFF", 60, "no problem any more")
    assert gateway.stop() == 0
