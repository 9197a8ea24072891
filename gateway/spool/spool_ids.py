"""Spool ids known before a capture's ledger row exists.

A temporary patient is named after the capture's spool id
(:mod:`gateway.dicom.patient`), and intake writes a JPEG's DICOM header before the
row is committed; so intake reserves the id first (:meth:`Intake.reserve_spool_id`,
from :func:`highest_spool_id`) and inserts the row with it. Captures sharing one
study (a 3D export with driver-chosen UIDs) are named after the study's first
capture (:func:`first_in_study`), so one study never spans two patients. Ledger rows
are never deleted, so an id is never handed out twice.
"""

from __future__ import annotations

import sqlite3

__all__ = ["first_in_study", "highest_spool_id"]


def highest_spool_id(conn: sqlite3.Connection) -> int:
    """The largest spool id in the ledger (0 when it is empty)."""
    row = conn.execute("SELECT coalesce(max(id), 0) FROM captures").fetchone()
    return int(row[0])


def first_in_study(conn: sqlite3.Connection, study_uid: str) -> int | None:
    """The smallest spool id of a capture in study ``study_uid``, if any."""
    row = conn.execute("SELECT min(id) FROM captures WHERE study_uid = ?", (study_uid,)).fetchone()
    return None if row is None or row[0] is None else int(row[0])
