"""Staging one capture: its bytes streamed to a staging file, then made durable.

A JPEG, an 8-bit confocal stack or a 3D model is written once, straight into its
DICOM file (:class:`StagedCapture`); anything else is kept as it came, in ``raw/``.

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
import hashlib
import logging
import os
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

from gateway.core.busy import BUSY
from gateway.core.capture import (
    CaptureOffer,
    CaptureRefused,
    DeviceIdentity,
    InstanceUIDs,
    RefusalReason,
)
from gateway.core.files import copy_range, create_new, fsync_dir, start_writeback
from gateway.devices.contract import CaptureReceipt
from gateway.dicom.writers import (
    InlineHeader,
    InlineStart,
    begin_inline,
    may_write_inline,
    read_inline_header,
)
from gateway.intake.stage import (
    NO_BINDING,
    CaptureBinding,
    IntakeStage,
    fresh_uids,
    refusal_for,
)
from gateway.spool import ledger as db
from gateway.spool.space import too_large

log = logging.getLogger(__name__)

_BUFFER = 1 << 20


def _retrieve(future: asyncio.Future[None]) -> None:
    """Consume the outcome of an abandoned write (its failure matters to no one)."""
    if not future.cancelled():
        future.exception()


class StagedCapture:
    """A capture being received: bytes go to a staging file, nothing is acknowledged.

    When the device announced the size and :mod:`gateway.dicom.writers` can begin
    the object (a JPEG whose header it can describe, an 8-bit confocal stack, a 3D
    model), the staging file *is* the DICOM file: Part 10 header, then the device's
    bytes (one write, one fsync; a JPEG without its metadata segments, which are in
    the header). What only the end tells (a stack's depths) fills reserved room at
    commit, before the fsync; if the final offer does not fit, the bytes are copied
    out raw. The checksum is of the device's bytes. Otherwise (unknown size, a
    capture DICOM cannot carry) the bytes are kept as they came, in ``raw/``, for
    the wrapping stage to wrap or quarantine with its reason.
    """

    def __init__(
        self,
        intake: IntakeStage,
        driver: str,
        identity: DeviceIdentity,
        offer: CaptureOffer,
        path: Path,
        fh: BinaryIO,
        uids: InstanceUIDs | None = None,
        binding: CaptureBinding = NO_BINDING,
    ) -> None:
        self._intake = intake
        BUSY.enter()  # left once, by commit or abort: an update waits for the capture
        self._busy = True
        # The UIDs chosen when the device started sending (the session's study and
        # series when bound); fresh ones at commit without them.
        self._preset = uids
        self._binding = binding
        self._driver = driver
        self._identity = identity
        self._offer = offer
        self._path = path
        self._fh: BinaryIO | None = fh
        self._buffer = bytearray()
        self._hash = hashlib.sha256()
        self._size = 0
        self._not_hashed = 0  # leading bytes of the buffer that are our DICOM header
        self._pending: asyncio.Future[None] | None = None
        # A held capture waits for a patient: kept raw, never written as DICOM yet.
        self._decided = (
            intake.inline is None or binding.held is not None or not may_write_inline(offer)
        )
        self._uids: InstanceUIDs | None = None
        self._wrapped: db.WrappedAtIntake | None = None
        self._end = b""  # what closes the DICOM file after the device's last byte
        self._spool_id: int | None = None  # reserved when the DICOM file is begun
        # Completes the DICOM file from the final offer (InlineStart.finish), and
        # where the device's bytes start in it (to keep them raw if it cannot).
        self._finish: Callable[[CaptureOffer, BinaryIO], bool] | None = None
        self._data_offset = 0

    async def write(self, chunk: bytes) -> None:
        """Append ``chunk`` (buffered; written and hashed in blocks of up to 1 MiB on a
        worker thread while the next arrives; a chunk of 256 KiB or more is written as
        it is, not copied); past ``max_capture_bytes``, refuse."""
        self._size += len(chunk)
        if self._size > self._intake.max_capture_bytes:
            await self.abort("larger than max_capture_mb")
            raise too_large(self._intake.max_capture_bytes)
        if self._decided and len(self._buffer) + len(chunk) > _BUFFER:
            await self._flush()  # blocks of at most 1 MiB: the buffer never grows past it
        if self._decided and not self._buffer and len(chunk) >= _BUFFER // 4:
            await self._flush(chunk)
            return
        self._buffer += chunk
        if not self._decided:
            await self._decide(final=False)
        if self._decided and len(self._buffer) >= _BUFFER:
            await self._flush()

    async def _decide(self, *, final: bool) -> None:
        """DICOM straight away, or raw first? :mod:`gateway.dicom.writers` decides,
        on the JPEG header."""
        inline = self._intake.inline
        assert inline is not None
        assert self._offer.length is not None
        info = read_inline_header(
            self._buffer, self._offer.length, final=final, content_type=self._offer.content_type
        )
        if info is InlineHeader.RAW:
            self._decided = True  # raw: the wrapping stage says why
            return
        if info is InlineHeader.MORE:
            return
        uids = self._preset or self._offer.uids or fresh_uids()
        received = bytes(self._buffer)
        spool_id = await self._intake.reserve_spool_id()
        patient_key = await self._intake.patient_spool_id(spool_id, self._offer, uids)

        context = self._binding.context
        # The session's patient, not the device's (a mismatch was held, never inline).
        offer = self._offer if context is None else replace(self._offer, patient=context.patient)

        def begin() -> InlineStart | None:
            begun = begin_inline(
                identity=self._identity,
                offer=offer,
                uids=uids,
                jpeg=None if info is InlineHeader.NOT_NEEDED else info,
                received=received,
                gateway=inline.gateway,
                now=datetime.now().astimezone(),
                patient_spool_id=patient_key,
                context=context,
            )
            if begun is not None:
                self._hash.update(received)  # the device's bytes, before any is dropped
                if begun.gap:  # header, then room filled at commit (nothing written yet)
                    assert self._fh is not None
                    self._fh.write(begun.start)
                    self._fh.seek(begun.gap, os.SEEK_CUR)
            return begun

        self._decided = True
        try:
            begun = await asyncio.to_thread(begin)
        except OSError as err:  # the header of a reserved layout is written at once
            await self.abort("write failed")
            raise refusal_for(err) from err
        if begun is None:
            return  # raw: the wrapping stage quarantines it with the reason
        self._uids = uids
        self._spool_id = spool_id
        self._end = begun.end
        lead = begun.resume if begun.gap else begun.start
        self._buffer = bytearray(lead)
        self._not_hashed = len(lead)
        self._finish = begun.finish
        self._data_offset = begun.data_offset
        self._wrapped = db.WrappedAtIntake(
            dicom_name=f"{uids.sop_instance}.dcm",
            sop_class_uid=begun.sop_class_uid,
            transfer_syntax_uid=begun.transfer_syntax_uid,
            destinations=inline.destinations,
        )

    async def _write_block(
        self, fh: BinaryIO, block: bytes | bytearray, skip: int, tail: int
    ) -> None:
        """Write ``block`` and hash the device's bytes in it (all but ``skip`` leading
        and ``tail`` trailing bytes: our DICOM header and end) at the same time, on two
        worker threads (both release the GIL); blocks are hashed in order (the next
        block waits for this one)."""
        written = asyncio.to_thread(self._write_out, fh, block)
        if skip < len(block) - tail:
            device_bytes = memoryview(block)[skip : len(block) - tail]
            await asyncio.gather(written, asyncio.to_thread(self._hash.update, device_bytes))
        else:
            await written

    @staticmethod
    def _write_out(fh: BinaryIO, block: bytes | bytearray) -> None:
        """Write a block and let the disk start on it at once, so that the fsync
        before the acknowledgement waits only for the last of it."""
        fh.write(block)
        fh.flush()
        start_writeback(fh.fileno())

    async def _settle(self) -> None:
        """Wait for the block being written; a failed write refuses the capture."""
        pending, self._pending = self._pending, None
        if pending is None:
            return
        try:
            await pending
        except OSError as err:
            await self.abort("write failed")
            raise refusal_for(err) from err

    async def _flush(self, chunk: bytes | None = None, tail: int = 0) -> None:
        """Hand ``chunk``, or the buffer (not a copy), to worker threads; ``tail``:
        trailing bytes that are not the device's."""
        await self._settle()
        block: bytes | bytearray = self._buffer if chunk is None else chunk
        if not block or self._fh is None:
            return
        if chunk is None:  # handed over, not copied: a new buffer takes the next bytes
            self._buffer = bytearray()
        skip, self._not_hashed = self._not_hashed, 0
        self._pending = asyncio.ensure_future(self._write_block(self._fh, block, skip, tail))

    async def commit(
        self, *, length: int, sha256: str, offer: CaptureOffer | None = None
    ) -> CaptureReceipt:
        """Make the capture durable and record it; then the device may be told."""
        try:
            return await self._commit(length, sha256, offer)
        except asyncio.CancelledError:
            # The driver was stopped mid-commit (hung, unplugged, gateway stopping):
            # nothing was acknowledged. Its staging file goes now, not at the next
            # start-up (once renamed into the spool, this finds nothing to remove).
            pending, self._pending = self._pending, None
            if pending is not None:
                pending.add_done_callback(_retrieve)
            with contextlib.suppress(FileNotFoundError):
                self._path.unlink()
            fh, self._fh = self._fh, None
            if fh is not None:
                with contextlib.suppress(Exception):  # a worker may be writing to it
                    fh.close()
            raise
        finally:
            self._idle()

    async def _commit(self, length: int, sha256: str, offer: CaptureOffer | None) -> CaptureReceipt:
        if offer is not None:
            if offer.device_capture_id != self._offer.device_capture_id:
                await self.abort("final offer names another capture")
                raise CaptureRefused(
                    RefusalReason.CONFLICT, "the final offer names a different capture id"
                )
            if self._wrapped is None:
                self._offer = offer
        if not self._decided:
            await self._decide(final=True)
        if self._wrapped:
            # The file's end goes with the last block (a file that fails the checks
            # below is discarded whole, so writing it before them is harmless).
            self._buffer += self._end
            await self._flush(tail=len(self._end))
        else:
            await self._flush()
        await self._settle()
        if self._size != length or (self._wrapped and self._size != self._offer.length):
            await self.abort("length mismatch")
            raise CaptureRefused(
                RefusalReason.LENGTH, f"received {self._size} bytes, device said {length}"
            )
        if self._hash.hexdigest() != sha256.lower():
            await self.abort("checksum mismatch")
            raise CaptureRefused(RefusalReason.CHECKSUM, "SHA-256 of received bytes differs")
        if self._wrapped and self._finish is not None:
            await self._complete(offer or self._offer)
        fh = self._fh
        assert fh is not None
        uids = self._uids or self._preset or self._offer.uids or fresh_uids()
        dirs = self._intake.dirs
        if self._wrapped:
            final, raw_name = dirs.dicom / self._wrapped.dicom_name, ""
        else:
            raw_name = f"{uids.sop_instance}.raw"
            final = dirs.raw / raw_name
        try:
            await asyncio.to_thread(self._sync, fh)
        except OSError as err:
            self._discard()
            raise refusal_for(err) from err
        self._fh = None  # closed by _sync (until then a cancelled commit closes it)
        # Spooled files are named after the SOP Instance UID, which a driver may
        # choose: one rename-and-record at a time, and never onto a name that is
        # taken (that file belongs to an acknowledged capture).
        async with self._intake.naming:
            try:
                placed = await asyncio.to_thread(self._place, final, False)
                if not placed and not await self._intake.ledger.call(
                    db.is_recorded, uids.sop_instance, final.name
                ):
                    # No row names it: the leftover of a commit interrupted between
                    # its rename and its row, never acknowledged (start-up would move
                    # it to orphans/). This capture takes the name.
                    placed = await asyncio.to_thread(self._place, final, True)
            except OSError as err:
                self._discard()
                raise refusal_for(err) from err
            if not placed:
                self._discard()
                return await self._intake.uids_taken(self._identity, self._offer, length, sha256)
            return await self._intake.record(
                self._driver,
                self._identity,
                self._offer,
                uids,
                raw_name,
                self._size,
                sha256.lower(),
                final,
                self._wrapped,
                self._spool_id,
                self._binding,
            )

    async def _complete(self, final: CaptureOffer) -> None:
        """Fill what only the end tells (a stack's depths) from the ``final`` offer;
        when it does not fit what was reserved, keep the device's bytes raw."""
        finish, fh = self._finish, self._fh
        assert finish is not None
        assert fh is not None
        context = self._binding.context
        # The session's patient, not the device's, as when the file was begun.
        written = final if context is None else replace(final, patient=context.patient)
        try:
            done = await asyncio.to_thread(finish, written, fh)
            if not done:
                await asyncio.to_thread(self._keep_raw)
        except OSError as err:
            self._discard()
            raise refusal_for(err) from err
        self._offer = final

    def _keep_raw(self) -> None:
        """Copy the device's bytes out of the begun DICOM file into a new staging
        file, which goes to ``raw/`` (the wrapping stage wraps or quarantines it)."""
        old, path = self._fh, self._intake.dirs.staging / f"{uuid.uuid4().hex}.part"
        assert old is not None
        old.flush()
        try:
            with create_new(path) as new, self._path.open("rb") as src:
                copy_range(src.fileno(), new, self._data_offset, self._size)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        self._discard()
        self._path, self._fh = path, path.open("r+b")
        self._fh.seek(0, os.SEEK_END)
        self._wrapped = None

    @staticmethod
    def _sync(fh: BinaryIO) -> None:
        try:
            fh.flush()
            os.fsync(fh.fileno())
        finally:
            fh.close()

    def _place(self, final: Path, replace: bool) -> bool:
        """Rename the staging file to ``final``; False (nothing done) if it exists,
        unless ``replace``."""
        if final.exists() and not replace:
            return False
        os.replace(self._path, final)
        # Only the new name must be durable: a staging entry that survives a crash
        # is removed at start-up (reconcile), leaving the spooled file intact.
        fsync_dir(final.parent)
        return True

    def _discard(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        with contextlib.suppress(FileNotFoundError):
            self._path.unlink()

    def _idle(self) -> None:
        if self._busy:
            self._busy = False
            BUSY.leave()

    async def abort(self, reason: str) -> None:
        """Drop the staging file; the device still holds the capture."""
        try:
            await self._abort(reason)
        finally:
            self._idle()

    async def _abort(self, reason: str) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            with contextlib.suppress(OSError):
                await pending
        log.info(
            "capture %s from %s discarded: %s",
            self._offer.device_capture_id,
            self._identity.serial_number,
            reason,
        )
        await asyncio.to_thread(self._discard)
