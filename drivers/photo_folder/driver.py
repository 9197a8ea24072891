"""Photo-folder driver: clinical photos dropped into a folder become VL Photographic images.

The "wire" is a folder (a share the camera app writes to, a card reader's copy
target, a phone sync folder). The protocol, the same for every camera:

1. A photo is a regular file directly in the folder; names starting with ``.`` are
   never touched (copies in progress under a temporary name, our own sub-folders).
   A symbolic link, named pipe, socket, device node or a file with a second hard
   link is set aside unopened (:func:`gateway.driver_api.special_kind`): only
   a file that is really in the folder is ever read, and nothing can block the
   driver (a pipe is never opened).
2. A file counts as complete when every look for ``settle_seconds`` (by the box's
   own clock, never the file server's) saw the same size and mtime
   (:meth:`gateway.driver_api.DropFolder.settled`). A half-written file is
   never sent: it is either still moving, or (a copy that stopped for good)
   refused as truncated below.
3. It is examined (:func:`.photos.examine`): JPEG carried byte for byte, TIFF/PNG
   decoded losslessly; what DICOM cannot carry (4:4:4 or progressive JPEG, a
   damaged file, something that is not a photo, a folder, a TIFF/PNG of more than
   ``max_pixels``, a file larger than the gateway keeps, ``[spool] max_capture_mb``,
   judged by its size before it is read) goes to ``.refused/`` with a plain
   ``NAME.reason.txt``, and is never acknowledged. A file that is empty or merely
   ends too early (no JPEG End Of Image marker, a truncated PNG/TIFF) looks exactly
   like a copy that stalled
   (card reader, network share, a phone sync that created the file and waits), so
   it is left alone until it has been unchanged for ``truncated_grace_seconds`` and
   only then refused; a copy that resumes within that time is sent whole and
   nothing is refused, and one that resumes later, into the file set aside, is
   noticed and the file taken back to be looked at again.
4. It is streamed into the spool with its EXIF (make, model, body serial,
   software, time taken, lens, exposure) and ``device_capture_id`` = a hash of its
   content; only after ``commit`` returned (durable) is it moved into
   ``.processed/``: that move is the acknowledgement. A photo dropped again with
   the same content (and the same camera identity) is recognised by the spool and
   moved to ``.processed/`` without a second DICOM object.
5. If the file was replaced or changed after it was examined, it is not moved:
   the new content is examined and sent on a later look.
6. Trouble with one entry (it cannot be read or moved) is logged once and that
   entry tried again later; the entries behind it go on. Only a folder that cannot
   be listed any more counts as the folder gone. A refusal by the spool that may
   pass (a full disk) leaves the photo in the folder to be tried again: it is logged
   when the spool's reason changes, not at every try, and the driver shows ERROR
   while photos wait for the spool. A refusal that cannot pass (TOO_LARGE) sets the
   photo aside in ``.refused/`` like any photo DermGate cannot take.

Camera identity (General Equipment of VL Photographic; only Manufacturer is
required there, type 2, and may be empty): EXIF Make, Model, BodySerialNumber and
Software; the options ``manufacturer``, ``model`` and ``serial_number`` fill in
what a camera's EXIF lacks (never overriding what the camera said). What neither
says stays empty or absent in DICOM, never invented. The dedupe key is the
spool's (device serial number, capture id) pair; since the id is a content hash,
a re-drop is recognised as long as the serial number (EXIF or fallback) is the
same.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import stat
from pathlib import Path
from typing import ClassVar, Final

from pydantic import BaseModel, ConfigDict, Field

from drivers.photo_folder.exif import CameraExif
from drivers.photo_folder.photos import NotAPhoto, Photo, examine, file_identity
from gateway.driver_api import (
    DEFAULT_MAX_PIXELS,
    MAX_NATIVE_PIXELS,
    ONLY_REGULAR_FILES,
    Backoff,
    BaseDriver,
    CaptureOffer,
    CaptureReceipt,
    CaptureRefused,
    CaptureSink,
    ContentType,
    DeviceClass,
    DeviceHost,
    DeviceIdentity,
    DriverState,
    DropFolder,
    EntrySnapshot,
    ExifFields,
    Matcher,
    NotARegularFile,
    PhotoExtra,
    RefusalReason,
    open_regular,
    special_kind,
    too_large,
)

__all__ = ["PhotoFolderDriver", "PhotoFolderOptions", "identity_for", "offer_for"]

log = logging.getLogger(__name__)

_CHUNK: Final = 1 << 20
_LO: Final = 64


class PhotoFolderOptions(BaseModel):
    """Options of a ``[[devices]]`` entry with ``driver = "photo-folder"``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    folder: Path = Field(description="The folder the camera (or its copy tool) writes photos to.")
    settle_seconds: float = Field(
        default=2.0,
        ge=0,
        description="A file must look unchanged this long (by the box's clock) before it is taken.",
    )
    poll_interval: float = Field(
        default=1.0, gt=0, description="Seconds between looks at the folder."
    )
    truncated_grace_seconds: float = Field(
        default=60.0,
        ge=0,
        description=(
            "A file that ends too early (a stalled copy looks the same) is refused only "
            "once unchanged this long."
        ),
    )
    manufacturer: str | None = Field(
        default=None,
        max_length=_LO,
        description="Camera manufacturer for photos whose EXIF has no Make.",
    )
    model: str | None = Field(
        default=None, max_length=_LO, description="Camera model for photos whose EXIF has no Model."
    )
    serial_number: str | None = Field(
        default=None,
        max_length=_LO,
        description="Camera serial number for photos whose EXIF has no BodySerialNumber.",
    )
    accept_tiff_png: bool = Field(
        default=True,
        description="Also take TIFF and PNG photos (stored losslessly as native pixels).",
    )
    max_pixels: int = Field(
        default=DEFAULT_MAX_PIXELS,
        gt=0,
        le=MAX_NATIVE_PIXELS,
        description=(
            "TIFF and PNG photos (decoded whole) of more pixels than this are refused, "
            "judged from their header before decoding; JPEGs are not limited."
        ),
    )


def identity_for(exif: CameraExif, options: PhotoFolderOptions) -> DeviceIdentity:
    """The camera as EXIF names it, with the configured fallbacks for what it does not."""
    return DeviceIdentity(
        manufacturer=(exif.make or options.manufacturer or "").strip()[:_LO],
        model=(exif.model or options.model or "").strip()[:_LO],
        serial_number=(exif.body_serial_number or options.serial_number or "").strip()[:_LO],
        software_versions=(exif.software.strip()[:_LO],) if exif.software else (),
        device_class=DeviceClass.CAMERA,
    )


def offer_for(photo: Photo, max_pixels: int | None = None) -> CaptureOffer:
    """The capture offer of an examined photo (EXIF in ``extra``, time taken); for a
    photo DermGate decodes, the device's ``max_pixels`` too (checked again at wrapping)."""
    exif = photo.exif
    fields = ExifFields(
        make=exif.make,
        model=exif.model,
        body_serial_number=exif.body_serial_number,
        software=exif.software,
        lens_make=exif.lens_make,
        lens_model=exif.lens_model,
        lens_serial_number=exif.lens_serial_number,
        lens_specification=exif.lens_specification,
        focal_length_mm=exif.focal_length_mm,
        focal_length_35mm=exif.focal_length_35mm,
        f_number=exif.f_number,
        exposure_time_s=exif.exposure_time_s,
        iso=exif.iso,
        exif_version=exif.exif_version,
        date_time_original=exif.date_time_original,
        offset_time_original=exif.offset_time_original,
        orientation=exif.orientation,
    )
    return CaptureOffer(
        device_capture_id=photo.capture_id,
        acquired_at=exif.taken_at(),
        length=photo.file.size,
        content_type=photo.content_type,
        extra=PhotoExtra(
            exif=fields,
            max_pixels=None if photo.content_type is ContentType.JPEG else max_pixels,
        ).to_extra(),
    )


class _Watcher:
    """One pass after another over the folder; each settled entry handled in turn."""

    def __init__(
        self, folder: DropFolder, host: DeviceHost, options: PhotoFolderOptions, name: str
    ) -> None:
        self.folder = folder
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
                self._entry_trouble(entry, _why(err))
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
        if not DropFolder.settled(before[1], self.options.settle_seconds, now):
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
            log.warning("%s: could not look into .refused (%s)", self.name, _why(err))

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
                "%s: a dropped file could not be read (%s); trying later", self.name, _why(err)
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
            why = _why(err) if isinstance(err, OSError) else "it is not a regular file any more"
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


class PhotoFolderDriver(BaseDriver[PhotoFolderOptions]):
    """Driver ``photo-folder``: photos dropped into a folder (camera, card reader, phone)."""

    id: ClassVar[str] = "photo-folder"
    device_class: ClassVar[DeviceClass] = DeviceClass.CAMERA
    Options = PhotoFolderOptions
    matchers: ClassVar[tuple[Matcher, ...]] = ()
    simulator: ClassVar[str] = "drivers.photo_folder.simulator:main"

    async def run(self) -> None:
        """Watch the folder for ever; wait for it when it is missing (unmounted share)."""
        folder = DropFolder(self.options.folder)
        backoff = Backoff(initial=1.0, cap=30.0)
        while True:
            try:
                await asyncio.to_thread(folder.prepare)
            except OSError:
                self.host.set_state(DriverState.DISCONNECTED, "photo folder not available")
                await asyncio.sleep(backoff.next_delay())
                continue
            backoff.reset()
            watcher = _Watcher(folder, self.host, self.options, self.name)
            watcher.ready()
            try:
                while True:
                    await watcher.look()
                    await asyncio.sleep(self.options.poll_interval)
            except OSError as err:
                log.warning("%s: the photo folder went away (%s)", self.name, _why(err))
                self.host.set_state(DriverState.DISCONNECTED, "photo folder lost")
                await asyncio.sleep(backoff.next_delay())


def _not_a_file(kind: str) -> str:
    return f"{kind}, not a photo file: {ONLY_REGULAR_FILES}"


def _why(err: OSError) -> str:
    """An OSError in words, without the path (file names may hold patient names)."""
    return err.strerror or (err.args[0] if err.args and isinstance(err.args[0], str) else "")
