"""The photo folder, looked at again and again: each settled entry sent, refused or left.

:class:`FolderWatcher` is one pass after another over the folder, as
:mod:`drivers.photo_folder.driver` describes: it examines each settled file
(:func:`.photos.examine`), streams it into the spool, moves it to ``.processed/``
once durable, sets aside what DermGate cannot take, and keeps the driver's state.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import stat
from pathlib import Path
from typing import Final

from drivers.photo_folder.offers import PhotoFolderOptions, identity_for, offer_for
from drivers.photo_folder.photos import NotAPhoto, Photo, examine, file_identity
from gateway.driver_api import (
    ONLY_REGULAR_FILES,
    CaptureReceipt,
    CaptureRefused,
    CaptureSink,
    DeviceHost,
    DriverState,
    DropFolder,
    EntrySnapshot,
    FolderEvents,
    NotARegularFile,
    RefusalReason,
    open_regular,
    special_kind,
    too_large,
)

__all__ = ["FolderWatcher", "plain_os_error"]

#: The driver's logger: its name is what the gateway's log lines show.
log = logging.getLogger("drivers.photo_folder.driver")

_CHUNK: Final = 1 << 20


class FolderWatcher:
    """One pass after another over the folder; each settled entry handled in turn."""

    def __init__(
        self,
        folder: DropFolder,
        host: DeviceHost,
        options: PhotoFolderOptions,
        name: str,
        events: FolderEvents | None = None,
    ) -> None:
        self.folder = folder
        #: the kernel's close events for the folder (None: looks alone decide)
        self.events = events
        self.host = host
        self.options = options
        self.name = name
        #: entry name -> how it looks and since when (monotonic) it has looked so
        self.seen: dict[str, tuple[EntrySnapshot, float]] = {}
        self.not_before: dict[str, float] = {}
        self.waiting_truncated: set[str] = set()
        #: entry name -> the trouble last logged for it (logged once, not every look)
        self.trouble: dict[str, str] = {}
        #: entry name -> why the spool refused it for now (it waits; the driver is ERROR)
        self.spool_refused: dict[str, RefusalReason] = {}
        #: the spool's refusal last logged (logged when it changes, not at every retry)
        self.spool_refusal: RefusalReason | None = None

    async def look(self) -> None:
        """One look: snapshot every waiting entry, handle those that settled.

        Raises OSError only when the folder itself cannot be read (gone).
        """
        await self._take_back_changed_refusals()
        entries = await asyncio.to_thread(self.folder.entries)
        names = {entry.name for entry in entries}
        for gone in set(self.seen) - names:
            del self.seen[gone]
            self.not_before.pop(gone, None)
            self.waiting_truncated.discard(gone)
            self.trouble.pop(gone, None)
            self.spool_refused.pop(gone, None)
        for entry in entries:
            try:
                await self._look_at(entry)
            except FileNotFoundError:
                continue  # gone while we looked (moved by the copy tool, deleted)
            except OSError as err:
                # One entry's trouble never stops the entries behind it.
                self._entry_trouble(entry, plain_os_error(err))
        self.ready()

    async def _look_at(self, entry: Path) -> None:
        loop = asyncio.get_running_loop()
        try:
            now_snapshot = await asyncio.to_thread(DropFolder.snapshot, entry)
        except FileNotFoundError:
            return
        now = loop.time()  # monotonic
        before = self.seen.get(entry.name)
        if before is None or before[0] != now_snapshot:
            self.seen[entry.name] = (now_snapshot, now)  # new, or changed: count anew
            return
        if not DropFolder.settled(before[1], self._quiet_for(entry.name, before[1]), now):
            return
        if self.not_before.get(entry.name, 0.0) > loop.time():
            return
        done = await self._handle(entry)
        if done:
            self.seen.pop(entry.name, None)
            self.not_before.pop(entry.name, None)
            self.waiting_truncated.discard(entry.name)
            self.spool_refused.pop(entry.name, None)
            if self.trouble.pop(entry.name, None) is not None:
                log.info(
                    "%s: a dropped file that could not be handled before was handled now", self.name
                )
        elif entry.name not in self.waiting_truncated:
            self._later(entry)

    def _quiet_for(self, name: str, since: float) -> float:
        """How long an entry unchanged since ``since`` must stay so before it is taken:
        ``settle_seconds``, or, once its writer was seen closing it, until it has been
        unchanged ``closed_settle_seconds`` both since the close and since ``since``."""
        settle = self.options.settle_seconds
        closed = self.events.closed_at(name) if self.events is not None else None
        if closed is None:
            return settle
        short = min(self.options.closed_settle_seconds, settle)
        return min(settle, max(short, closed + short - since))

    def next_look_in(self) -> float:
        """Seconds until the next look: the poll interval, or sooner when an entry
        seen will have settled before then (it is taken then, not a poll later)."""
        now = asyncio.get_running_loop().time()
        wait = self.options.poll_interval
        for name, (_, since) in self.seen.items():
            due = since + self._quiet_for(name, since) - now  # past: waits for a change
            if 0 < due < wait:
                wait = due
        return wait

    async def pause(self) -> None:
        """Wait until the next look is due, or a file was closed in the folder."""
        events = self.events
        if events is not None and events.lost:  # the watch ended or events were dropped
            events.close()
            events = self.events = FolderEvents.open(self.folder.root)
        if events is None:
            await asyncio.sleep(self.next_look_in())
        else:
            await events.wait(self.next_look_in())

    def _later(self, entry: Path) -> None:
        loop = asyncio.get_running_loop()
        self.not_before[entry.name] = loop.time() + max(5.0, self.options.poll_interval)

    def _entry_trouble(self, entry: Path, problem: str) -> None:
        """Log a problem with one entry once (not at every look); try it later."""
        if self.trouble.get(entry.name) != problem:
            log.warning(
                "%s: a dropped file could not be handled (%s); it stays, tried again later",
                self.name,
                problem,
            )
        self.trouble[entry.name] = problem
        self._later(entry)

    async def _take_back_changed_refusals(self) -> None:
        """A file set aside that changed since (a stalled copy that went on) is moved
        back into the folder and looked at again."""
        try:
            changed = await asyncio.to_thread(self.folder.changed_refusals)
            for refused in changed:
                if await asyncio.to_thread(self.folder.take_back, refused):
                    log.info(
                        "%s: a file set aside in .refused changed since (a copy that "
                        "resumed); looking at it again",
                        self.name,
                    )
        except OSError as err:
            log.warning("%s: could not look into .refused (%s)", self.name, plain_os_error(err))

    async def _handle(self, entry: Path) -> bool:
        """Send, refuse or leave one settled entry; True when it left the folder."""
        st = await asyncio.to_thread(os.lstat, entry)
        if stat.S_ISDIR(st.st_mode):
            await self._refuse(
                entry,
                "a folder, not a photo: put the photo files themselves into the drop folder",
            )
            return True
        if (kind := special_kind(st)) is not None:
            await self._refuse(entry, _not_a_file(kind))
            return True
        if st.st_size > (limit := self.host.max_capture_bytes):
            # For good: retrying cannot make it smaller. Never read, never offered.
            await self._refuse(entry, f"the photo is too large: {too_large(st.st_size, limit)}")
            return True
        try:
            photo = await asyncio.to_thread(
                examine,
                entry,
                accept_native=self.options.accept_tiff_png,
                max_pixels=self.options.max_pixels,
            )
        except NotARegularFile as err:  # replaced between the look and the open
            await self._refuse(entry, _not_a_file(str(err)))
            return True
        except NotAPhoto as err:
            if err.incomplete and not await self._stalled_for_good(entry):
                return False
            await self._refuse(entry, str(err))
            return True
        except OSError as err:
            log.info(
                "%s: a dropped file could not be read (%s); trying later",
                self.name,
                plain_os_error(err),
            )
            return False
        try:
            saved = await self._send(entry, photo)
        except CaptureRefused as err:  # TOO_LARGE: retrying cannot change it
            await self._refuse(entry, err.detail)
            return True
        finally:
            self.ready()
        if not saved:
            return False
        try:
            current = await asyncio.to_thread(os.lstat, entry)
        except FileNotFoundError:
            return True
        if file_identity(current) != photo.file:
            log.info("%s: a photo was replaced after it was saved; looking at it again", self.name)
            return False
        await asyncio.to_thread(self.folder.mark_processed, entry)
        return True

    async def _send(self, entry: Path, photo: Photo) -> bool:
        """Stream one examined photo into the spool; True once it is durable, False when
        it stays for a later try. Raises :class:`CaptureRefused` when the spool will never
        take it (TOO_LARGE)."""
        identity = identity_for(photo.exif, self.options)
        offer = offer_for(photo, self.options.max_pixels)
        try:
            sink = await self.host.begin_capture(identity, offer)
        except CaptureRefused as err:
            if err.reason is RefusalReason.TOO_LARGE:
                raise
            return self._refused_by_spool(entry, err)
        self.spool_refused.pop(entry.name, None)
        self.host.set_state(DriverState.TRANSFERRING)
        try:
            receipt = await self._stream(entry, photo, sink)
        except CaptureRefused as err:
            if err.reason is RefusalReason.TOO_LARGE:
                raise
            return self._refused_by_spool(entry, err)
        except (OSError, NotARegularFile) as err:
            await sink.abort("the photo could not be read")
            why = (
                plain_os_error(err)
                if isinstance(err, OSError)
                else "it is not a regular file any more"
            )
            log.info("%s: a photo could not be read (%s); trying later", self.name, why)
            return False
        except BaseException:
            await sink.abort("driver stopped")
            raise
        if receipt.duplicate:
            log.info(
                "%s: photo %s was already saved (spool id %d); acknowledged again",
                self.name,
                photo.capture_id,
                receipt.spool_id,
            )
        else:
            log.info(
                "%s: photo %s saved as spool id %d", self.name, photo.capture_id, receipt.spool_id
            )
        return True

    async def _stream(self, entry: Path, photo: Photo, sink: CaptureSink) -> CaptureReceipt:
        """Stream the examined file; OSError if it is not the file examined any more."""
        fh = await asyncio.to_thread(open_regular, entry)
        try:
            if file_identity(await asyncio.to_thread(os.fstat, fh.fileno())) != photo.file:
                raise OSError("the file changed after it was examined")
            digest = hashlib.sha256()
            size = 0
            while chunk := await asyncio.to_thread(fh.read, _CHUNK):
                digest.update(chunk)
                size += len(chunk)
                await sink.write(chunk)
        finally:
            await asyncio.to_thread(fh.close)
        # Commit what was read; intake checks it against the hash taken when examined.
        if digest.hexdigest() != photo.sha256:
            raise OSError("the file changed while being read")
        return await sink.commit(length=size, sha256=photo.sha256)

    async def _stalled_for_good(self, entry: Path) -> bool:
        """True when an entry that ends too early has not changed for the grace time."""
        seen = self.seen.get(entry.name)
        if seen is None:
            return False
        if DropFolder.settled(seen[1], self.options.truncated_grace_seconds):
            return True
        if entry.name not in self.waiting_truncated:
            self.waiting_truncated.add(entry.name)
            log.info(
                "%s: a dropped file is empty or ends too early; waiting up to %.0f s for its "
                "copy to finish",
                self.name,
                self.options.truncated_grace_seconds,
            )
        return False

    def _refused_by_spool(self, entry: Path, err: CaptureRefused) -> bool:
        """A refusal that may pass (a full disk): the photo stays and is tried again; the
        driver shows ERROR while photos wait for the spool. Logged when the reason
        changes, not at every retry. Always False (not saved)."""
        self.spool_refused[entry.name] = err.reason
        if err.reason != self.spool_refusal:
            log.warning(
                "%s: the spool refused a photo (%s); it stays in the folder and is tried again",
                self.name,
                err,
            )
            self.spool_refusal = err.reason
        return False

    async def _refuse(self, entry: Path, reason: str) -> None:
        """Set ``entry`` aside; OSError (logged once by the caller) if it cannot be."""
        await asyncio.to_thread(self.folder.refuse, entry, reason)
        log.warning("%s: a dropped file was set aside in .refused: %s", self.name, reason)

    def ready(self) -> None:
        """Show the driver as watching, or as ERROR while photos wait for the spool."""
        if self.spool_refused:
            self.host.set_state(DriverState.ERROR, f"spool refuses photos: {self.spool_refusal}")
            return
        if self.spool_refusal is not None:
            log.info("%s: no photo waits for the spool any more", self.name)
            self.spool_refusal = None
        self.host.set_state(DriverState.READY, "watching the photo folder")


def _not_a_file(kind: str) -> str:
    return f"{kind}, not a photo file: {ONLY_REGULAR_FILES}"


def plain_os_error(err: OSError) -> str:
    """An OSError in words, without the path (file names may hold patient names)."""
    return err.strerror or (err.args[0] if err.args and isinstance(err.args[0], str) else "")
