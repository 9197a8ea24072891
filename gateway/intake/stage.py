"""What a staged capture needs of the intake stage that made it, and what both share:
fresh UIDs, the refusals a write or a UID clash gives, how a capture is written
inline, and what the context stage said about it.
"""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from gateway.core.capture import (
    CaptureOffer,
    CaptureRefused,
    DeviceIdentity,
    GatewayIdentity,
    InstanceUIDs,
    RefusalReason,
)
from gateway.core.context import CaptureContext
from gateway.core.routing import RoutePlan
from gateway.core.uids import new_uid
from gateway.devices.contract import CaptureReceipt
from gateway.spool import ledger as db
from gateway.spool.dirs import SpoolDirs
from gateway.spool.ledger import Ledger

__all__ = [
    "NO_BINDING",
    "CaptureBinding",
    "InlineWrap",
    "IntakeStage",
    "fresh_uids",
    "refusal_for",
    "uids_in_use",
]


def fresh_uids() -> InstanceUIDs:
    """New random Study, Series and SOP Instance UIDs for a capture."""
    return InstanceUIDs(study=new_uid(), series=new_uid(), sop_instance=new_uid())


def refusal_for(err: OSError) -> CaptureRefused:
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return CaptureRefused(RefusalReason.DISK_FULL, "no space left in the spool")
    return CaptureRefused(RefusalReason.STORAGE_ERROR, f"spool write failed: {err.strerror}")


def uids_in_use() -> CaptureRefused:
    return CaptureRefused(
        RefusalReason.CONFLICT, "the capture's UIDs are already used by another capture"
    )


@dataclass(frozen=True, slots=True)
class InlineWrap:
    """How intake writes a capture straight into its DICOM file (one copy on disk).

    Whether a capture can, and which object it becomes, is
    :mod:`gateway.dicom.writers`'s decision; ``gateway`` is the identity written
    into the object; ``destinations`` (and their routes) get a pending delivery; ``on_wrapped``
    wakes the forwarders.
    """

    gateway: GatewayIdentity
    destinations: RoutePlan | tuple[str, ...]
    on_wrapped: Callable[[], None]


@dataclass(frozen=True, slots=True)
class CaptureBinding:
    """What the context stage said when the device started sending the capture:
    the configured device's name, the session context (or None) and, for a held
    capture, the reason it waits."""

    device_name: str | None = None
    context: CaptureContext | None = None
    held: str | None = None


NO_BINDING = CaptureBinding()


class IntakeStage(Protocol):
    """What a :class:`StagedCapture` needs of the intake stage that made it."""

    ledger: Ledger
    dirs: SpoolDirs
    inline: InlineWrap | None
    max_capture_bytes: int
    naming: asyncio.Lock

    async def reserve_spool_id(self) -> int:
        """A spool id no capture has."""

    async def patient_spool_id(self, spool_id: int, offer: CaptureOffer, uids: InstanceUIDs) -> int:
        """The spool id naming the capture's temporary patient."""

    async def uids_taken(
        self, identity: DeviceIdentity, offer: CaptureOffer, length: int, sha256: str
    ) -> CaptureReceipt:
        """A duplicate's receipt, or a refusal for a capture whose UIDs are taken."""

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
        """Commit the ledger row of a durable spooled file."""
