"""Spool ids: handed out once for the life of the box, even across a lost ledger.

A temporary patient is named after the capture's spool id
(:mod:`gateway.core.patient`), and intake writes a JPEG's DICOM header before the
row is committed; so intake reserves the id first (:meth:`Intake.reserve_spool_id`)
and inserts the row with it. Captures sharing one study (a 3D export with
driver-chosen UIDs) are named after the study's first capture
(:func:`first_in_study`), so one study never spans two patients.

An id that reached a PACS inside ``TMP-<gateway id>-<spool id>`` must never name a
second capture, or the PACS files two people under one patient. The ledger alone
cannot promise that: it can be lost (``dermgate spool rebuild`` then writes a new
one) or restored from an older copy, and the purged captures that used the higher
ids are no longer in any file. So the box keeps a **high-water mark** outside the
ledger, ``STATE_DIR/spool-ids.next``: one line, a number that no spool id handed out
so far reaches (every id used is below it). :class:`SpoolIdCounter` reserves ids in
blocks of :data:`BLOCK`: when the next id reaches the recorded mark, the mark moves
a block ahead first (written to a temporary file, fsynced, renamed, folder fsynced),
then the id is handed out. So a crash at any point loses at most the rest of a block
(a gap in the numbering), never hands an id out twice; and a clean stop records the
exact next id, so a restart after one continues without a gap.

At start-up the next id is the larger of the ledger's highest id + 1 and the mark; a
box whose mark is missing (older DermGate) starts from the ledger and writes one. A
mark that is not a number is never guessed past: the service refuses to start
(:class:`SpoolIdMarkDamaged`), because a guess too low would hand out ids again.
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import threading
from pathlib import Path
from typing import Final

from gateway.core.files import fsync_dir
from gateway.core.state_owner import owned_like

__all__ = [
    "BLOCK",
    "HIGH_WATER_NAME",
    "MAX_SPOOL_ID",
    "SpoolIdCounter",
    "SpoolIdMarkDamaged",
    "first_in_study",
    "high_water_path",
    "highest_spool_id",
    "read_high_water",
    "write_high_water",
]

HIGH_WATER_NAME: Final = "spool-ids.next"
#: Ids reserved per write of the mark: at most one extra fsync per this many captures.
BLOCK: Final = 1000
#: Largest spool id handed out (SQLite's rowid is 64-bit; ``TMP-…-<id>`` fits LO).
MAX_SPOOL_ID: Final = (1 << 62) - 1
_NUMBER = re.compile(rb"[1-9][0-9]{0,18}\n?")
_MARK_MODE: Final = 0o644


class SpoolIdMarkDamaged(RuntimeError):
    """``spool-ids.next`` is not a number: spool ids could be handed out twice."""

    def __init__(self, path: Path, what: str) -> None:
        super().__init__(path, what)
        self.path = path
        self.what = what

    def __str__(self) -> str:
        return (
            f"the spool id high-water mark {self.path} is damaged ({self.what}); nothing was "
            "changed. It records a number above every spool id this box has handed out, so "
            "that no temporary Patient ID (TMP-<gateway id>-<spool id>) names two captures. "
            "Write into it a number larger than every spool id the box has used (the highest "
            "N of TMP-<gateway id>-N at the PACS, and dermgate spool list); when in doubt take "
            f"a much larger one, a gap costs nothing (for example: echo 1000000 > {self.path}), "
            "then start again"
        )


def high_water_path(state_dir: Path) -> Path:
    """Where the high-water mark of ``state_dir`` lives (beside the ledger)."""
    return state_dir / HIGH_WATER_NAME


def read_high_water(path: Path) -> int | None:
    """The recorded mark (every spool id used is below it), None when there is none.

    Raises :class:`SpoolIdMarkDamaged` for anything but one positive number.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as err:
        raise SpoolIdMarkDamaged(path, f"cannot be read: {err.strerror}") from err
    try:
        data = os.read(fd, 64)
    finally:
        os.close(fd)
    if not _NUMBER.fullmatch(data):
        what = "empty" if not data else f"{len(data)} bytes that are not one number"
        raise SpoolIdMarkDamaged(path, what)
    value = int(data)
    if value > MAX_SPOOL_ID + 1:
        raise SpoolIdMarkDamaged(path, f"larger than {MAX_SPOOL_ID + 1}")
    return value


def write_high_water(path: Path, value: int) -> None:
    """Record ``value`` as the mark, atomically and durably (blocking).

    Run as root (``dermgate spool rebuild``), the file gets the owner of its folder,
    the service's user, before it takes the place of the old one.
    """
    if not 1 <= value <= MAX_SPOOL_ID + 1:
        raise ValueError(f"spool id mark out of range: {value}")
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(
        tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, _MARK_MODE
    )
    try:
        try:
            os.write(fd, f"{value}\n".encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        owned_like(path.parent, tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


class SpoolIdCounter:
    """Hands out spool ids that this box never handed out before (thread-safe).

    :meth:`take` may write the mark (blocking: call it on a worker thread);
    :meth:`close` records the exact next id on a clean stop.
    """

    def __init__(self, path: Path, next_id: int, recorded: int, block: int = BLOCK) -> None:
        if block < 1:
            raise ValueError("block must be at least 1")
        self.path = path
        self._next = next_id
        self._recorded = recorded  # the mark on disk: ids below it may be handed out
        self._block = block
        self._lock = threading.Lock()

    @classmethod
    def open(cls, path: Path, ledger_highest: int, block: int = BLOCK) -> SpoolIdCounter:
        """The counter for the box whose ledger's largest spool id is ``ledger_highest``
        (blocking). A missing mark, or one below the ledger's, is written at once.

        Raises :class:`SpoolIdMarkDamaged`.
        """
        mark = read_high_water(path)
        next_id = max(ledger_highest + 1, mark or 1)
        if mark is None or mark < next_id:
            write_high_water(path, next_id)
        return cls(path, next_id, next_id, block)

    @property
    def next_id(self) -> int:
        """The id the next :meth:`take` returns."""
        return self._next

    def take(self) -> int:
        """A spool id never handed out before; the mark is past it before it returns."""
        with self._lock:
            spool_id = self._next
            if spool_id > MAX_SPOOL_ID:
                raise OverflowError("no spool ids left")
            if spool_id >= self._recorded:
                ahead = min(spool_id + self._block, MAX_SPOOL_ID + 1)
                write_high_water(self.path, ahead)
                self._recorded = ahead
            self._next = spool_id + 1
            return spool_id

    def close(self) -> None:
        """Record the exact next id (a clean stop): the next start continues from it."""
        with self._lock:
            if self._next < self._recorded:
                write_high_water(self.path, self._next)
                self._recorded = self._next


def highest_spool_id(conn: sqlite3.Connection) -> int:
    """The largest spool id in the ledger (0 when it is empty)."""
    row = conn.execute("SELECT coalesce(max(id), 0) FROM captures").fetchone()
    return int(row[0])


def first_in_study(conn: sqlite3.Connection, study_uid: str) -> int | None:
    """The smallest spool id of a capture in study ``study_uid``, if any."""
    row = conn.execute("SELECT min(id) FROM captures WHERE study_uid = ?", (study_uid,)).fetchone()
    return None if row is None or row[0] is None else int(row[0])
