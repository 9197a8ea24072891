"""What the forwarder needs from a sender, whatever the protocol: C-STORE or STOW-RS.

:class:`Sender` is the seam: send a batch (each outcome reported as soon as it is
known) and probe the destination while the circuit is open. :func:`sender_for`
picks the implementation by the destination's ``kind``. The forwarder's batching,
backoff, circuit breaker and stuck alarm stay the same for both.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from typing import Protocol

from gateway.core.config import DicomDestination, DicomwebDestination
from gateway.core.errors import DeliveryError
from gateway.forward.bucket import TokenBucket
from gateway.forward.cstore import CStoreSender, StoreOutcome, StoreRequest


class Sender(Protocol):
    """Delivers batches to one destination; see the module docstring."""

    probe_name: str
    """What :meth:`probe` does, for the log ("C-ECHO", "QIDO-RS")."""

    async def send(
        self,
        requests: Sequence[StoreRequest],
        stop: threading.Event,
        on_outcome: Callable[[StoreOutcome], None],
    ) -> None:
        """Send ``requests``; one outcome each to ``on_outcome`` (any thread), in any
        order; after ``stop`` is set the rest come back NOT_ATTEMPTED."""
        ...

    async def probe(self) -> DeliveryError | None:
        """Check the destination answers: None if it does, else why not."""
        ...

    async def rest(self) -> None:
        """Nothing is to be sent now: close what is kept open between batches."""
        ...


class CStoreLink:
    """:class:`Sender` over :class:`~gateway.forward.cstore.CStoreSender` (blocking,
    so each call runs on a worker thread)."""

    probe_name = "C-ECHO"

    def __init__(self, sender: CStoreSender) -> None:
        self.sender = sender

    async def send(
        self,
        requests: Sequence[StoreRequest],
        stop: threading.Event,
        on_outcome: Callable[[StoreOutcome], None],
    ) -> None:
        """Send on one association (see :meth:`CStoreSender.send_batch`)."""
        await asyncio.to_thread(self.sender.send_batch, requests, stop, on_outcome)

    async def probe(self) -> DeliveryError | None:
        """C-ECHO."""
        return await asyncio.to_thread(self.sender.echo)

    async def rest(self) -> None:
        """Release the associations kept open between batches (:mod:`.kept`)."""
        kept = self.sender.kept
        if kept is not None and len(kept):
            await asyncio.to_thread(kept.release_all)


def sender_for(
    calling_ae: str,
    destination: DicomDestination | DicomwebDestination,
    bucket: TokenBucket | None = None,
) -> Sender:
    """The sender for ``destination``'s kind, paced by ``bucket`` (``max_mbps``) if any."""
    if isinstance(destination, DicomwebDestination):
        # aiohttp only for a DICOMweb store: a box of C-STORE destinations never loads it
        from gateway.forward.stow import StowSender

        return StowSender(destination, bucket=bucket)
    return CStoreLink(CStoreSender(calling_ae, destination, bucket, keep_open=True))


__all__ = ["CStoreLink", "Sender", "sender_for"]
