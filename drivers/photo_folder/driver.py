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
   (:meth:`gateway.driver_api.DropFolder.settled`); when the kernel said its writer
   closed it (or renamed it in) and nothing wrote to it since
   (:class:`gateway.driver_api.FolderEvents`, inotify: local writers, and shares
   this box serves), ``closed_settle_seconds`` of the same look after the close
   suffice. The next look comes when an entry will have settled, or at once when
   a file is closed, else every ``poll_interval``. A half-written file is
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
import logging
from typing import ClassVar

from drivers.photo_folder.offers import PhotoFolderOptions, identity_for, offer_for
from drivers.photo_folder.watcher import FolderWatcher, plain_os_error
from gateway.driver_api import (
    Backoff,
    BaseDriver,
    DeviceClass,
    DriverState,
    DropFolder,
    FolderEvents,
    Matcher,
)

__all__ = ["PhotoFolderDriver", "PhotoFolderOptions", "identity_for", "offer_for"]

log = logging.getLogger(__name__)


class PhotoFolderDriver(BaseDriver[PhotoFolderOptions]):
    """Driver ``photo-folder``: photos dropped into a folder (camera, card reader, phone)."""

    id: ClassVar[str] = "photo-folder"
    device_class: ClassVar[DeviceClass] = DeviceClass.CAMERA
    Options = PhotoFolderOptions
    matchers: ClassVar[tuple[Matcher, ...]] = ()
    simulator: ClassVar[str] = "drivers.photo_folder.simulator:main"
    #: How ``dermgate conformance`` drives the simulator (the kit's simulator hook).
    conformance: ClassVar[str] = "drivers.photo_folder.conformance:PhotoFolderAdapter"

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
            events = FolderEvents.open(folder.root)
            if events is None:
                log.debug("%s: no close events for the folder; judged by looks alone", self.name)
            watcher = FolderWatcher(folder, self.host, self.options, self.name, events)
            watcher.ready()
            try:
                while True:
                    await watcher.look()
                    await watcher.pause()
            except OSError as err:
                log.warning("%s: the photo folder went away (%s)", self.name, plain_os_error(err))
                self.host.set_state(DriverState.DISCONNECTED, "photo folder lost")
                await asyncio.sleep(backoff.next_delay())
            finally:
                if watcher.events is not None:
                    watcher.events.close()
