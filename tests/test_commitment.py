"""Storage Commitment through the running gateway, against PACSs that misbehave.

A pynetdicom peer plays the PACS: it stores, accepts N-ACTION, and then reports on a
new association to the gateway's listener exactly as scripted: commit, fail, stay
silent, or report an unknown transaction first. Real Orthanc plays the PACS whose
report cannot reach the gateway.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from gateway.demo.local_orthanc import OrthancProcess, free_port
from tests.conftest import (
    GatewayProcess,
    SimulatorProcess,
    delivery_rows,
    gateway_config,
    ledger_rows,
    states,
    wait_for,
)
from tests.peers import MisbehavingPacs


def start(
    tmp_path: Path,
    pacs: MisbehavingPacs,
    gateway_factory: Callable[[Path], GatewayProcess],
    simulator_factory: Callable[..., SimulatorProcess],
    *,
    captures: int = 1,
    commitment_timeout: float = 20.0,
) -> GatewayProcess:
    pacs.start()
    config = gateway_config(
        tmp_path,
        pacs_port=pacs.port,
        pacs_ae="MISBEHAVE",
        listen_port=pacs.report_to,
        commitment_timeout=commitment_timeout,
    )
    sim = simulator_factory("--captures", str(captures), "--interval", "0.1")
    gateway = gateway_factory(config)
    assert sim.wait(120) == 0
    return gateway


def test_failed_commitment_is_resent_with_the_same_uid_then_committed(
    tmp_path: Path,
    pacs: MisbehavingPacs,
    gateway_factory: Callable[[Path], GatewayProcess],
    simulator_factory: Callable[..., SimulatorProcess],
) -> None:
    pacs.commit_script = ["fail", "commit"]
    gateway = start(tmp_path, pacs, gateway_factory, simulator_factory)
    state_dir = tmp_path / "state"
    wait_for(lambda: states(state_dir) == ["COMMITTED"], 60, "commitment after a re-send")
    uid = ledger_rows(state_dir)[0]["sop_instance_uid"]
    assert pacs.received == [uid, uid], "sent twice, with the same SOP Instance UID"
    assert delivery_rows(state_dir)[0]["commit_failures"] == 1
    # The peer notes each answer once its N-EVENT-REPORT returns: maybe a moment later.
    wait_for(lambda: len(pacs.report_statuses) == 2, 30, "both reports answered")
    assert pacs.report_statuses == [0x0000, 0x0000], "every report is answered with success"
    assert gateway.stop() == 0


def test_repeated_commitment_failure_quarantines_with_the_reason(
    tmp_path: Path,
    pacs: MisbehavingPacs,
    gateway_factory: Callable[[Path], GatewayProcess],
    simulator_factory: Callable[..., SimulatorProcess],
) -> None:
    pacs.commit_script = ["fail", "fail", "fail"]
    gateway = start(tmp_path, pacs, gateway_factory, simulator_factory)
    state_dir = tmp_path / "state"
    wait_for(lambda: states(state_dir) == ["QUARANTINED"], 60, "quarantine")
    row = ledger_rows(state_dir)[0]
    assert "could not commit it 3 times" in row["reason"]
    assert "0x0112 no such object instance" in row["reason"]
    assert len(pacs.received) == 3
    assert (state_dir / "spool" / "dicom" / row["dicom_name"]).exists()
    assert gateway.stop() == 0


def test_report_for_an_unknown_transaction_is_refused_and_harmless(
    tmp_path: Path,
    pacs: MisbehavingPacs,
    gateway_factory: Callable[[Path], GatewayProcess],
    simulator_factory: Callable[..., SimulatorProcess],
) -> None:
    pacs.commit_script = ["unknown-then-commit"]
    gateway = start(tmp_path, pacs, gateway_factory, simulator_factory)
    state_dir = tmp_path / "state"
    wait_for(lambda: states(state_dir) == ["COMMITTED"], 60, "commitment")
    wait_for(lambda: len(pacs.report_statuses) == 2, 30, "both reports answered")
    # A transaction we never requested is refused (0x0110), the real one applied.
    assert pacs.report_statuses == [0x0110, 0x0000]
    assert "refused (a transaction we never requested)" in gateway.log()
    assert gateway.stop() == 0


def test_unanswered_request_survives_a_restart_and_is_asked_again(
    tmp_path: Path,
    pacs: MisbehavingPacs,
    gateway_factory: Callable[[Path], GatewayProcess],
    simulator_factory: Callable[..., SimulatorProcess],
) -> None:
    pacs.commit_script = ["silent", "commit"]
    gateway = start(tmp_path, pacs, gateway_factory, simulator_factory, commitment_timeout=3.0)
    state_dir = tmp_path / "state"
    wait_for(lambda: len(pacs.actions) == 1, 60, "a first commitment request")
    gateway.kill()
    assert states(state_dir) == ["SENT"]
    restarted = gateway_factory(gateway.config)
    wait_for(lambda: states(state_dir) == ["COMMITTED"], 60, "commitment after re-request")
    assert len(pacs.actions) == 2
    assert pacs.actions[0] != pacs.actions[1], "a new transaction for the re-request"
    assert len(pacs.received) == 1, "asking again does not send again"
    assert restarted.stop() == 0


def test_listener_unreachable_keeps_captures_sent_and_asks_again(
    tmp_path: Path,
    gateway_factory: Callable[[Path], GatewayProcess],
    simulator_factory: Callable[..., SimulatorProcess],
) -> None:
    # Orthanc knows us at a port where nothing listens: its reports go nowhere.
    orthanc = OrthancProcess(
        tmp_path / "orthanc", modalities={"dermgate": ("DERMGATE", "127.0.0.1", free_port())}
    )
    orthanc.start()
    try:
        config = gateway_config(
            tmp_path,
            pacs_port=orthanc.dicom_port,
            listen_port=free_port(),
            commitment_timeout=2,
            extra_destination="commitment_alarm_after = 3",
        )
        sim = simulator_factory("--captures", "1")
        gateway = gateway_factory(config)
        assert sim.wait(120) == 0
        state_dir = tmp_path / "state"
        wait_for(lambda: "asking again" in gateway.log(), 60, "a re-request after the timeout")
        assert states(state_dir) == ["SENT"], "not COMMITTED without a report"
        uid = ledger_rows(state_dir)[0]["sop_instance_uid"]
        assert len(orthanc.find_instances(uid)) == 1
        assert orthanc.count_instances() == 1, "re-requests do not re-send"
        # Asking again does not restart the clock: the technician is told.
        wait_for(
            lambda: "pacs stores captures but does not confirm them" in gateway.log(),
            60,
            "the commitment_overdue alarm",
        )
        assert gateway.stop() == 0
    finally:
        orthanc.stop()
