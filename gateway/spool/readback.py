"""Ledger side of DICOMweb confirmation (blocking; run on the ledger thread).

A DICOMweb store has no Storage Commitment. With ``confirm = "read-back"`` the
read-back (:mod:`gateway.forward.readback`) asks QIDO-RS which of the SENT
instances the store lists and records the answer as a commitment report through
:func:`gateway.spool.commitments.apply_report` (same rules: COMMITTED, or sent
again, quarantined after ``confirm_max_failures``). With ``confirm = "response"``
an instance the STOW-RS answer lists as stored is COMMITTED at once
(:func:`commit_delivery`).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from gateway.spool.deliveries import confirm_sent
from gateway.spool.ledger import transaction, utc_now_text
from gateway.spool.states import CaptureState, DeliveryState


@dataclass(frozen=True, slots=True)
class ReadBackCandidate:
    """A SENT instance to look for in the store."""

    spool_id: int
    study_uid: str
    sop_instance_uid: str
    sent_epoch: float


def unconfirmed(conn: sqlite3.Connection, destination: str, limit: int) -> list[ReadBackCandidate]:
    """SENT deliveries to ``destination`` not yet confirmed (capture not quarantined),
    grouped by study (oldest send first within it)."""
    rows = conn.execute(
        "SELECT d.capture_id, c.study_uid, COALESCE(d.sent_sop_instance_uid, c.sop_instance_uid), "
        "COALESCE(d.sent_epoch, 0) "
        "FROM deliveries d JOIN captures c ON c.id = d.capture_id "
        "WHERE d.destination = ? AND d.state = ? AND d.commit_txn IS NULL AND c.state != ? "
        "ORDER BY c.study_uid, d.sent_epoch LIMIT ?",
        (destination, DeliveryState.SENT, CaptureState.QUARANTINED, limit),
    ).fetchall()
    return [ReadBackCandidate(int(r[0]), str(r[1]), str(r[2]), float(r[3])) for r in rows]


def commit_delivery(conn: sqlite3.Connection, spool_id: int, destination: str) -> bool:
    """A SENT delivery is confirmed: COMMITTED (the capture too once all are)."""
    with transaction(conn):
        return confirm_sent(conn, spool_id, destination, utc_now_text())


__all__ = ["ReadBackCandidate", "commit_delivery", "unconfirmed"]
