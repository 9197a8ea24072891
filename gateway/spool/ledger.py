"""The ledger: one SQLite database recording every capture and every delivery.

All access from the service goes through one dedicated thread (:class:`Ledger`),
fed by a queue; ``await ledger.call(fn, *args)`` runs one of the blocking functions
of the spool modules (they take a connection first) on that thread. The command
line uses the same functions on its own connection.

Where the rest lives (re-exported here, so ``from gateway.spool import ledger as db``
reaches all of it):

* :mod:`gateway.spool.schema`: the schema, its migrations, opening the file;
* :mod:`gateway.spool.records`: capture metadata as stored (device, offer, patient);
* :mod:`gateway.spool.captures`: recording, finding and listing captures;
* :mod:`gateway.spool.deliveries`: the deliveries, due, sent, retried or refused.

Names: ``spool_id`` is the integer the ledger gives a capture (the columns
``captures.id`` and ``deliveries.capture_id``, and the ``id`` of ``spool list``'s
JSON); ``device_capture_id`` is the device's own id for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from gateway.spool.captures import (
    REBUILT_DRIVER,
    ListingRow,
    SpoolEntry,
    WrappedAtIntake,
    captures_in_state,
    find_capture,
    get_capture,
    insert_capture,
    is_recorded,
    listing,
    mark_wrapped,
    quarantine,
)
from gateway.spool.deliveries import (
    DueDelivery,
    due_deliveries,
    next_attempt_time,
    record_refused,
    record_retry,
    record_sent,
    refresh_capture_state,
)
from gateway.spool.records import (
    device_from_json,
    device_to_json,
    offer_from_json,
    offer_to_json,
    patient_from_json,
    patient_to_json,
)
from gateway.spool.reserve import LedgerReserve
from gateway.spool.routing import add_missing_deliveries, reroute
from gateway.spool.schema import (
    LEDGER_FILE_MODE,
    SCHEMA_VERSION,
    LedgerVersionError,
    migrate,
    open_ledger,
    transaction,
    utc_now_text,
)

__all__ = [
    "FULL_RETRY_MAX",
    "LEDGER_FILE_MODE",
    "REBUILT_DRIVER",
    "SCHEMA_VERSION",
    "DueDelivery",
    "Ledger",
    "LedgerFull",
    "LedgerVersionError",
    "ListingRow",
    "SpoolEntry",
    "WrappedAtIntake",
    "add_missing_deliveries",
    "captures_in_state",
    "device_from_json",
    "device_to_json",
    "due_deliveries",
    "find_capture",
    "get_capture",
    "insert_capture",
    "is_disk_full",
    "is_recorded",
    "listing",
    "mark_wrapped",
    "migrate",
    "next_attempt_time",
    "offer_from_json",
    "offer_to_json",
    "open_ledger",
    "patient_from_json",
    "patient_to_json",
    "quarantine",
    "record_refused",
    "record_retry",
    "record_sent",
    "refresh_capture_state",
    "reroute",
    "transaction",
    "utc_now_text",
]

log = logging.getLogger(__name__)

T = TypeVar("T")
P = ParamSpec("P")

# --------------------------------------------------------------------------- the thread seam


class LedgerFull(sqlite3.OperationalError):
    """The ledger could not write: its disk is full, even without its reserve.

    The write was rolled back (nothing half done). :meth:`Ledger.call` waits for
    space and writes again; :meth:`Ledger.try_call` raises this to its caller.
    """


def is_disk_full(err: sqlite3.Error) -> bool:
    """Whether SQLite failed for want of space (``SQLITE_FULL``)."""
    return getattr(err, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL


def _roll_back(conn: sqlite3.Connection) -> None:
    # A failed COMMIT (SQLITE_FULL) may leave its transaction open: end it, or the
    # next BEGIN fails ("cannot start a transaction within a transaction").
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


def _attempt(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    try:
        return fn(conn)
    except BaseException:
        _roll_back(conn)
        raise


#: The longest a write waiting for disk space waits between two tries.
FULL_RETRY_MAX = 5.0


class Ledger:
    """The ledger's single writer thread, used from asyncio.

    ``await ledger.call(fn, *args)`` runs ``fn(conn, *args)`` on the ledger thread
    and returns its result. Calls are executed one at a time, in order.

    A full disk never ends a stage. When SQLite reports it full, the thread releases
    the ledger's reserve (:mod:`gateway.spool.reserve`), if it still holds it, and
    runs the call again; if the disk is still full, :meth:`call` waits for space and
    tries again (its caller pauses; logged once), while :meth:`try_call` raises
    :class:`LedgerFull` (intake refuses the capture at the device instead).
    """

    def __init__(self, path: Path, reserve: LedgerReserve | None = None) -> None:
        self.path = path
        self.reserve = reserve
        self._jobs: queue.Queue[tuple[Callable[[sqlite3.Connection], Any], Future[Any]] | None] = (
            queue.Queue()
        )
        self._thread: threading.Thread | None = None
        self._opened: Future[None] = Future()
        self._waiting = 0

    @property
    def full(self) -> bool:
        """Whether writes wait for space, or the reserve was used and not yet made again."""
        return self._waiting > 0 or (self.reserve is not None and not self.reserve.held)

    @property
    def waiting_for_space(self) -> bool:
        """Whether some write waits for disk space right now."""
        return self._waiting > 0

    def start(self) -> None:
        """Open the database on the ledger thread; raises if it cannot be opened."""
        if self.reserve is not None:
            self.reserve.make()
        self._thread = threading.Thread(target=self._serve, name="ledger", daemon=True)
        self._thread.start()
        self._opened.result()

    def _serve(self) -> None:
        try:
            conn = open_ledger(self.path)
        except BaseException as err:
            self._opened.set_exception(err)
            return
        self._opened.set_result(None)
        try:
            while (job := self._jobs.get()) is not None:
                fn, fut = job
                if not fut.set_running_or_notify_cancel():
                    continue
                try:
                    fut.set_result(self._run(conn, fn))
                except BaseException as err:
                    fut.set_exception(err)
        finally:
            conn.close()

    def _run(self, conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
        try:
            return _attempt(conn, fn)
        except sqlite3.OperationalError as err:
            if not is_disk_full(err):
                raise
            full = err
        if self.reserve is not None and self.reserve.release():
            log.warning(
                "ledger: the disk is full; released its reserve (%d MiB) to go on recording",
                self.reserve.size // (1024 * 1024),
            )
            try:
                return _attempt(conn, fn)
            except sqlite3.OperationalError as again:
                if not is_disk_full(again):
                    raise
        raise LedgerFull(str(full)) from full

    async def _submit(self, job: Callable[[sqlite3.Connection], T]) -> T:
        fut: Future[T] = Future()
        self._jobs.put((job, fut))
        # Shielded: once queued, a write completes even if the caller is cancelled.
        return await asyncio.shield(asyncio.wrap_future(fut))

    async def try_call(
        self,
        fn: Callable[Concatenate[sqlite3.Connection, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """Like :meth:`call`, but raise :class:`LedgerFull` rather than wait for space."""
        return await self._submit(lambda conn: fn(conn, *args, **kwargs))

    async def call(
        self,
        fn: Callable[Concatenate[sqlite3.Connection, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """Run ``fn(conn, *args, **kwargs)`` on the ledger thread.

        On a full disk, wait for space and run it again (each try is one rolled-back
        or committed transaction). A caller cancelled while waiting gives the write
        up: what it would have recorded is done again later (a delivery whose SENT
        was not recorded is sent again under the same SOP Instance UID).
        """

        def job(conn: sqlite3.Connection) -> T:
            return fn(conn, *args, **kwargs)

        try:
            return await self._submit(job)
        except LedgerFull:
            pass
        self._waiting += 1
        if self._waiting == 1:
            log.error(
                "the ledger cannot write: the disk is full; delivery and confirmation "
                "pause until there is space (nothing is lost)"
            )
        written = False
        try:
            delay = 0.5
            while True:
                await asyncio.sleep(delay)
                delay = min(2 * delay, FULL_RETRY_MAX)
                with contextlib.suppress(LedgerFull):
                    result = await self._submit(job)
                    written = True
                    return result
        finally:
            self._waiting -= 1
            if written and self._waiting == 0:
                log.warning("the ledger writes again")

    def close(self) -> None:
        """Finish queued work and close the database."""
        if self._thread is not None:
            self._jobs.put(None)
            self._thread.join()
            self._thread = None
