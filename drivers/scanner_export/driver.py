"""3D total-body scanner driver: an export folder becomes a study of DICOM objects.

The scanner workstation writes each export as a sub-folder of the watched folder
(a network share or a USB disk): an OBJ mesh with its MTL material library and
texture images, or an STL mesh, and ``manifest.json`` **last**
(:mod:`.manifest` documents the format). The driver:

1. watches the folder (:class:`gateway.driver_api.DropFolder`); an entry is
   looked at only once nothing in it changed for ``settle_seconds``;
2. plans it (:func:`.export.plan_export`): no manifest or a listed file still short
   means "being copied, wait"; every file is checked (OBJ/MTL parsed line by line,
   STL and textures checked, links resolved) **before** anything is captured, so a
   damaged export is refused whole and never half-sent; so is an export with a
   symbolic link, pipe, socket, device node or hard-linked file anywhere in it, or
   a PNG/TIFF texture of more than ``max_pixels``, or a file larger than the gateway
   keeps (``[spool] max_capture_mb``, by its size), and none of its files is opened;
3. streams each file into the spool (1 MiB blocks; textures, then materials, then
   meshes) with deterministic capture ids and UIDs, re-hashing while it streams: a
   file that changed since it was checked aborts the export for now;
4. only after every file is committed moves the export into ``.processed/`` (the
   acknowledgement).

A refused export goes to ``.refused/`` with ``NAME.reason.txt`` (plain words, no
patient data, no file names). An export whose copy never completes (a listed file
stays missing or short, or no manifest ever appears) is refused after
``incomplete_timeout`` seconds of standing still.

Partial failure: if capturing stops half-way (spool full, the disk unplugged, the
gateway killed), the export stays in the folder; a refusal by the spool is logged
when its reason changes (not at every retry) and the driver shows ERROR while
exports wait for the spool. A refusal that cannot pass (TOO_LARGE) refuses the
export whole into ``.refused/``. The next attempt offers every
file again; those already in the spool are recognised by their capture ids (same
content, same ids, same UIDs) and acknowledged without a second object, the rest
are stored. So an export is acknowledged exactly when all its files are durable,
and each file reaches the PACS once.

Logs and states name an export by a prefix of its manifest's SHA-256, never by its
folder name (which may hold a patient name). Trouble with one entry (it cannot be
read or moved) is logged once and the entry tried again later; the entries behind
it go on.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from drivers.scanner_export.export import ExportIncomplete, ExportPlan, PlannedFile, plan_export
from drivers.scanner_export.manifest import ExportRefused
from gateway.driver_api import (
    DEFAULT_MAX_PIXELS,
    MAX_NATIVE_PIXELS,
    BaseDriver,
    CaptureOffer,
    CaptureRefused,
    CaptureSink,
    ContentType,
    DeviceClass,
    DeviceHost,
    DriverState,
    DropFolder,
    EntrySnapshot,
    Laterality,
    Matcher,
    NotARegularFile,
    RefusalReason,
    open_regular,
)

__all__ = ["ScannerExportDriver", "ScannerExportOptions"]

log = logging.getLogger(__name__)

_CHUNK = 1 << 20


def _laterality(code: str | None) -> Laterality | None:
    """The manifest's laterality (already checked) as the offer's."""
    return Laterality(code) if code else None


class ScannerExportOptions(BaseModel):
    """Options of a ``[[devices]]`` entry with ``driver = "scanner-export"``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    folder: Path = Field(description="The folder the scanner exports into (must exist).")
    settle_seconds: float = Field(
        default=5.0, ge=0, description="An export is read only after this long without changes."
    )
    poll_interval: float = Field(default=2.0, gt=0, description="Seconds between folder scans.")
    incomplete_timeout: float = Field(
        default=3600.0,
        gt=0,
        description="An export still incomplete after this long unchanged is refused.",
    )
    retry_interval: float = Field(
        default=30.0, gt=0, description="Wait before retrying an export whose capture failed."
    )
    max_pixels: int = Field(
        default=DEFAULT_MAX_PIXELS,
        gt=0,
        le=MAX_NATIVE_PIXELS,
        description=(
            "An export with a PNG or TIFF texture (decoded whole) of more pixels than "
            "this is refused, judged from the header before decoding; JPEGs are not limited."
        ),
    )


@dataclass(slots=True)
class _Watch:
    """What the driver remembers about one entry between scans."""

    snapshot: EntrySnapshot
    since: float
    retry_at: float = 0.0
    waiting_logged: bool = False
    trouble: str = ""


class ScannerExportDriver(BaseDriver[ScannerExportOptions]):
    """Driver ``scanner-export``: exports of a 3D total-body scanner in a folder."""

    id: ClassVar[str] = "scanner-export"
    device_class: ClassVar[DeviceClass] = DeviceClass.BODY_SCANNER
    Options = ScannerExportOptions
    matchers: ClassVar[tuple[Matcher, ...]] = ()
    simulator: ClassVar[str] = "drivers.scanner_export.simulator:main"
    #: How ``dermgate conformance`` drives the simulator (the kit's simulator hook).
    conformance: ClassVar[str] = "drivers.scanner_export.conformance:ScannerExportAdapter"

    def __init__(self, options: ScannerExportOptions, host: DeviceHost, name: str) -> None:
        super().__init__(options, host, name)
        self.folder = DropFolder(options.folder)
        self._watches: dict[str, _Watch] = {}
        #: entry name -> why the spool refused it for now (it waits; the driver is ERROR)
        self._spool_refused: dict[str, RefusalReason] = {}
        #: the spool's refusal last logged (logged when it changes, not at every retry)
        self._spool_refusal: RefusalReason | None = None

    async def run(self) -> None:
        """Watch the folder until cancelled; a missing folder is waited for."""
        while True:
            try:
                await asyncio.to_thread(self.folder.prepare)
            except OSError:
                self.host.set_state(DriverState.DISCONNECTED, "export folder not available")
                await asyncio.sleep(self.options.poll_interval)
                continue
            self._idle()
            try:
                await self.scan_once()
            except OSError as err:
                self.host.set_state(
                    DriverState.ERROR, f"cannot read the export folder: {err.strerror}"
                )
            await asyncio.sleep(self.options.poll_interval)

    def _idle(self) -> None:
        """Show the driver as watching, or as ERROR while exports wait for the spool."""
        if self._spool_refused:
            self.host.set_state(DriverState.ERROR, f"spool refuses exports: {self._spool_refusal}")
            return
        if self._spool_refusal is not None:
            log.info("%s: no export waits for the spool any more", self.name)
            self._spool_refusal = None
        self.host.set_state(DriverState.READY, "watching the export folder")

    async def scan_once(self) -> None:
        """Look at every waiting entry once; process those that are settled."""
        entries = await asyncio.to_thread(self.folder.entries)
        present = {entry.name for entry in entries}
        for gone in set(self._watches) - present:
            del self._watches[gone]
        for gone in set(self._spool_refused) - present:
            del self._spool_refused[gone]
        for entry in entries:
            try:
                await self._look_at(entry)
            except OSError as err:
                # One entry's trouble never stops the entries behind it.
                self._entry_trouble(entry, err.strerror or type(err).__name__)

    async def _look_at(self, entry: Path) -> None:
        try:
            snapshot = await asyncio.to_thread(self.folder.snapshot, entry)
        except FileNotFoundError:
            return  # removed while we looked (an unplugged disk, a moved copy)
        now = time.monotonic()
        watch = self._watches.get(entry.name)
        if watch is None or watch.snapshot != snapshot:
            self._watches[entry.name] = _Watch(snapshot, now)
            return
        if now < watch.retry_at:
            return
        if not self.folder.settled(watch.since, self.options.settle_seconds, now):
            return
        await self._process(entry, watch, now)

    def _entry_trouble(self, entry: Path, problem: str) -> None:
        """Log a problem with one entry once (not at every scan); try it later."""
        watch = self._watches.get(entry.name)
        if watch is None:
            watch = self._watches[entry.name] = _Watch(EntrySnapshot(()), time.monotonic())
        if watch.trouble != problem:
            log.warning(
                "%s: an export could not be handled (%s); it stays, tried again later",
                self.name,
                problem,
            )
        watch.trouble = problem
        watch.retry_at = time.monotonic() + self.options.retry_interval

    async def _process(self, entry: Path, watch: _Watch, now: float) -> None:
        try:
            plan = await asyncio.to_thread(
                plan_export,
                entry,
                date.today(),
                self.options.max_pixels,
                self.host.max_capture_bytes,
            )
        except ExportIncomplete as err:
            if now - watch.since >= self.options.incomplete_timeout:
                await self._refuse(
                    entry,
                    f"the export stayed incomplete for {self.options.incomplete_timeout:.0f} s "
                    f"({err}); copy it again completely",
                )
            elif not watch.waiting_logged:
                watch.waiting_logged = True
                log.info("%s: an export is still being copied (%s)", self.name, err)
            return
        except ExportRefused as err:
            await self._refuse(entry, str(err))
            return
        except OSError as err:
            log.info("%s: an export changed while it was checked (%s)", self.name, err.strerror)
            watch.retry_at = now + self.options.poll_interval
            return
        try:
            captured = await self._capture(entry, plan)
        except CaptureRefused as err:  # TOO_LARGE: retrying cannot change it
            await self._refuse(entry, err.detail)
            self._idle()
            return
        if captured:
            # The move is the acknowledgement: only of the export as it was planned. A
            # re-export into the same folder meanwhile (its manifest rewritten) is
            # looked at again; what was already captured is recognised then.
            try:
                after = await asyncio.to_thread(self.folder.snapshot, entry)
            except OSError:
                after = None
            if after != watch.snapshot:
                log.info(
                    "%s: %s changed while it was captured; looking again", self.name, plan.label
                )
                self._watches.pop(entry.name, None)
                self._spool_refused.pop(entry.name, None)
                self._idle()
                return
            try:
                await asyncio.to_thread(self.folder.mark_processed, entry)
            except OSError as err:
                log.warning(
                    "%s: %s is durable but could not be moved to .processed (%s); "
                    "it will be recognised when offered again",
                    self.name,
                    plan.label,
                    err.strerror,
                )
                watch.retry_at = now + self.options.retry_interval
                return
            del self._watches[entry.name]
            self._spool_refused.pop(entry.name, None)
            log.info(
                "%s: %s acknowledged (%d files durable; moved to .processed)",
                self.name,
                plan.label,
                len(plan.files),
            )
        else:
            watch.retry_at = time.monotonic() + self.options.retry_interval
        self._idle()

    async def _refuse(self, entry: Path, reason: str) -> None:
        """Set the export aside; OSError (logged once by the caller) if it cannot be."""
        await asyncio.to_thread(self.folder.refuse, entry, reason)
        log.warning("%s: an export was refused: %s", self.name, reason)
        self._watches.pop(entry.name, None)
        self._spool_refused.pop(entry.name, None)

    async def _capture(self, entry: Path, plan: ExportPlan) -> bool:
        """Stream every file of the plan into the spool; True when all are durable, False
        when the export stays for a later try. Raises :class:`CaptureRefused` when the
        spool will never take it (TOO_LARGE)."""
        duplicates = 0
        for planned in plan.files:
            offer = CaptureOffer(
                device_capture_id=planned.capture_id,
                acquired_at=plan.manifest.scan_time,
                length=planned.size,
                content_type=planned.content_type,
                extra=self._extra(planned),
                uids=planned.uids,
                patient=plan.patient,
                anatomic_site=plan.manifest.lesion.anatomic_site,
                laterality=_laterality(plan.manifest.lesion.laterality),
                lesion_id=plan.manifest.lesion.lesion_id,
            )
            try:
                sink = await self.host.begin_capture(plan.identity, offer)
                self._spool_refused.pop(entry.name, None)
                self.host.set_state(DriverState.TRANSFERRING, plan.label)
                done = await self._stream(entry, planned, sink)
            except CaptureRefused as err:
                if err.reason is RefusalReason.TOO_LARGE:
                    raise
                self._refused_by_spool(entry, plan, err)
                return False
            if done is None:
                return False
            duplicates += done
        if duplicates:
            log.info(
                "%s: %s: %d files were already in the spool", self.name, plan.label, duplicates
            )
        return True

    def _refused_by_spool(self, entry: Path, plan: ExportPlan, err: CaptureRefused) -> None:
        """A refusal that may pass (a full disk): the export stays and is tried again; the
        driver shows ERROR while exports wait for the spool. Logged when the reason
        changes, not at every retry."""
        self._spool_refused[entry.name] = err.reason
        if err.reason != self._spool_refusal:
            log.warning("%s: %s not saved: %s; will retry", self.name, plan.label, err)
            self._spool_refusal = err.reason

    def _extra(self, planned: PlannedFile) -> dict[str, Any]:
        """The offer's extra: the links, and for a texture DermGate decodes, the limit
        (checked again when it is wrapped)."""
        extra = planned.links.to_extra()
        if planned.content_type in (ContentType.PNG, ContentType.TIFF):
            extra["max_pixels"] = self.options.max_pixels
        return extra

    async def _stream(self, entry: Path, planned: PlannedFile, sink: CaptureSink) -> int | None:
        """Copy one file into ``sink``; 1 if it was a re-offer, 0 if new, None if it failed."""
        digest = hashlib.sha256()
        length = 0
        try:
            fh = await asyncio.to_thread(open_regular, planned.path, under=entry)
            try:
                while chunk := await asyncio.to_thread(fh.read, _CHUNK):
                    digest.update(chunk)
                    length += len(chunk)
                    await sink.write(chunk)
            finally:
                await asyncio.to_thread(fh.close)
        except (OSError, NotARegularFile) as err:
            await sink.abort("export file unreadable")
            why = err.strerror if isinstance(err, OSError) else "not a regular file any more"
            log.warning("%s: an export file became unreadable (%s)", self.name, why)
            return None
        if digest.hexdigest() != planned.sha256 or length != planned.size:
            await sink.abort("export file changed after it was checked")
            log.info("%s: an export file changed after it was checked; will retry", self.name)
            return None
        receipt = await sink.commit(length=length, sha256=digest.hexdigest())
        return 1 if receipt.duplicate else 0
