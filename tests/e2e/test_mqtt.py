"""Fleet status over MQTT against a real Mosquitto, with real devices' simulators and Orthanc.

What a fleet dashboard relies on: ``status`` is retained ``online`` while the box runs
and flips to ``offline`` (the Will) when the process is SIGKILLed; ``state`` is a
schema-versioned JSON that follows the spool as captures are delivered; ``events``
are numbered without gaps, also across a broker outage (or with the dropped ones
counted when the buffer is too small); Home Assistant discovery is sent again when
Home Assistant announces itself; user/password + TLS work; and no patient data is
ever in an MQTT payload.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.demo.local_orthanc import OrthancProcess, free_port
from gateway.status.mqtt import HA_SENSORS
from tests.support.gateway_process import GatewayProcess, gateway_config
from tests.support.mqtt import PASSWORD, USER, Mosquitto, Received, Recorder
from tests.support.scanner_export import (
    Simulator,
    devices_toml,
    start_simulator,
    stored_datasets,
    study_instances,
)
from tests.support.simulator import SimulatorProcess
from tests.support.state import ledger_rows, states
from tests.support.waiting import wait_for

GID = "test-box-01"
BASE = f"dermgate/{GID}"
STATUS, STATE, EVENTS = f"{BASE}/status", f"{BASE}/state", f"{BASE}/events"
STATE_KEYS = {
    "version",
    "gateway",
    "software",
    "generated",
    "uptime_s",
    "seq",
    "last_event_seq",
    "spool",
    "disk",
    "devices",
    "destinations",
    "alarms",
    "mqtt",
}


def with_mqtt(config: Path, broker: Mosquitto, **extra: Any) -> Path:
    """Append a ``[mqtt]`` section for ``broker`` to a gateway configuration."""
    with config.open("a", encoding="utf-8") as fh:
        fh.write("\n" + broker.config_section(**extra))
    return config


def events(rec: Recorder) -> list[dict[str, Any]]:
    """Every event received, in arrival order."""
    return [m.json() for m in rec.on(EVENTS)]


def kinds(rec: Recorder) -> list[str]:
    """The kinds of the events received."""
    return [e["kind"] for e in events(rec)]


def latest_state(rec: Recorder) -> dict[str, Any] | None:
    """The newest state document received."""
    got = rec.on(STATE)
    return got[-1].json() if got else None


def test_status_state_events_follow_captures_and_sigkill_shows_offline(
    tmp_path: Path,
    orthanc: OrthancProcess,
    mosquitto: Mosquitto,
    recorder_factory: Callable[..., Recorder],
    gateway_factory: Callable[[Path], GatewayProcess],
    simulator_factory: Callable[..., SimulatorProcess],
) -> None:
    rec = recorder_factory(mosquitto, [f"{BASE}/#"])
    config = with_mqtt(
        gateway_config(tmp_path, pacs_port=orthanc.dicom_port, commit_via=orthanc), mosquitto
    )
    gateway = gateway_factory(config)
    gateway.wait_running()
    rec.wait(lambda: [m for m in rec.on(STATUS) if m.payload == b"online"], 30, "online")
    first = rec.wait(lambda: latest_state(rec), 30, "a state document")
    assert set(first) >= STATE_KEYS, f"missing: {STATE_KEYS - set(first)}"
    assert first["version"] == 1
    assert first["gateway"] == GID
    assert first["spool"]["counts"]["COMMITTED"] == 0
    assert [d["name"] for d in first["destinations"]] == ["pacs"]
    assert {"free_mb", "reserve_mb", "full"} <= set(first["disk"])

    # A late subscriber sees the retained status and state.
    late = recorder_factory(mosquitto, [STATUS, STATE])
    late.wait(lambda: late.on(STATUS), 10, "retained status")
    assert late.on(STATUS)[0].payload == b"online"
    assert late.on(STATUS)[0].retain
    late.wait(lambda: late.on(STATE), 10, "retained state")
    assert late.on(STATE)[0].retain

    sim = simulator_factory("--captures", "2", "--interval", "0.2")
    assert sim.wait(180) == 0, gateway.log()
    wait_for(lambda: states(tmp_path / "state") == ["COMMITTED"] * 2, 90, "2 COMMITTED")

    def committed_in_state() -> bool:
        state = latest_state(rec)
        return state is not None and state["spool"]["counts"]["COMMITTED"] == 2

    rec.wait(committed_in_state, 30, "state showing 2 COMMITTED")
    rec.wait(lambda: kinds(rec).count("capture_committed") == 2, 30, "2 committed events")
    got = events(rec)
    seqs = [e["seq"] for e in got]
    assert seqs == sorted(set(seqs))
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    for kind in ("capture_saved", "capture_delivered", "capture_committed"):
        assert kinds(rec).count(kind) == 2, kinds(rec)
    assert "device_connected" in kinds(rec)
    # The simulator has exited: its port is gone, and so is the device.
    rec.wait(lambda: "device_gone" in kinds(rec), 30, "device_gone")
    gone = next(e for e in events(rec) if e["kind"] == "device_gone")
    assert gone["device"] == "scope"
    assert gone["driver"] == "serial-dermatoscope"
    assert gone["state"] in ("DISCONNECTED", "CONNECTING", "ERROR")
    saved = [e for e in got if e["kind"] == "capture_saved"]
    delivered = [e for e in got if e["kind"] == "capture_delivered"]
    assert {e["spool_id"] for e in saved} == {e["spool_id"] for e in delivered} == {1, 2}
    assert all(e["destination"] == "pacs" for e in delivered)
    assert all(e["sop_class"] == "Dermoscopic Photography Image Storage" for e in delivered)
    for e in got:
        assert e["gateway"] == GID
        assert e["dropped_before"] == 0
    # The state changed on the way and now describes the device and the destination.
    documents = [m.json() for m in rec.on(STATE)]
    assert len({d["seq"] for d in documents}) == len(documents) >= 3
    final = documents[-1]
    assert final["spool"]["undelivered"] == 0
    assert final["spool"]["oldest_undelivered_age_s"] is None
    assert final["devices"][0]["name"] == "scope"
    assert final["devices"][0]["driver"] == "serial-dermatoscope"
    assert final["destinations"][0]["reachable"] is True
    assert final["destinations"][0]["last_error"] is None
    assert final["alarms"] == []
    assert final["mqtt"]["connected"] is True
    assert final["mqtt"]["events_dropped"] == 0
    assert final["mqtt"]["last_error"] is None

    gateway.kill()
    rec.wait(lambda: rec.on(STATUS)[-1].payload == b"offline", 15, "offline (the Will)")
    after = recorder_factory(mosquitto, [STATUS])
    after.wait(lambda: after.on(STATUS), 10, "retained status after the kill")
    assert after.on(STATUS)[0].payload == b"offline"
    assert after.on(STATUS)[0].retain


def test_clean_stop_says_offline_and_discovery_is_sent_again_for_home_assistant(
    tmp_path: Path,
    mosquitto: Mosquitto,
    recorder_factory: Callable[..., Recorder],
    gateway_factory: Callable[[Path], GatewayProcess],
) -> None:
    rec = recorder_factory(mosquitto, [f"{BASE}/#", "homeassistant/sensor/#"])
    config = with_mqtt(gateway_config(tmp_path, pacs_port=free_port(), devices=""), mosquitto)
    gateway = gateway_factory(config)
    gateway.wait_running()
    configs = rec.wait(lambda: rec.on(f"homeassistant/sensor/{GID}_undelivered/config"), 30, "HA")
    assert configs

    def discovery_sent() -> list[Received]:
        return [m for m in rec.all() if m.topic.startswith("homeassistant/sensor/")]

    # The configs arrive one publish after another: wait for the whole set.
    wanted = len(HA_SENSORS)
    assert wanted >= 5, "the key sensors: waiting, oldest, lag, quarantined, disk, alarms…"
    discovery = rec.wait(lambda: len(discovery_sent()) >= wanted and discovery_sent(), 30, "HA")
    late = recorder_factory(mosquitto, ["homeassistant/sensor/#"])
    late.wait(lambda: len(late.all()) >= len(discovery), 10, "retained discovery")
    assert all(m.retain for m in late.all())
    for m in discovery:
        body = m.json()
        assert body["availability_topic"] == STATUS
        assert body["state_topic"] == STATE
        assert body["device"]["identifiers"] == [f"dermgate_{GID}"]
        assert body["unique_id"].startswith(f"dermgate_{GID}_")
    before = len(discovery)

    rec.publish("homeassistant/status", "online")
    rec.wait(
        lambda: (
            len([m for m in rec.all() if m.topic.startswith("homeassistant/sensor/")]) >= 2 * before
        ),
        20,
        "discovery re-published",
    )
    assert "Home Assistant announced itself" in gateway.log()

    assert gateway.stop() == 0
    rec.wait(lambda: rec.on(STATUS)[-1].payload == b"offline", 15, "offline at a clean stop")


@pytest.mark.parametrize("buffer", [1000, 2])
def test_events_of_a_broker_outage_arrive_after_reconnect(
    buffer: int,
    tmp_path: Path,
    mosquitto: Mosquitto,
    gateway_factory: Callable[[Path], GatewayProcess],
    simulator_factory: Callable[..., SimulatorProcess],
) -> None:
    # A subscriber whose session (and its queue) the broker keeps across its restart.
    mosquitto.stop()
    mosquitto.persistent = True
    mosquitto.start()
    rec = Recorder(mosquitto, [EVENTS, STATE], client_id="dashboard", clean_session=False)
    rec.start()
    try:
        config = with_mqtt(
            gateway_config(tmp_path, pacs_port=free_port()), mosquitto, events_buffer=buffer
        )
        gateway = gateway_factory(config)
        gateway.wait_running()
        rec.wait(lambda: rec.on(STATE), 30, "first state")
        before = len(events(rec))

        mosquitto.stop()
        sim = simulator_factory("--captures", "3", "--interval", "0.2")
        assert sim.wait(120) == 0, gateway.log()
        wait_for(lambda: len(states(tmp_path / "state")) == 3, 30, "3 captures saved")
        mosquitto.start()

        rec.wait(lambda: "capture_saved" in kinds(rec)[before:], 60, "events after reconnect")
        if buffer == 1000:
            # The backlog is published one message at a time: wait for all of it.
            rec.wait(lambda: kinds(rec).count("capture_saved") == 3, 60, "every event")
        got = events(rec)
        seqs = [e["seq"] for e in got]
        unique = sorted(set(seqs))
        missing = set(range(1, unique[-1] + 1)) - set(unique)
        reported = sum(e["dropped_before"] for e in got)
        if buffer == 1000:
            assert unique[0] == 1
            assert missing == set(), f"gap in {seqs}"
            assert reported == 0
            assert kinds(rec).count("capture_saved") == 3
        else:
            assert missing, "a 2-event buffer cannot hold the outage's events"
            assert reported == len(missing), (seqs, reported)

            def dropped_in_state() -> bool:
                state = latest_state(rec)
                return state is not None and state["mqtt"]["events_dropped"] == len(missing)

            rec.wait(dropped_in_state, 30, "drops counted in state")
        state = rec.wait(
            lambda: (s := latest_state(rec)) and s["mqtt"]["reconnects"] >= 1 and s, 30, "state"
        )
        assert state["spool"]["undelivered"] == 3
        log = gateway.log()
        assert log.count("MQTT broker") == 2, "the outage and the recovery are logged once each"
    finally:
        rec.stop()


def test_username_password_and_tls_with_client_certificate(
    tmp_path: Path,
    mosquitto_secure: Mosquitto,
    recorder_factory: Callable[..., Recorder],
    gateway_factory: Callable[[Path], GatewayProcess],
) -> None:
    broker = mosquitto_secure
    assert broker.tls is not None
    rec = recorder_factory(broker, [f"{BASE}/#"], username=USER, password=PASSWORD)
    password_file = tmp_path / "mqtt-password"
    password_file.write_text(PASSWORD + "\n", encoding="utf-8")
    config = with_mqtt(
        gateway_config(tmp_path, pacs_port=free_port(), devices=""),
        broker,
        username=USER,
        password_file=str(password_file),
        tls_ca=str(broker.tls.ca),
        tls_cert=str(broker.tls.client_cert),
        tls_key=str(broker.tls.client_key),
    )
    gateway = gateway_factory(config)
    gateway.wait_running()
    rec.wait(lambda: [m for m in rec.on(STATUS) if m.payload == b"online"], 30, "online over TLS")
    rec.wait(lambda: rec.on(STATE), 30, "state over TLS")
    assert gateway.stop() == 0

    # A wrong password: never online, and the failure is logged once, not per retry.
    password_file.write_text("wrong\n", encoding="utf-8")
    rec.messages.clear()
    gateway = gateway_factory(config)
    gateway.wait_running()
    wait_for(lambda: "MQTT broker" in gateway.log(), 30, "the connection failure logged")
    time.sleep(4)  # several retries (reconnect_max = 2 s)
    assert not [m for m in rec.on(STATUS) if m.payload == b"online"]
    assert gateway.log().count("MQTT broker") == 1
    assert gateway.stop() == 0


PATIENT_NAME = "Brannigan^Zelda"
PATIENT_ID = "MRN-5550123"
BIRTH_DATE = "19620317"


@pytest.fixture
def scanner_sims() -> Iterator[list[Simulator]]:
    """Scanner simulators started by a test; stopped at the end."""
    started: list[Simulator] = []
    yield started
    for sim in started:
        sim.close()


def test_no_patient_data_in_any_mqtt_payload(
    tmp_path: Path,
    orthanc: OrthancProcess,
    mosquitto: Mosquitto,
    recorder_factory: Callable[..., Recorder],
    gateway_factory: Callable[[Path], GatewayProcess],
    scanner_sims: list[Simulator],
) -> None:
    rec = recorder_factory(mosquitto, ["#"])
    folder = tmp_path / "exports"
    folder.mkdir()
    config = with_mqtt(
        gateway_config(
            tmp_path,
            pacs_port=orthanc.dicom_port,
            commit_via=orthanc,
            devices=devices_toml(folder),
        ),
        mosquitto,
    )
    gateway = gateway_factory(config)
    gateway.wait_running()
    sim = start_simulator(
        folder,
        tmp_path / "report.json",
        "--patient-name",
        PATIENT_NAME,
        "--patient-id",
        PATIENT_ID,
        "--birth-date",
        BIRTH_DATE,
    )
    scanner_sims.append(sim)
    assert sim.wait(180) == 0, gateway.log()
    export_name = sim.result()["acknowledged"][0]
    wait_for(lambda: (s := states(tmp_path / "state")) and set(s) == {"COMMITTED"}, 90, "COMMITTED")
    rec.wait(lambda: "capture_committed" in kinds(rec), 30, "committed events")
    rec.wait(
        lambda: (s := latest_state(rec)) and s["spool"]["counts"]["COMMITTED"] >= 1, 30, "state"
    )
    # The patient is in the PACS's objects...
    (study,) = {r["study_uid"] for r in ledger_rows(tmp_path / "state")}
    ids = study_instances(orthanc, study)
    assert ids
    for _path, ds in stored_datasets(orthanc, ids, tmp_path / "stored"):
        assert str(ds.PatientName) == PATIENT_NAME
        assert ds.PatientID == PATIENT_ID
        assert ds.PatientBirthDate == BIRTH_DATE
    # ...and in no MQTT message.
    family, given = PATIENT_NAME.split("^")
    secrets = [PATIENT_NAME, family, given, PATIENT_ID, BIRTH_DATE, "1962-03-17", export_name]
    payloads = rec.all()
    assert len(payloads) > 10
    for message in payloads:
        for secret in secrets:
            assert secret.encode() not in message.payload, f"{secret!r} in {message.topic}"
            assert secret not in message.topic


def test_a_pacs_outage_raises_and_clears_alarms_in_events_and_state(
    tmp_path: Path,
    orthanc: OrthancProcess,
    mosquitto: Mosquitto,
    recorder_factory: Callable[..., Recorder],
    gateway_factory: Callable[[Path], GatewayProcess],
    simulator_factory: Callable[..., SimulatorProcess],
) -> None:
    orthanc.stop()
    rec = recorder_factory(mosquitto, [EVENTS, STATE])
    config = with_mqtt(
        gateway_config(
            tmp_path,
            pacs_port=orthanc.dicom_port,
            commit_via=orthanc,
            extra_destination="stuck_after = 2",
        ),
        mosquitto,
    )
    gateway = gateway_factory(config)
    gateway.wait_running()
    sim = simulator_factory("--captures", "1")
    assert sim.wait(120) == 0, gateway.log()

    def alarm_codes() -> set[str]:
        state = latest_state(rec)
        return {a["code"] for a in state["alarms"]} if state else set()

    rec.wait(
        lambda: {"destination_unreachable", "stuck_captures"} <= alarm_codes(), 60, "both alarms"
    )
    state = latest_state(rec)
    assert state is not None
    (pacs,) = state["destinations"]
    assert pacs["reachable"] is False
    assert pacs["last_error"]["code"] == "unreachable"
    assert pacs["pending"] == 1
    assert pacs["stuck"] == 1
    assert state["spool"]["undelivered"] == 1
    assert state["spool"]["oldest_undelivered_age_s"] >= 2
    assert all(a["subject"] == "pacs" and a["message"] for a in state["alarms"])
    raised = [e for e in events(rec) if e["kind"] == "alarm_raised"]
    assert sorted(e["code"] for e in raised) == ["destination_unreachable", "stuck_captures"]

    orthanc.start()
    wait_for(lambda: states(tmp_path / "state") == ["COMMITTED"], 90, "delivered after the outage")
    rec.wait(lambda: not alarm_codes() and latest_state(rec), 60, "alarms cleared in state")
    cleared = [e for e in events(rec) if e["kind"] == "alarm_cleared"]
    assert sorted(e["code"] for e in cleared) == ["destination_unreachable", "stuck_captures"]
    final = latest_state(rec)
    assert final is not None
    assert final["destinations"][0]["reachable"] is True
    assert final["destinations"][0]["last_error"] is None
    assert final["spool"]["counts"]["COMMITTED"] == 1
