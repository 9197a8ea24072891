"""Storage commitment bookkeeping without peers: the peer check that decides whether a
report comes from the PACS that was asked, and the open transactions the ledger keeps.

The reports from real and forged peers are in ``tests/e2e/test_commitment_peers.py``.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from gateway.core.config import DicomDestination


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
    from tests.support.dicom_files import DEVICE

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
    from tests.support.dicom_files import DEVICE

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
