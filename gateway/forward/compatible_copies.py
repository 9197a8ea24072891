"""``fallback = "compatible"`` for one destination: which file each delivery sends,
and writing the derived objects the PACS takes instead of a class it refuses.

A delivery whose ledger row names a derived object (``sent_sop_class_uid``) sends
``spool/derived/<dicom name>`` (written again first if it went missing: the same
object, :mod:`gateway.dicom.compatible` is deterministic); any other delivery
sends the capture's own file, and for a destination with ``fallback =
"compatible"`` carries the :class:`~gateway.forward.cstore.CompatibleCopy` the
sender uses when the PACS refuses the original's class. When the PACS accepts the
compatible class but the copy is not written yet (outcome ``DERIVE``), it is
written here on a worker thread (pydicom I/O is blocking), the choice is recorded
in the ledger, and the delivery is due at once.

The derived file is the same for every destination (one per capture); the purge
deletes it with the capture (:mod:`gateway.spool.purge`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from gateway.core.config import DicomDestination, DicomwebDestination
from gateway.core.errors import DeliveryErrorCode
from gateway.dicom.compatible import (
    DeriveError,
    compatible_class,
    derive_compatible,
    derived_instance_uid,
)
from gateway.dicom.sop_classes import uid_name
from gateway.forward.cstore import (
    CompatibleCopy,
    StoreOutcome,
    StoreRequest,
    Verdict,
    not_accepted_reason,
)
from gateway.spool.deliveries import record_substitute
from gateway.spool.dirs import SpoolDirs
from gateway.spool.ledger import DueDelivery, Ledger

__all__ = ["CompatibleCopies"]

log = logging.getLogger(__name__)


def _software_version() -> str:
    try:
        return version("dermgate")
    except PackageNotFoundError:
        return "0+unknown"


class CompatibleCopies:
    """The derived objects one destination is sent (see the module docstring)."""

    def __init__(
        self,
        ledger: Ledger,
        dirs: SpoolDirs,
        destination: DicomDestination | DicomwebDestination,
    ) -> None:
        self._ledger = ledger
        self._dirs = dirs
        self._destination = destination

    async def request(self, due: DueDelivery) -> StoreRequest:
        """What to send for ``due``: its derived object if one was chosen, else the
        capture (with its compatible copy for a ``"compatible"`` destination)."""
        original = self._dirs.dicom / due.dicom_name
        derived = self._dirs.derived / due.dicom_name
        if due.sent_sop_class_uid:
            if not derived.exists():
                await self._write(original, derived)  # a failure shows as a local file error
            return StoreRequest(
                due.spool_id, derived, due.sent_sop_class_uid, due.transfer_syntax_uid
            )
        copy = None
        target = compatible_class(due.sop_class_uid)
        compatible = (  # a DICOMweb store has no fallback: it gets the original
            isinstance(self._destination, DicomDestination)
            and self._destination.fallback == "compatible"
        )
        if compatible and target is not None:
            uid = derived_instance_uid(due.sop_instance_uid, target)
            copy = CompatibleCopy(target, uid, derived)
        return StoreRequest(
            due.spool_id, original, due.sop_class_uid, due.transfer_syntax_uid, copy
        )

    async def derive(self, outcome: StoreOutcome) -> StoreOutcome:
        """Write the copy an outcome ``DERIVE`` asks for and make the delivery send it
        now; ``outcome`` itself when done, else why it could not be written."""
        request = outcome.derive
        copy = request.compatible if request is not None else None
        if request is None or copy is None:
            raise ValueError("a DERIVE outcome names the request and its copy")
        try:
            await asyncio.to_thread(derive_compatible, request.path, copy.path, _software_version())
        except DeriveError as err:
            detail = (
                f"{not_accepted_reason(request.sop_class_uid)} (its {uid_name(copy.sop_class_uid)} "
                f"copy cannot be made: {err})"
            )
            return StoreOutcome(
                outcome.spool_id, Verdict.PERMANENT, detail, code=DeliveryErrorCode.NOT_ACCEPTED
            )
        except OSError as err:
            return StoreOutcome(
                outcome.spool_id,
                Verdict.RETRYABLE,
                f"cannot write the compatible copy: {type(err).__name__}",
                code=DeliveryErrorCode.LOCAL_FILE,
            )
        await self.remember(outcome.spool_id, copy)
        log.info(
            "spool id %d: %s does not accept its class; sending it as %s (derived)",
            outcome.spool_id,
            self._destination.name,
            uid_name(copy.sop_class_uid),
        )
        return outcome

    async def remember(self, spool_id: int, copy: CompatibleCopy) -> None:
        """Record in the ledger that this destination gets ``copy``, due now."""
        await self._ledger.call(
            record_substitute,
            spool_id,
            self._destination.name,
            copy.sop_class_uid,
            copy.sop_instance_uid,
            time.time(),
        )

    async def _write(self, original: Path, derived: Path) -> None:
        try:
            await asyncio.to_thread(derive_compatible, original, derived, _software_version())
        except (DeriveError, OSError) as err:
            log.error("cannot write the compatible copy %s: %s", derived.name, type(err).__name__)
