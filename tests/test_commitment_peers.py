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

from gateway.core.config import DicomDestination
from tests.conftest import (
    GatewayProcess,
    SimulatorProcess,
    gateway_config,
    ledger_rows,
    states,
    wait_for,
)
from tests.peers import MisbehavingPacs, send_report

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


def _destination(**keys: Any) -> DicomDestination:
    base: dict[str, Any] = {
        "name": "pacs",
        "kind": "dicom",
        "ae_title": "PACS",
        "host": "localhost",
        "port": 104,
    }
    return DicomDestination.model_validate(base | keys)


def test_peer_check_resolves_host_names_and_compares_addresses() -> None:
    from gateway.forward.peer_check import PeerCheck  # new in issue 10

    check = PeerCheck([_destination(), _destination(name="other", host="10.0.0.9")])
    assert check.matches("pacs", "PACS", "127.0.0.1"), "localhost resolves to 127.0.0.1"
    assert check.matches("pacs", "PACS", "::ffff:127.0.0.1"), "an IPv4-mapped peer address"
    assert not check.matches("pacs", "PACS", "127.0.0.2")
    assert not check.matches("pacs", "EVIL", "127.0.0.1")
    assert not check.matches("other", "PACS", "127.0.0.1"), "the other destination's host"
    assert check.matches("other", "PACS", "10.0.0.9")
    assert not check.matches("gone", "PACS", "127.0.0.1"), "a destination no longer configured"
    assert check.any_destination("PACS", "10.0.0.9")
    assert not check.any_destination("PACS", "192.0.2.1")
    listed = PeerCheck([_destination(commitment_from=["192.0.2.1", "2001:db8::1"])])
    assert listed.matches("pacs", "PACS", "192.0.2.1")
    assert listed.matches("pacs", "PACS", "2001:db8:0::1"), "addresses compared, not strings"


def test_open_transactions_of_an_older_ledger_keep_what_they_asked_about(tmp_path: Path) -> None:
    from gateway.core.capture import CaptureOffer
    from gateway.spool import commitments, schema
    from gateway.spool import ledger as db
    from tests.dicom_files import DEVICE

    path = tmp_path / "ledger.sqlite3"
    old = sqlite3.connect(path, isolation_level=None)
    for step in (1, 2, 3):
        old.executescript(schema._MIGRATIONS[step])
    old.execute("PRAGMA user_version = 3")
    for n in (1, 2):
        old.execute(
            "INSERT INTO captures (driver, device_serial, device_capture_id, device_json, "
            "offer_json, raw_name, raw_size, raw_sha256, study_uid, series_uid, "
            "sop_instance_uid, state, received_at, updated_at) VALUES ('d', 's', ?, ?, ?, 'r', "
            "1, 'x', '1.2', '1.3', ?, 'SENT', 't', 't')",
            (str(n), db.device_to_json(DEVICE), db.offer_to_json(CaptureOffer(str(n))), f"1.4.{n}"),
        )
    old.execute(
        "INSERT INTO deliveries (capture_id, destination, state, next_attempt_at, sent_epoch, "
        "commit_txn) VALUES (1, 'pacs', 'SENT', 0, 1, '2.25.7'), (2, 'pacs', 'SENT', 0, 1, NULL)"
    )
    old.execute(
        "INSERT INTO commitments (transaction_uid, destination, created_epoch, requested_epoch, "
        "state) VALUES ('2.25.7', 'pacs', 2, 2, 'OPEN')"
    )
    old.close()

    conn = db.open_ledger(path)
    try:
        outcome = commitments.apply_report(conn, "2.25.7", ["1.4.1", "1.4.2"], [], 3, "pacs")
        assert (outcome.committed, outcome.not_asked) == (1, 1)
        got = [r[0] for r in conn.execute("SELECT state FROM captures ORDER BY id")]
        assert got == ["COMMITTED", "SENT"]
    finally:
        conn.close()


def test_ended_transactions_are_forgotten_after_a_while(tmp_path: Path) -> None:
    """A PACS that never answers is asked again and again: the ledger must not grow for ever."""
    from gateway.core.capture import CaptureOffer, InstanceUIDs
    from gateway.spool import commitments
    from gateway.spool import ledger as db
    from tests.dicom_files import DEVICE

    conn = db.open_ledger(tmp_path / "ledger.sqlite3")
    try:
        spool_id = db.insert_capture(
            conn,
            driver="d",
            device=DEVICE,
            offer=CaptureOffer("1"),
            uids=InstanceUIDs("1.2", "1.3", "1.4"),
            raw_name="r",
            raw_size=1,
            raw_sha256="x",
            wrapped=db.WrappedAtIntake(
                "f.dcm", "1.2.840.10008.5.1.4.1.1.77.1.4.1", "1.2", ("pacs",)
            ),
        )
        db.record_sent(conn, spool_id, "pacs", now=50.0)
        for n, created in enumerate((100.0, 200.0, 300.0)):
            commitments.open_transaction(conn, "pacs", f"2.25.{n}", [spool_id], created)
            commitments.mark_requested(conn, f"2.25.{n}", created)
            if n < 2:
                commitments.expire(conn, f"2.25.{n}")
        assert commitments.overdue(conn, "pacs", 150.0) == 1, "counted from the first request"
        assert commitments.forget_ended(conn, "pacs", 250.0) == 2
        assert commitments.forget_ended(conn, "pacs", 1000.0) == 0, "the open one stays"
        assert conn.execute("SELECT COUNT(*) FROM commitment_items").fetchone()[0] == 1
        late = commitments.apply_report(conn, "2.25.0", ["1.4"], [], 3, "pacs")
        assert not late.known, "a forgotten transaction is refused like an unknown one"
        assert db.get_capture(conn, spool_id).state == "SENT"  # type: ignore[union-attr]
    finally:
        conn.close()
