"""The wrapping stage: CAPTURED → WRAPPED (or QUARANTINED with a reason).

For each durable capture it reads the JPEG header, runs the pure builder for the
device's class, and writes the Part 10 file atomically into ``dicom/``. Then the
ledger row becomes WRAPPED with a pending delivery per destination. A capture the
builder refuses (not a JPEG, subsampling DICOM cannot describe) is quarantined: it
was acknowledged, so it is kept, never sent, and shown with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from datetime import datetime

from pydicom.dataset import Dataset

from gateway.capture import (
    CaptureOffer,
    DeviceClass,
    DeviceIdentity,
    GatewayIdentity,
    InstanceUIDs,
)
from gateway.dicom.dermoscopy import build_dermoscopic_photography
from gateway.dicom.errors import WrapError
from gateway.dicom.jpeg import JpegInfo, read_jpeg_info
from gateway.dicom.part10 import write_part10_encapsulated
from gateway.spool import ledger as db
from gateway.spool.files import SpoolDirs
from gateway.spool.ledger import Ledger, SpoolEntry
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
        destinations: Sequence[str],
        on_wrapped: Callable[[], None],
    ) -> None:
        self._ledger = ledger
        self._dirs = dirs
        self._gateway = gateway
        self._destinations = tuple(destinations)
        self._on_wrapped = on_wrapped
        self.wanted = asyncio.Event()

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
                await asyncio.wait_for(self.wanted.wait(), _POLL)
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
        raw = self._dirs.raw / entry.raw_name
        dicom_name = f"{entry.uids.sop_instance}.dcm"
        try:
            dataset = await asyncio.to_thread(self._build, entry, datetime.now().astimezone())
            await asyncio.to_thread(
                write_part10_encapsulated, dataset, raw, self._dirs.dicom / dicom_name
            )
        except WrapError as err:
            log.warning("spool id %d quarantined: %s", entry.id, err)
            await self._ledger.call(db.quarantine, entry.id, str(err))
            return True
        except OSError as err:
            log.error(
                "spool id %d: cannot write DICOM file (%s); will retry",
                entry.id,
                err.strerror or type(err).__name__,
            )
            return False
        await self._ledger.call(
            db.mark_wrapped,
            entry.id,
            dicom_name=dicom_name,
            sop_class_uid=str(dataset.SOPClassUID),
            transfer_syntax_uid=str(dataset.file_meta.TransferSyntaxUID),
            destinations=self._destinations,
            now=time.time(),
        )
        log.info("spool id %d wrapped as %s", entry.id, dataset.SOPClassUID.name)
        self._on_wrapped()
        return True

    def _build(self, entry: SpoolEntry, now: datetime) -> Dataset:
        jpeg = read_jpeg_info(self._dirs.raw / entry.raw_name)
        return self.build(entry.device, entry.offer, entry.uids, jpeg, now)

    def build(
        self,
        identity: DeviceIdentity,
        offer: CaptureOffer,
        uids: InstanceUIDs,
        jpeg: JpegInfo,
        now: datetime,
    ) -> Dataset:
        """The DICOM data set (without Pixel Data) for one capture; raises WrapError.

        Used here for captures in ``raw/`` and by intake, which streams a JPEG it
        can describe straight into its DICOM file.
        """
        if identity.device_class is not DeviceClass.DERMATOSCOPE:
            raise WrapError(f"no DICOM builder for device class {identity.device_class}")
        return build_dermoscopic_photography(
            identity=identity,
            offer=offer,
            uids=uids,
            jpeg=jpeg,
            gateway=self._gateway,
            patient=None,
            now=now,
            # Without patient context every capture is its own study and series
            # (never merge two patients' images), so both numbers are 1.
            series_number=1,
            instance_number=1,
        )

    @property
    def destinations(self) -> tuple[str, ...]:
        """Names of the destinations every capture is delivered to."""
        return self._destinations
