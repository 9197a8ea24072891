"""3D total-body scanner driver: an export folder becomes a study of DICOM objects.

The scanner workstation writes each export as a sub-folder of the watched folder
(a network share or a USB disk): an OBJ mesh with its MTL material library and
texture images, or an STL mesh, and ``manifest.json`` **last**
(:mod:`.manifest` documents the format). The driver:

1. watches the folder (:class:`gateway.devices.folders.DropFolder`); an entry is
   looked at only once nothing in it changed for ``settle_seconds``;
2. plans it (:func:`.export.plan_export`): no manifest or a listed file still short
   means "being copied, wait"; every file is checked (OBJ/MTL parsed line by line,
   STL and textures checked, links resolved) **before** anything is captured, so a
   damaged export is refused whole and never half-sent;
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
gateway killed), the export stays in the folder. The next attempt offers every
file again; those already in the spool are recognised by their capture ids (same
content, same ids, same UIDs) and acknowledged without a second object, the rest
are stored. So an export is acknowledged exactly when all its files are durable,
and each file reaches the PACS once.

Logs and states name an export by a prefix of its manifest's SHA-256, never by its
folder name (which may hold a patient name).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from drivers.scanner_export.export import ExportIncomplete, ExportPlan, PlannedFile, plan_export
from drivers.scanner_export.manifest import ExportRefused
from gateway.capture import CaptureOffer, DeviceClass
from gateway.devices.contract import CaptureRefused, CaptureSink, DeviceHost, DriverState, Matcher
from gateway.devices.folders import DropFolder, EntrySnapshot

__all__ = ["ScannerExportDriver", "ScannerExportOptions"]

log = logging.getLogger(__name__)

_CHUNK = 1 << 20


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


@dataclass(slots=True)
class _Watch:
    """What the driver remembers about one entry between scans."""

    snapshot: EntrySnapshot
    since: float
    retry_at: float = 0.0
    waiting_logged: bool = False


class ScannerExportDriver:
    """Driver ``scanner-export``: exports of a 3D total-body scanner in a folder."""

    id: ClassVar[str] = "scanner-export"
    device_class: ClassVar[DeviceClass] = DeviceClass.BODY_SCANNER
    Options: ClassVar[type[BaseModel]] = ScannerExportOptions
    matchers: ClassVar[tuple[Matcher, ...]] = ()
    simulator: ClassVar[str] = "drivers.scanner_export.simulator:main"

    def __init__(self, options: BaseModel, host: DeviceHost, name: str) -> None:
        assert isinstance(options, ScannerExportOptions)
        self.options = options
        self.host = host
        self.name = name
        self.folder = DropFolder(options.folder)
        self._watches: dict[str, _Watch] = {}

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
        self.host.set_state(DriverState.READY, "watching the export folder")

    async def scan_once(self) -> None:
        """Look at every waiting entry once; process those that are settled."""
        entries = await asyncio.to_thread(self.folder.entries)
        present = {entry.name for entry in entries}
        for gone in set(self._watches) - present:
            del self._watches[gone]
        for entry in entries:
            try:
                snapshot = await asyncio.to_thread(self.folder.snapshot, entry)
            except FileNotFoundError:
                continue  # removed while we looked (an unplugged disk, a moved copy)
            now = time.monotonic()
            watch = self._watches.get(entry.name)
            if watch is None or watch.snapshot != snapshot:
                self._watches[entry.name] = _Watch(snapshot, now)
                continue
            if now < watch.retry_at:
                continue
            if not self.folder.settled(watch.since, self.options.settle_seconds, now):
                continue
            await self._process(entry, watch, now)

    async def _process(self, entry: Path, watch: _Watch, now: float) -> None:
        try:
            plan = await asyncio.to_thread(plan_export, entry, date.today())
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
        if await self._capture(plan):
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
        log.warning("%s: an export was refused: %s", self.name, reason)
        await asyncio.to_thread(self.folder.refuse, entry, reason)
        self._watches.pop(entry.name, None)

    async def _capture(self, plan: ExportPlan) -> bool:
        """Stream every file of the plan into the spool; True when all are durable."""
        self.host.set_state(DriverState.TRANSFERRING, plan.label)
        duplicates = 0
        for planned in plan.files:
            offer = CaptureOffer(
                device_capture_id=planned.capture_id,
                acquired_at=plan.manifest.scan_time,
                length=planned.size,
                content_type=planned.content_type,
                extra=planned.links.to_extra(),
                uids=planned.uids,
                patient=plan.patient,
            )
            try:
                sink = await self.host.begin_capture(plan.identity, offer)
                done = await self._stream(planned, sink)
            except CaptureRefused as err:
                self.host.set_state(DriverState.ERROR, f"{plan.label}: {err.reason}")
                log.warning("%s: %s not saved: %s; will retry", self.name, plan.label, err)
                return False
            if done is None:
                return False
            duplicates += done
        if duplicates:
            log.info(
                "%s: %s: %d files were already in the spool", self.name, plan.label, duplicates
            )
        return True

    async def _stream(self, planned: PlannedFile, sink: CaptureSink) -> int | None:
        """Copy one file into ``sink``; 1 if it was a re-offer, 0 if new, None if it failed."""
        digest = hashlib.sha256()
        length = 0
        try:
            fh = await asyncio.to_thread(planned.path.open, "rb")
            try:
                while chunk := await asyncio.to_thread(fh.read, _CHUNK):
                    digest.update(chunk)
                    length += len(chunk)
                    await sink.write(chunk)
            finally:
                await asyncio.to_thread(fh.close)
        except OSError as err:
            await sink.abort("export file unreadable")
            log.warning("%s: an export file became unreadable (%s)", self.name, err.strerror)
            return None
        if digest.hexdigest() != planned.sha256 or length != planned.size:
            await sink.abort("export file changed after it was checked")
            log.info("%s: an export file changed after it was checked; will retry", self.name)
            return None
        receipt = await sink.commit(length=length, sha256=digest.hexdigest())
        return 1 if receipt.duplicate else 0
