"""Delivery through the running gateway when the PACS misbehaves (real pynetdicom SCPs).

The captures are acknowledged and kept whatever the PACS does; they are delivered
when it behaves again, always with the same SOP Instance UID; a permanent refusal
quarantines the capture with the PACS's status as the reason.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from gateway.demo.local_orthanc import OrthancProcess, free_port
from tests.support.gateway_process import GatewayProcess, gateway_config
from tests.support.peers import MisbehavingPacs
from tests.support.simulator import SimulatorProcess
from tests.support.state import delivery_rows, ledger_rows, states
from tests.support.waiting import wait_for


def test_pacs_aborting_mid_transfer_then_delivered_once_with_same_uid(
    tmp_path: Path,
    pacs: MisbehavingPacs,
    gateway_factory: Callable[[Path], GatewayProcess],
    simulator_factory: Callable[..., SimulatorProcess],
) -> None:
    pacs.script = ["abort", "abort"]
    pacs.start()
    config = gateway_config(tmp_path, pacs_port=pacs.port, pacs_ae="MISBEHAVE")
    sim = simulator_factory("--captures", "2", "--interval", "0.1")
    gateway = gateway_factory(config)
    assert sim.wait(120) == 0
    state_dir = tmp_path / "state"
    wait_for(lambda: states(state_dir) == ["SENT", "SENT"], 60, "delivery after aborts")
    uids = sorted(r["sop_instance_uid"] for r in ledger_rows(state_dir))
    assert sorted(pacs.received) == uids, "each instance stored once, same UIDs"
    attempts = sum(d["attempts"] for d in delivery_rows(state_dir))
    assert attempts >= 4, "two aborted attempts, then one successful one each"
    assert gateway.stop() == 0


def test_pacs_refusing_associations_then_accepting(
    tmp_path: Path,
    pacs: MisbehavingPacs,
    gateway_factory: Callable[[Path], GatewayProcess],
    simulator_factory: Callable[..., SimulatorProcess],
) -> None:
    pacs.start()
    pacs.reject_associations(True)
    config = gateway_config(tmp_path, pacs_port=pacs.port, pacs_ae="MISBEHAVE")
    sim = simulator_factory("--captures", "1")
    gateway = gateway_factory(config)
    assert sim.wait(120) == 0, "acknowledged although the PACS refuses"
    state_dir = tmp_path / "state"

    def refused_twice() -> bool:
        rows = delivery_rows(state_dir) if ledger_rows(state_dir) else []
        return bool(rows) and rows[0]["attempts"] >= 2 and "rejected" in rows[0]["last_error"]

    wait_for(refused_twice, 60, "retries while the PACS refuses")
    uid = ledger_rows(state_dir)[0]["sop_instance_uid"]
    pacs.reject_associations(False)
    wait_for(lambda: states(state_dir) == ["SENT"], 60, "delivery once the PACS accepts")
    assert pacs.received == [uid]
    log = gateway.log()
    assert log.count("destination pacs unavailable") == 1, "a state change is logged once"
    assert log.count("destination pacs reachable") == 1
    assert log.count("circuit open") <= 1, "an outage is announced once"
    assert gateway.stop() == 0


def test_permanent_refusal_quarantines_with_the_status(
    tmp_path: Path,
    pacs: MisbehavingPacs,
    gateway_factory: Callable[[Path], GatewayProcess],
    simulator_factory: Callable[..., SimulatorProcess],
) -> None:
    pacs.script = [0xC000]
    pacs.start()
    config = gateway_config(tmp_path, pacs_port=pacs.port, pacs_ae="MISBEHAVE")
    sim = simulator_factory("--captures", "1")
    gateway = gateway_factory(config)
    assert sim.wait(120) == 0
    state_dir = tmp_path / "state"
    wait_for(lambda: states(state_dir) == ["QUARANTINED"], 60, "quarantine")
    row = ledger_rows(state_dir)[0]
    assert "0xC000" in row["reason"]
    assert (state_dir / "spool" / "dicom" / row["dicom_name"]).exists(), "kept for a technician"
    assert delivery_rows(state_dir)[0]["attempts"] == 1, "not retried blindly"
    assert gateway.stop() == 0


def test_out_of_resources_is_retried(
    tmp_path: Path,
    pacs: MisbehavingPacs,
    gateway_factory: Callable[[Path], GatewayProcess],
    simulator_factory: Callable[..., SimulatorProcess],
) -> None:
    pacs.script = [0xA700]
    pacs.start()
    config = gateway_config(tmp_path, pacs_port=pacs.port, pacs_ae="MISBEHAVE")
    sim = simulator_factory("--captures", "1")
    gateway = gateway_factory(config)
    assert sim.wait(120) == 0
    state_dir = tmp_path / "state"
    wait_for(lambda: states(state_dir) == ["SENT"], 60, "delivery after 0xA700")
    assert delivery_rows(state_dir)[0]["attempts"] == 2
    assert pacs.received == [ledger_rows(state_dir)[0]["sop_instance_uid"]]
    assert gateway.stop() == 0


def test_link_restored_by_echo_retries_at_once(
    tmp_path: Path,
    gateway_factory: Callable[[Path], GatewayProcess],
    simulator_factory: Callable[..., SimulatorProcess],
) -> None:
    """The circuit opens on a dead PACS; the first answered C-ECHO makes all due now."""
    port = free_port()
    config = gateway_config(
        tmp_path,
        pacs_port=port,
        retry_initial=20.0,
        retry_max=60.0,
        extra_destination="breaker_threshold = 1",
    )
    sim = simulator_factory("--captures", "1")
    gateway = gateway_factory(config)
    assert sim.wait(120) == 0
    state_dir = tmp_path / "state"
    wait_for(lambda: "circuit open" in gateway.log(), 60, "the circuit to open")
    scheduled = delivery_rows(state_dir)[0]["next_attempt_at"]
    pacs = OrthancProcess(tmp_path / "late-orthanc", dicom_port=port)
    pacs.start()
    try:
        wait_for(lambda: states(state_dir) == ["SENT"], 60, "delivery after the link is back")
        row = delivery_rows(state_dir)[0]
        assert row["sent_epoch"] < scheduled, "sent before its backoff ran out"
        assert row["attempts"] == 2
        assert "link restored, 1 pending delivery(ies) due now" in gateway.log()
    finally:
        pacs.stop()
    assert gateway.stop() == 0


def test_parallel_associations_deliver_everything_once(
    tmp_path: Path,
    pacs: MisbehavingPacs,
    gateway_factory: Callable[[Path], GatewayProcess],
    simulator_factory: Callable[..., SimulatorProcess],
) -> None:
    pacs.start()
    config = gateway_config(
        tmp_path,
        pacs_port=pacs.port,
        pacs_ae="MISBEHAVE",
        extra_destination="associations = 3\nbatch_size = 1",
    )
    sim = simulator_factory("--captures", "6", "--interval", "0")
    gateway = gateway_factory(config)
    assert sim.wait(120) == 0
    state_dir = tmp_path / "state"
    wait_for(lambda: states(state_dir) == ["SENT"] * 6, 60, "delivery of all 6")
    assert sorted(pacs.received) == sorted(r["sop_instance_uid"] for r in ledger_rows(state_dir))
    assert all(d["attempts"] == 1 for d in delivery_rows(state_dir))
    assert gateway.stop() == 0


def test_stuck_alarm_is_raised_once_and_cleared(
    tmp_path: Path,
    pacs: MisbehavingPacs,
    gateway_factory: Callable[[Path], GatewayProcess],
    simulator_factory: Callable[..., SimulatorProcess],
) -> None:
    pacs.start()
    pacs.reject_associations(True)
    config = gateway_config(
        tmp_path,
        pacs_port=pacs.port,
        pacs_ae="MISBEHAVE",
        retry_max=1.0,
        extra_destination="stuck_after = 2",
    )
    sim = simulator_factory("--captures", "1")
    gateway = gateway_factory(config)
    assert sim.wait(120) == 0
    wait_for(lambda: "STUCK: 1 capture(s)" in gateway.log(), 60, "the stuck alarm")
    pacs.reject_associations(False)
    wait_for(lambda: "stuck alarm for pacs cleared" in gateway.log(), 60, "the alarm to clear")
    assert gateway.log().count("STUCK:") == 1
    assert states(tmp_path / "state") == ["SENT"]
    assert gateway.stop() == 0


def test_pacs_without_c_echo_still_gets_its_captures(
    tmp_path: Path,
    pacs: MisbehavingPacs,
    gateway_factory: Callable[[Path], GatewayProcess],
    simulator_factory: Callable[..., SimulatorProcess],
) -> None:
    """Half-open trials: a PACS that refuses C-ECHO never keeps the circuit shut."""
    pacs.start(echo=False)
    pacs.reject_associations(True)
    config = gateway_config(
        tmp_path,
        pacs_port=pacs.port,
        pacs_ae="MISBEHAVE",
        retry_initial=0.2,
        retry_max=1.0,
        extra_destination="breaker_threshold = 1",
    )
    sim = simulator_factory("--captures", "1")
    gateway = gateway_factory(config)
    assert sim.wait(120) == 0
    wait_for(lambda: "circuit open" in gateway.log(), 60, "the circuit to open")
    pacs.reject_associations(False)  # stores again, but still answers no C-ECHO
    wait_for(lambda: states(tmp_path / "state") == ["SENT"], 90, "delivery via a trial")
    assert "link restored" not in gateway.log()
    assert gateway.stop() == 0
