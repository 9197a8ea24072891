"""The wrapping stage: CAPTURED → WRAPPED (or QUARANTINED with a reason).

For each durable capture it writes the Part 10 file atomically into ``dicom/``,
with the writer :mod:`gateway.dicom.writers` picks for what the capture is (the
offer's content type and the device class; the table is there). Then the ledger
row becomes WRAPPED with a pending delivery per destination its ``[[routes]]``
name (:mod:`gateway.spool.routing`; set aside when none does). A capture the writer
refuses (not a JPEG, subsampling DICOM cannot describe, a damaged mesh) is
quarantined: it was acknowledged, so it is kept, never sent, and shown with the
reason.

A capture bound to a patient session at intake is written with that context
(:class:`~gateway.dicom.job.WrapJob` ``context``, the session's patient in the
offer); HELD captures are never picked (only CAPTURED ones are).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

from pydicom.uid import UID

from gateway.core.busy import BUSY
from gateway.core.capture import GatewayIdentity
from gateway.core.events import NO_EVENTS, CaptureQuarantined, EventSink
from gateway.core.routing import RoutePlan
from gateway.dicom.errors import WrapError
from gateway.dicom.job import WrapJob, WrittenObject
from gateway.dicom.writers import write_capture
from gateway.spool import ledger as db
from gateway.spool.dirs import SpoolDirs
from gateway.spool.ledger import Ledger, SpoolEntry
from gateway.spool.spool_ids import first_in_study
from gateway.spool.states import CaptureState

log = logging.getLogger(__name__)

_RETRY_AFTER_ERROR = 30.0
_POLL = 60.0


class Wrapper:
    """Turns captured device files into DICOM files, one at a time."""

    def __init__(
        self,
        ledger: Ledger,
        dirs: SpoolDirs,
        gateway: GatewayIdentity,
        destinations: RoutePlan | Sequence[str],
        on_wrapped: Callable[[], None],
        bus: EventSink = NO_EVENTS,
    ) -> None:
        self._ledger = ledger
        self._bus = bus
        self._dirs = dirs
        self._gateway = gateway
        self._plan = RoutePlan.of(destinations)
        self._on_wrapped = on_wrapped
        self.wanted = asyncio.Event()
        self._write_errors: dict[int, str] = {}  # spool id -> the error last logged

    def notify(self) -> None:
        """A new capture is waiting."""
        self.wanted.set()

    async def run(self, ready: Callable[[], None]) -> None:
        """Wrap captures as they arrive, until cancelled."""
        self.wanted.set()  # captures left CAPTURED by a previous run
        ready()
        while True:
            # Also poll: a technician's `spool retry` puts captures back to CAPTURED.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_POLL):  # not wait_for: 3.11's can swallow a stop
                    await self.wanted.wait()
            self.wanted.clear()
            failed = False
            while batch := await self._ledger.call(db.captures_in_state, CaptureState.CAPTURED, 20):
                for entry in batch:
                    if not await self._wrap_one(entry):
                        failed = True
                if failed:
                    break
            if failed:
                await asyncio.sleep(_RETRY_AFTER_ERROR)
                self.wanted.set()

    async def _wrap_one(self, entry: SpoolEntry) -> bool:
        with BUSY.busy():  # an update waits until the capture is DICOM
            return await self._wrap_entry(entry)

    async def _wrap_entry(self, entry: SpoolEntry) -> bool:
        dicom_name = f"{entry.uids.sop_instance}.dcm"
        try:
            patient_key = await self._patient_spool_id(entry)
            written = await asyncio.to_thread(
                self._write,
                entry,
                self._dirs.dicom / dicom_name,
                datetime.now().astimezone(),
                patient_key,
            )
        except WrapError as err:
            log.warning("spool id %d quarantined: %s", entry.spool_id, err)
            await self._ledger.call(db.quarantine, entry.spool_id, str(err))
            self._bus.publish(
                CaptureQuarantined(spool_id=entry.spool_id, stage="wrap", destination="")
            )
            return True
        except OSError as err:
            problem = err.strerror or type(err).__name__
            if self._write_errors.get(entry.spool_id) != problem:  # once, not every retry
                log.error(
                    "spool id %d: cannot write DICOM file (%s); will retry", entry.spool_id, problem
                )
            self._write_errors[entry.spool_id] = problem
            return False
        except Exception as err:
            # A writer failing any other way (a driver's unexpected offer.extra, a
            # decoder's surprise) must not stop the stage: the gateway would stop,
            # and stop again on this capture at every restart. The capture was
            # acknowledged: kept and quarantined, with the error's type only (its
            # message may quote metadata, even patient data).
            what = type(err).__name__
            log.error(
                "spool id %d: the DICOM writer failed unexpectedly (%s)", entry.spool_id, what
            )
            reason = (
                f"the DICOM writer failed unexpectedly ({what}); the capture is kept; "
                "check the device driver, then retry"
            )
            await self._ledger.call(db.quarantine, entry.spool_id, reason)
            self._bus.publish(
                CaptureQuarantined(spool_id=entry.spool_id, stage="wrap", destination="")
            )
            return True
        if self._write_errors.pop(entry.spool_id, None) is not None:
            log.info("spool id %d: DICOM file written after all", entry.spool_id)
        targets = await self._ledger.call(
            db.mark_wrapped,
            entry.spool_id,
            dicom_name=dicom_name,
            sop_class_uid=written.sop_class_uid,
            transfer_syntax_uid=written.transfer_syntax_uid,
            destinations=self._plan,
            now=time.time(),
        )
        log.info("spool id %d wrapped as %s", entry.spool_id, UID(written.sop_class_uid).name)
        if targets == {} and self._plan.destinations:  # set aside: no route sends it anywhere
            self._bus.publish(
                CaptureQuarantined(spool_id=entry.spool_id, stage="route", destination="")
            )
        self._on_wrapped()
        return True

    async def _patient_spool_id(self, entry: SpoolEntry) -> int:
        """The spool id that names the capture's temporary patient: its own, or the
        first one's of the study it shares (driver-chosen UIDs; see
        :mod:`gateway.core.patient`)."""
        if entry.offer.uids is None:
            return entry.spool_id
        first = await self._ledger.call(first_in_study, entry.uids.study)
        return entry.spool_id if first is None else min(first, entry.spool_id)

    def _write(
        self, entry: SpoolEntry, dest: Path, now: datetime, patient_key: int
    ) -> WrittenObject:
        """Write the DICOM file of one captured file (blocking)."""
        raw = self._dirs.raw / entry.raw_name
        # Deleted by hand, or never kept (written as DICOM at intake, whose file is
        # gone): waiting would not bring it back.
        if not entry.raw_name or not raw.exists():
            raise WrapError("raw capture file missing")
        offer = entry.offer
        if entry.context is not None:
            # The session's patient, not the device's (a mismatch was held at intake).
            offer = dataclasses.replace(offer, patient=entry.context.patient)
        job = WrapJob(
            entry.device,
            offer,
            entry.uids,
            raw,
            self._gateway,
            now,
            patient_key,
            context=entry.context,
        )
        return write_capture(job, dest)

    @property
    def destinations(self) -> RoutePlan:
        """The destinations and the routes that pick among them per capture."""
        return self._plan
