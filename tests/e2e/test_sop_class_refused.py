"""A PACS that does not take a SOP class: the capture is refused at once, with a
reason a technician can act on, and sent after the PACS administrator adds the class.

``dermgate run`` with the RCM-1 confocal microscope simulator sends to a real
Orthanc that refuses the Confocal Microscopy classes (``UnknownSopClassAccepted``
false, as shipped); before, such a stack counted as an unreachable PACS and was
retried for ever. A fleet dashboard sees why on MQTT.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.demo.local_orthanc import OrthancProcess
from tests.support.gateway_process import GatewayProcess
from tests.support.mqtt import Mosquitto, Recorder
from tests.support.spool import dermgate
from tests.support.state import delivery_rows, ledger_rows, states
from tests.support.usb_confocal import ConfocalSimulator, confocal_config
from tests.support.waiting import wait_for

EVENTS = "dermgate/test-box-01/events"
STATE = "dermgate/test-box-01/state"
REASON = (
    "the PACS does not accept Confocal Microscopy Image Storage; set fallback or ask the "
    "PACS administrator to accept 1.2.840.10008.5.1.4.1.1.77.1.8"
)


def test_a_stack_the_pacs_refuses_is_quarantined_with_the_reason_then_retried(
    tmp_path: Path,
    shipped_orthanc: OrthancProcess,
    gateway_factory: Callable[[Path], GatewayProcess],
    confocal_sim: Callable[..., ConfocalSimulator],
    mosquitto: Mosquitto,
) -> None:
    state_dir = tmp_path / "state"
    config = confocal_config(tmp_path, shipped_orthanc)
    with config.open("a", encoding="utf-8") as fh:
        fh.write("\n" + mosquitto.config_section())
    dashboard = Recorder(mosquitto, [EVENTS, STATE]).start()
    sim = confocal_sim("--stacks", "1", "--frames", "3", "--size", "32x32")
    gateway = gateway_factory(config)
    assert sim.wait(120) == 0, gateway.log()
    wait_for(lambda: states(state_dir) == ["QUARANTINED"], 60, "the refusal")

    capture = ledger_rows(state_dir)[0]
    assert capture["reason"] == f"pacs refused it: {REASON}"
    delivery = delivery_rows(state_dir)[0]
    assert delivery["state"] == "FAILED"
    assert delivery["error_code"] == "not_accepted"
    assert delivery["attempts"] == 1, "refused at the first association, not retried"
    log = gateway.log()
    assert "destination pacs unavailable" not in log, "the PACS answered: it is reachable"
    assert "circuit open" not in log

    def quarantine_events() -> list[dict[str, Any]]:
        return [m.json() for m in dashboard.on(EVENTS) if m.json()["kind"] == "capture_quarantined"]

    refused = dashboard.wait(quarantine_events, 30, "the capture_quarantined event")
    assert [(e["spool_id"], e["stage"], e["destination"], e["sop_class"]) for e in refused] == [
        (capture["id"], "refused", "pacs", "Confocal Microscopy Image Storage")
    ]

    def destination_says_why() -> bool:
        states_seen = [m.json() for m in dashboard.on(STATE)]
        return any(
            (d.get("last_error") or {}).get("code") == "not_accepted"
            for doc in states_seen
            for d in doc["destinations"]
        )

    dashboard.wait(destination_says_why, 30, "the state document's last error")
    dashboard.stop()
    shown = dermgate("show", str(capture["id"]), config=config)
    assert shown.returncode == 0, shown.stderr
    assert REASON in shown.stdout
    assert shipped_orthanc.count_instances() == 0
    assert gateway.stop() == 0

    # The PACS administrator accepts the class; the technician sends the stack again.
    shipped_orthanc.stop()
    shipped_orthanc.extra["UnknownSopClassAccepted"] = True
    shipped_orthanc.start()
    retried = dermgate("retry", str(capture["id"]), config=config)
    assert retried.returncode == 0, retried.stderr
    gateway.start()
    wait_for(lambda: states(state_dir) == ["COMMITTED"], 90, "delivery after the fix")
    assert len(shipped_orthanc.find_instances(capture["sop_instance_uid"])) == 1
    assert gateway.stop() == 0
