"""Storage commitment reports count only from the PACS that was asked, for what it was asked.

A report marks captures COMMITTED, and COMMITTED captures are purged: a forged or
stray N-EVENT-REPORT would delete acknowledged captures the PACS never stored. Here
a pynetdicom peer plays the PACS (it stores, accepts N-ACTION and keeps its report
back until the test lets it go), and the test itself plays strangers on the clinic
network: another AE title from the PACS's address, the PACS's AE title from
another address (127.0.0.2 on loopback), and the PACS's own reports naming
instances its transaction never asked about. Each must be answered with a failure
status and leave the ledger exactly as it was; the real report still commits.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.support.gateway_process import GatewayProcess, gateway_config
from tests.support.peers import MisbehavingPacs, send_report
from tests.support.simulator import SimulatorProcess
from tests.support.state import ledger_rows, states
from tests.support.waiting import wait_for

PROCESSING_FAILURE = 0x0110


def _start(
    tmp_path: Path,
    pacs: MisbehavingPacs,
    gateway_factory: Callable[[Path], GatewayProcess],
    simulator_factory: Callable[..., SimulatorProcess],
    *,
    captures: int = 1,
    interval: float = 0.1,
    extra: str = "",
    retry_initial: float = 0.5,
    retry_max: float = 2.0,
) -> GatewayProcess:
    pacs.start()
    config = gateway_config(
        tmp_path,
        pacs_port=pacs.port,
        pacs_ae="MISBEHAVE",
        listen_port=pacs.report_to,
        commitment_timeout=300.0,
        retry_initial=retry_initial,
        retry_max=retry_max,
        extra_destination=extra,
    )
    simulator_factory("--captures", str(captures), "--interval", str(interval))
    return gateway_factory(config)


def _ledger(state_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """Every row of the tables a report could change."""
    conn = sqlite3.connect(f"file:{state_dir / 'ledger.sqlite3'}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        return {
            table: [dict(r) for r in conn.execute(f"SELECT * FROM {table} ORDER BY rowid")]
            for table in ("captures", "deliveries", "commitments")
        }
    finally:
        conn.close()


def _txn_state(state_dir: Path, txn: str) -> str | None:
    rows = _ledger(state_dir)["commitments"]
    return next((str(r["state"]) for r in rows if r["transaction_uid"] == txn), None)


def _state_of(state_dir: Path, sop_instance_uid: str) -> str:
    row = next(r for r in ledger_rows(state_dir) if r["sop_instance_uid"] == sop_instance_uid)
    return str(row["state"])


def _refusals(log: str, needle: str) -> int:
    """Refusals logged above DEBUG that mention ``needle``."""
    return sum(
        1
        for line in log.splitlines()
        if "refused" in line and needle in line and " DEBUG " not in line
    )


def test_reports_from_strangers_are_refused_and_change_nothing(
    tmp_path: Path,
    pacs: MisbehavingPacs,
    gateway_factory: Callable[[Path], GatewayProcess],
    simulator_factory: Callable[..., SimulatorProcess],
) -> None:
    pacs.commit_script = ["hold"]
    gateway = _start(tmp_path, pacs, gateway_factory, simulator_factory)
    state_dir = tmp_path / "state"
    wait_for(lambda: pacs.held and states(state_dir) == ["SENT"], 90, "a request held by the PACS")
    txn, refs = pacs.held[0]
    # The gateway records the request as accepted once the N-ACTION answer is back:
    # only then is the ledger still, for the comparison below.
    wait_for(
        lambda: any(
            r["transaction_uid"] == txn and r["requested_epoch"] is not None
            for r in _ledger(state_dir)["commitments"]
        ),
        30,
        "the accepted request recorded",
    )
    before = _ledger(state_dir)
    assert pacs.report_to is not None

    # Another AE title from the PACS's own address, twice (logged once), then the
    # PACS's AE title from another address.
    statuses = [send_report(pacs.report_to, txn, refs, calling_ae="EVIL") for _ in range(2)]
    statuses.append(send_report(pacs.report_to, txn, refs, source="127.0.0.2"))

    assert _ledger(state_dir) == before, "a refused report never touches the ledger"
    assert statuses == [PROCESSING_FAILURE] * 3
    row = ledger_rows(state_dir)[0]
    assert (state_dir / "spool" / "dicom" / row["dicom_name"]).exists(), "nothing purged"
    log = gateway.log()
    assert _refusals(log, "'EVIL'") == 1, "a stranger is logged once, not per report"
    assert _refusals(log, "127.0.0.2") == 1
    assert txn not in log, "the transaction UID is not written to the log"

    # The PACS's own report still commits.
    pacs.release_held()
    wait_for(lambda: states(state_dir) == ["COMMITTED"], 60, "the real report")
    wait_for(lambda: pacs.report_statuses, 30, "the real report answered")
    assert pacs.report_statuses == [0x0000]
    assert gateway.stop() == 0


def test_a_report_touches_only_what_its_transaction_asked_about(
    tmp_path: Path,
    pacs: MisbehavingPacs,
    gateway_factory: Callable[[Path], GatewayProcess],
    simulator_factory: Callable[..., SimulatorProcess],
) -> None:
    # Capture A: its request is held (OPEN). Capture B, a few seconds later: its
    # request is refused, so B is SENT and in no open transaction (the requester
    # then waits 15-30 s before asking again).
    pacs.commit_script = ["hold", "refuse", "silent", "silent"]
    gateway = _start(
        tmp_path,
        pacs,
        gateway_factory,
        simulator_factory,
        captures=2,
        interval=4.0,
        retry_initial=30.0,
        retry_max=60.0,
    )
    state_dir = tmp_path / "state"
    wait_for(lambda: len(pacs.actions) == 2, 90, "two commitment requests")
    txn_a, txn_b = pacs.actions
    wait_for(lambda: _txn_state(state_dir, txn_b) == "EXPIRED", 30, "the refused request expired")
    refs_a, refs_b = pacs.requested[txn_a], pacs.requested[txn_b]
    uid_a, uid_b = refs_a[0][1], refs_b[0][1]
    assert states(state_dir) == ["SENT", "SENT"]
    before_b = [r for r in _ledger(state_dir)["deliveries"] if r["capture_id"] == 2]

    # The PACS (right AE title, right address) reports on A's transaction, naming B too.
    assert pacs.report_to is not None
    status = send_report(pacs.report_to, txn_a, refs_a + refs_b)
    assert _state_of(state_dir, uid_a) == "COMMITTED", "its own instance is confirmed"
    assert _state_of(state_dir, uid_b) == "SENT", "an instance it did not ask about is not"
    assert status == PROCESSING_FAILURE, "what could not be applied is answered as a failure"
    assert [r for r in _ledger(state_dir)["deliveries"] if r["capture_id"] == 2] == before_b
    assert _refusals(gateway.log(), "did not ask about") == 1
    assert gateway.stop() == 0


def test_a_report_for_an_expired_transaction_confirms_only_its_own_instances(
    tmp_path: Path,
    pacs: MisbehavingPacs,
    gateway_factory: Callable[[Path], GatewayProcess],
    simulator_factory: Callable[..., SimulatorProcess],
) -> None:
    # A's request is refused (EXPIRED at once); B arrives while the requester waits.
    pacs.commit_script = ["refuse", "silent", "silent"]
    gateway = _start(
        tmp_path,
        pacs,
        gateway_factory,
        simulator_factory,
        captures=2,
        interval=4.0,
        retry_initial=30.0,
        retry_max=60.0,
    )
    state_dir = tmp_path / "state"
    wait_for(lambda: len(pacs.actions) == 1, 90, "the first commitment request")
    txn_a = pacs.actions[0]
    wait_for(lambda: _txn_state(state_dir, txn_a) == "EXPIRED", 30, "the request expired")
    wait_for(lambda: states(state_dir) == ["SENT", "SENT"], 60, "B stored too")
    assert len(pacs.actions) == 1, "B has not been asked about"
    refs_a = pacs.requested[txn_a]
    row_b = ledger_rows(state_dir)[1]
    refs_b = [(str(row_b["sop_class_uid"]), str(row_b["sop_instance_uid"]))]
    before_b = [r for r in _ledger(state_dir)["deliveries"] if r["capture_id"] == 2]

    assert pacs.report_to is not None
    status = send_report(pacs.report_to, txn_a, refs_a + refs_b)
    assert states(state_dir) == ["COMMITTED", "SENT"], "late, but still its own instance"
    assert status == PROCESSING_FAILURE
    assert [r for r in _ledger(state_dir)["deliveries"] if r["capture_id"] == 2] == before_b
    assert (state_dir / "spool" / "dicom" / row_b["dicom_name"]).exists()

    # A report naming only instances it never asked about changes nothing at all: not
    # B, not A's transaction (the rest of the ledger may move on: purge, requests).
    def touched() -> tuple[object, ...]:
        rows = _ledger(state_dir)
        return (
            [r for r in rows["captures"] if r["id"] == 2],
            [r for r in rows["deliveries"] if r["capture_id"] == 2],
            [r for r in rows["commitments"] if r["transaction_uid"] == txn_a],
        )

    before = touched()
    assert send_report(pacs.report_to, txn_a, refs_b) == PROCESSING_FAILURE
    assert touched() == before
    assert gateway.stop() == 0


def test_commitment_from_lets_the_pacs_report_from_another_address(
    tmp_path: Path,
    pacs: MisbehavingPacs,
    gateway_factory: Callable[[Path], GatewayProcess],
    simulator_factory: Callable[..., SimulatorProcess],
) -> None:
    # The PACS is reached at 127.0.0.1 but reports from 127.0.0.2 (a cluster node).
    pacs.report_from = "127.0.0.2"
    gateway = _start(
        tmp_path,
        pacs,
        gateway_factory,
        simulator_factory,
        extra='commitment_from = ["127.0.0.2"]',
    )
    state_dir = tmp_path / "state"
    wait_for(lambda: states(state_dir) == ["COMMITTED"], 90, "commitment from the listed address")
    wait_for(lambda: pacs.report_statuses, 30, "the report answered")
    assert pacs.report_statuses == [0x0000]
    assert gateway.stop() == 0
