"""Intake: where device bytes become a durable, acknowledged capture.

A driver streams a capture into a :class:`StagedCapture`. On ``commit`` the staging
file is fsynced, renamed into ``raw/`` (directory fsynced), and a ledger row with
freshly assigned Study/Series/SOP Instance UIDs is committed. Only when ``commit``
returns may the driver tell the device "saved". A capture the ledger already holds
(same device serial and device capture id) is recognised and acknowledged again
without a second object.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import logging
import os
import sqlite3
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from gateway.capture import CaptureOffer, DeviceIdentity, InstanceUIDs
from gateway.devices.contract import (
    CaptureReceipt,
    CaptureRefused,
    CaptureSink,
    DriverState,
    RefusalReason,
)
from gateway.dicom.uids import new_uid
from gateway.spool import ledger as db
from gateway.spool.files import SpoolDirs, fsync_dir
from gateway.spool.ledger import Ledger
from gateway.spool.space import SpaceGuard

log = logging.getLogger(__name__)

_BUFFER = 1 << 20


def _refusal_for(err: OSError) -> CaptureRefused:
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return CaptureRefused(RefusalReason.DISK_FULL, "no space left in the spool")
    return CaptureRefused(RefusalReason.STORAGE_ERROR, f"spool write failed: {err.strerror}")


class StagedCapture:
    """A capture being received: bytes go to a staging file, nothing is acknowledged."""

    def __init__(
        self,
        intake: Intake,
        driver: str,
        identity: DeviceIdentity,
        offer: CaptureOffer,
        path: Path,
        fh: BinaryIO,
    ) -> None:
        self._intake = intake
        self._driver = driver
        self._identity = identity
        self._offer = offer
        self._path = path
        self._fh: BinaryIO | None = fh
        self._buffer = bytearray()
        self._hash = hashlib.sha256()
        self._size = 0

    async def write(self, chunk: bytes) -> None:
        """Append ``chunk`` (buffered; flushed to disk in 1 MiB writes)."""
        self._hash.update(chunk)
        self._size += len(chunk)
        self._buffer += chunk
        if len(self._buffer) >= _BUFFER:
            await self._flush()

    async def _flush(self) -> None:
        if not self._buffer or self._fh is None:
            return
        data, self._buffer = bytes(self._buffer), bytearray()
        fh = self._fh
        try:
            await asyncio.to_thread(fh.write, data)
        except OSError as err:
            await self.abort("write failed")
            raise _refusal_for(err) from err

    async def commit(self, *, length: int, sha256: str) -> CaptureReceipt:
        """Make the capture durable and record it; then the device may be told."""
        await self._flush()
        if self._size != length:
            await self.abort("length mismatch")
            raise CaptureRefused(
                RefusalReason.LENGTH, f"received {self._size} bytes, device said {length}"
            )
        if self._hash.hexdigest() != sha256.lower():
            await self.abort("checksum mismatch")
            raise CaptureRefused(RefusalReason.CHECKSUM, "SHA-256 of received bytes differs")
        assert self._fh is not None
        fh, self._fh = self._fh, None
        uids = InstanceUIDs(study=new_uid(), series=new_uid(), sop_instance=new_uid())
        raw_name = f"{uids.sop_instance}.raw"
        try:
            await asyncio.to_thread(self._make_durable, fh, raw_name)
        except OSError as err:
            self._discard()
            raise _refusal_for(err) from err
        return await self._intake.record(
            self._driver, self._identity, self._offer, uids, raw_name, self._size, sha256.lower()
        )

    def _make_durable(self, fh: BinaryIO, raw_name: str) -> None:
        try:
            fh.flush()
            os.fsync(fh.fileno())
        finally:
            fh.close()
        dirs = self._intake.dirs
        os.replace(self._path, dirs.raw / raw_name)
        # Only the new name must be durable: a staging entry that survives a crash
        # is removed at start-up (reconcile), leaving the raw file intact.
        fsync_dir(dirs.raw)

    def _discard(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        with contextlib.suppress(FileNotFoundError):
            self._path.unlink()

    async def abort(self, reason: str) -> None:
        """Drop the staging file; the device still holds the capture."""
        log.info(
            "capture %s from %s discarded: %s",
            self._offer.device_capture_id,
            self._identity.serial_number,
            reason,
        )
        await asyncio.to_thread(self._discard)


class KnownCapture:
    """A re-offer of a capture the spool already holds: bytes are read and dropped."""

    def __init__(self, entry: db.SpoolEntry) -> None:
        self._entry = entry
        self._hash = hashlib.sha256()

    async def write(self, chunk: bytes) -> None:
        """Hash and drop ``chunk``."""
        self._hash.update(chunk)

    async def commit(self, *, length: int, sha256: str) -> CaptureReceipt:
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
            self._entry.id,
        )
        return CaptureReceipt(self._entry.id, self._entry.uids.sop_instance, duplicate=True)

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
    ) -> None:
        self.ledger = ledger
        self.dirs = dirs
        self._on_captured = on_captured
        self.space = space

    def host_for(self, driver: str, device_name: str) -> DriverHost:
        """The :class:`DeviceHost` given to one driver instance."""
        return DriverHost(self, driver, device_name)

    async def begin(
        self, driver: str, identity: DeviceIdentity, offer: CaptureOffer
    ) -> CaptureSink:
        """Start receiving a capture (or recognise a re-offer)."""
        known = await self.ledger.call(
            db.find_capture, identity.serial_number, offer.device_capture_id
        )
        if known is not None:
            return KnownCapture(known)
        if self.space is not None and not await asyncio.to_thread(self.space.admits, offer.length):
            raise CaptureRefused(RefusalReason.DISK_FULL, "spool below its free-space reserve")
        path = self.dirs.staging / f"{uuid.uuid4().hex}.part"
        try:
            fh = await asyncio.to_thread(open, path, "xb")
        except OSError as err:
            raise _refusal_for(err) from err
        return StagedCapture(self, driver, identity, offer, path, fh)

    async def record(
        self,
        driver: str,
        identity: DeviceIdentity,
        offer: CaptureOffer,
        uids: InstanceUIDs,
        raw_name: str,
        size: int,
        sha256: str,
    ) -> CaptureReceipt:
        """Commit the ledger row of a durable raw file."""
        try:
            spool_id = await self.ledger.call(
                db.insert_capture,
                driver=driver,
                device=identity,
                offer=offer,
                uids=uids,
                raw_name=raw_name,
                raw_size=size,
                raw_sha256=sha256,
            )
        except sqlite3.IntegrityError:
            # The same capture was committed meanwhile (a re-offer raced it): keep one.
            await asyncio.to_thread(self._drop_raw, raw_name)
            known = await self.ledger.call(
                db.find_capture, identity.serial_number, offer.device_capture_id
            )
            if known is None:
                raise
            return await KnownCapture(known).commit(length=size, sha256=sha256)
        except sqlite3.OperationalError as err:
            await asyncio.to_thread(self._drop_raw, raw_name)
            reason = RefusalReason.DISK_FULL if "full" in str(err) else RefusalReason.STORAGE_ERROR
            raise CaptureRefused(reason, "ledger write failed") from err
        log.info(
            "capture %s from %s saved as spool id %d (%d bytes)",
            offer.device_capture_id,
            identity.serial_number,
            spool_id,
            size,
        )
        self._on_captured()
        return CaptureReceipt(spool_id, uids.sop_instance, duplicate=False)

    def _drop_raw(self, raw_name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.dirs.raw / raw_name).unlink()


class DriverHost:
    """The host API one driver instance sees."""

    def __init__(self, intake: Intake, driver: str, device_name: str) -> None:
        self._intake = intake
        self._driver = driver
        self.device_name = device_name
        self.state = DriverState.DISCONNECTED
        self.detail = ""

    async def begin_capture(self, identity: DeviceIdentity, offer: CaptureOffer) -> CaptureSink:
        """Start receiving a capture announced by the device."""
        return await self._intake.begin(self._driver, identity, offer)

    def set_state(self, state: DriverState, detail: str = "") -> None:
        """Record the driver's state; log only changes."""
        if state != self.state or detail != self.detail:
            log.info("device %s: %s%s", self.device_name, state, f" ({detail})" if detail else "")
        self.state = state
        self.detail = detail
