"""The intake stage: one sink per device capture, and re-offers recognised."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import hashlib
import logging
import sqlite3
import uuid
from collections.abc import Callable
from pathlib import Path

from gateway.core.capture import (
    DEFAULT_MAX_CAPTURE_BYTES,
    CaptureOffer,
    CaptureRefused,
    DeviceIdentity,
    InstanceUIDs,
    RefusalReason,
)
from gateway.core.context import Bound, ContextBinder, Held
from gateway.core.events import (
    NO_EVENTS,
    CaptureHeld,
    CaptureQuarantined,
    CaptureSaved,
    EventSink,
)
from gateway.core.files import create_new
from gateway.core.patient import with_device_issuer
from gateway.core.routing import CaptureFacts, RoutePlan
from gateway.devices.contract import CaptureReceipt, CaptureSink
from gateway.devices.host import DriverHost
from gateway.intake.stage import (
    NO_BINDING,
    CaptureBinding,
    InlineWrap,
    fresh_uids,
    refusal_for,
    uids_in_use,
)
from gateway.intake.staging import StagedCapture
from gateway.spool import ledger as db
from gateway.spool.dirs import SpoolDirs
from gateway.spool.ledger import Ledger
from gateway.spool.space import SpaceGuard, too_large
from gateway.spool.spool_ids import SpoolIdCounter, first_in_study, highest_spool_id

log = logging.getLogger(__name__)


class KnownCapture:
    """A re-offer of a capture the spool already holds: bytes are read and dropped."""

    def __init__(self, entry: db.SpoolEntry) -> None:
        self._entry = entry
        self._hash = hashlib.sha256()

    async def write(self, chunk: bytes) -> None:
        """Hash and drop ``chunk``."""
        self._hash.update(chunk)

    async def commit(
        self, *, length: int, sha256: str, offer: CaptureOffer | None = None
    ) -> CaptureReceipt:
        """Acknowledge again if it is the same capture; refuse a conflicting one."""
        if sha256.lower() != self._entry.raw_sha256:
            raise CaptureRefused(
                RefusalReason.CONFLICT,
                f"capture id {self._entry.offer.device_capture_id} was already saved "
                "with different content",
            )
        log.info(
            "re-offered capture %s from %s recognised (spool id %d); acknowledged again",
            self._entry.offer.device_capture_id,
            self._entry.device.serial_number,
            self._entry.spool_id,
        )
        return CaptureReceipt(self._entry.spool_id, self._entry.uids.sop_instance, duplicate=True)

    async def abort(self, reason: str) -> None:
        """Nothing to discard."""


class Intake:
    """Receives captures from drivers and commits them to the spool."""

    def __init__(
        self,
        ledger: Ledger,
        dirs: SpoolDirs,
        on_captured: Callable[[], None],
        space: SpaceGuard | None = None,
        inline: InlineWrap | None = None,
        max_capture_bytes: int = DEFAULT_MAX_CAPTURE_BYTES,
        spool_ids: SpoolIdCounter | None = None,
        bus: EventSink = NO_EVENTS,
        binder: ContextBinder | None = None,
    ) -> None:
        self.ledger = ledger
        self.binder = binder
        self._bus = bus
        self.spool_ids = spool_ids
        self.max_capture_bytes = max_capture_bytes
        self.dirs = dirs
        self._on_captured = on_captured
        self.space = space
        self.inline = inline
        self.naming = asyncio.Lock()
        self._reserving = asyncio.Lock()
        self._last_spool_id = 0

    def host_for(self, driver: str, device_name: str) -> DriverHost:
        """A :class:`DeviceHost` for one driver instance (without a status board)."""
        begin = functools.partial(self.begin, driver, device_name=device_name)
        return DriverHost(device_name, begin, max_capture_bytes=self.max_capture_bytes)

    async def reserve_spool_id(self) -> int:
        """A spool id no capture has, for a row inserted later (a gap if never used).

        The service's ids come from its :class:`SpoolIdCounter`: never handed out
        before on this box, even if the ledger was lost. Without one (tests, tools
        that build an intake over a scratch spool) they continue the ledger's.
        """
        if self.spool_ids is not None:
            try:
                return await asyncio.to_thread(self.spool_ids.take)
            except OSError as err:  # the mark could not be written (a full disk)
                raise refusal_for(err) from err
        async with self._reserving:
            highest = await self.ledger.call(highest_spool_id)
            self._last_spool_id = max(highest, self._last_spool_id) + 1
            return self._last_spool_id

    async def patient_spool_id(self, spool_id: int, offer: CaptureOffer, uids: InstanceUIDs) -> int:
        """The spool id that names the capture's temporary patient: its own, or the
        first one's of the study it shares (driver-chosen UIDs)."""
        if offer.uids is None:
            return spool_id
        first = await self.ledger.call(first_in_study, uids.study)
        return spool_id if first is None else min(first, spool_id)

    async def begin(
        self,
        driver: str,
        identity: DeviceIdentity,
        offer: CaptureOffer,
        *,
        issuer_of_patient_id: str | None = None,
        device_name: str | None = None,
    ) -> CaptureSink:
        """Start receiving a capture (or recognise a re-offer).

        ``issuer_of_patient_id`` is the device's configured issuer, given to a
        device-supplied Patient ID that came without one. ``device_name`` is the
        configured device: with a context binder, the capture belongs to the
        patient session open on it **when the device starts sending** (bound here,
        before an inline JPEG's DICOM header is written); a re-offer of a known
        capture changes nothing.
        """
        if issuer_of_patient_id:
            offer = dataclasses.replace(
                offer, patient=with_device_issuer(offer.patient, issuer_of_patient_id)
            )
        known = await self.ledger.call(
            db.find_capture, identity.serial_number, offer.device_capture_id
        )
        if known is not None:
            return KnownCapture(known)
        if offer.length is not None and offer.length > self.max_capture_bytes:
            raise too_large(self.max_capture_bytes, offer.length)
        if self.space is not None:
            await asyncio.to_thread(self.space.check, offer.length)
        uids = offer.uids or fresh_uids()
        binding = CaptureBinding(device_name=device_name)
        if self.binder is not None and device_name is not None:
            try:
                bound = await self.binder.bind(device_name, identity, offer, uids)
            except Exception as err:
                # Never send without knowing whose it is: the device keeps it and retries.
                log.error(
                    "capture from %s refused: its patient session could not be read (%s)",
                    device_name,
                    type(err).__name__,
                )
                raise CaptureRefused(
                    RefusalReason.STORAGE_ERROR, "patient context unavailable"
                ) from err
            if isinstance(bound, Bound):
                uids = bound.uids
                binding = CaptureBinding(device_name, context=bound.context)
            elif isinstance(bound, Held):
                binding = CaptureBinding(device_name, held=bound.reason)
        path = self.dirs.staging / f"{uuid.uuid4().hex}.part"
        try:
            fh = await asyncio.to_thread(create_new, path)  # 0640, whatever the umask
        except OSError as err:
            raise refusal_for(err) from err
        return StagedCapture(self, driver, identity, offer, path, fh, uids, binding)

    async def record(
        self,
        driver: str,
        identity: DeviceIdentity,
        offer: CaptureOffer,
        uids: InstanceUIDs,
        raw_name: str,
        size: int,
        sha256: str,
        path: Path,
        wrapped: db.WrappedAtIntake | None = None,
        reserved: int | None = None,
        binding: CaptureBinding = NO_BINDING,
    ) -> CaptureReceipt:
        """Commit the ledger row of a durable spooled file at ``path`` (with spool id
        ``reserved`` when the file already names it), bound as ``binding`` says."""
        if reserved is None:
            reserved = await self.reserve_spool_id()
        try:
            # On a full disk: refused at the device (it keeps the capture), not waited for.
            spool_id = await self.ledger.try_call(
                db.insert_capture,
                driver=driver,
                device=identity,
                offer=offer,
                uids=uids,
                raw_name=raw_name,
                raw_size=size,
                raw_sha256=sha256,
                wrapped=wrapped,
                spool_id=reserved,
                device_name=binding.device_name,
                context=binding.context,
                held=binding.held,
            )
        except sqlite3.IntegrityError:
            # The same capture was committed meanwhile (a re-offer raced it): keep one.
            await asyncio.to_thread(self._drop, path)
            known = await self.ledger.call(
                db.find_capture, identity.serial_number, offer.device_capture_id
            )
            if known is None:
                raise uids_in_use() from None
            return await KnownCapture(known).commit(length=size, sha256=sha256)
        except sqlite3.OperationalError as err:
            await asyncio.to_thread(self._drop, path)
            reason = RefusalReason.DISK_FULL if "full" in str(err) else RefusalReason.STORAGE_ERROR
            raise CaptureRefused(reason, "ledger write failed") from err
        log.info(
            "capture %s from %s saved as spool id %d (%d bytes, %s)",
            offer.device_capture_id,
            identity.serial_number,
            spool_id,
            size,
            "written as DICOM"
            if wrapped
            else "raw, held for a patient"
            if binding.held is not None
            else "raw, to be wrapped",
        )
        self._bus.publish(
            CaptureSaved(
                spool_id=spool_id,
                driver=driver,
                device_class=str(identity.device_class),
                bytes=size,
            )
        )
        if binding.held is not None:
            self._bus.publish(CaptureHeld(spool_id=spool_id, device=binding.device_name or driver))
        elif wrapped is not None and self.inline is not None:
            if _unrouted(wrapped, driver, identity, binding):
                self._bus.publish(
                    CaptureQuarantined(spool_id=spool_id, stage="route", destination="")
                )
            self.inline.on_wrapped()
        else:
            self._on_captured()
        return CaptureReceipt(spool_id, uids.sop_instance, duplicate=False)

    async def uids_taken(
        self, identity: DeviceIdentity, offer: CaptureOffer, length: int, sha256: str
    ) -> CaptureReceipt:
        """A capture whose file name (its SOP Instance UID) is already in the spool:
        the same capture again is a duplicate; another capture is refused."""
        known = await self.ledger.call(
            db.find_capture, identity.serial_number, offer.device_capture_id
        )
        if known is None:
            log.warning(
                "capture %s from %s refused: its UIDs are already used by another capture",
                offer.device_capture_id,
                identity.serial_number,
            )
            raise uids_in_use()
        return await KnownCapture(known).commit(length=length, sha256=sha256)

    @staticmethod
    def _drop(path: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _unrouted(
    wrapped: db.WrappedAtIntake, driver: str, identity: DeviceIdentity, binding: CaptureBinding
) -> bool:
    """Whether no route sends a capture written at intake anywhere (the ledger set it
    aside in the same transaction; this says so on the event bus)."""
    plan = RoutePlan.of(wrapped.destinations)
    facts = CaptureFacts(
        device_class=str(identity.device_class),
        driver=driver,
        device=binding.device_name,
        sop_class_uid=wrapped.sop_class_uid,
        sensitive=bool(binding.context and binding.context.sensitive),
    )
    return bool(plan.destinations) and not plan.targets(facts)
