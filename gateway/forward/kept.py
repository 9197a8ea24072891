"""Associations kept open between a destination's batches while deliveries are due.

Opening an association costs the gateway more CPU than sending a small instance
(two threads, negotiation, release: ~10 ms against ~1 ms per 73 KB instance), so in a
backlog drain one association per batch of 20 was a sixth of the sender's CPU
(``bench/README.md``, item 12). A :class:`~gateway.forward.cstore.CStoreSender`
made with ``keep_open`` hands an association that is still established after its
batch back here instead of releasing it; the next batch proposing no context it
lacks takes it again. The forwarder calls :meth:`KeptAssociations.release_all`
whenever a worker has nothing to send (nothing due, outside the send windows, the
circuit open) and when it stops, so an association is never left idle: it is
released (A-RELEASE, never A-ABORT) as before, only after the last batch of a run
of due deliveries rather than after each one. A batch that is stopped, or whose
association ended, keeps nothing.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from gateway.forward.direct_store import DirectStore

__all__ = ["Kept", "KeptAssociations"]


@dataclass(frozen=True, slots=True)
class Kept:
    """An established association, its C-STORE path, and the (SOP class, transfer
    syntax) pairs it proposed."""

    assoc: Any
    store: DirectStore
    proposed: frozenset[tuple[str, str]]


class KeptAssociations:
    """The idle associations of one destination; safe to use from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: list[Kept] = []

    def take(self, proposed: frozenset[tuple[str, str]]) -> Kept | None:
        """An idle association that proposed every pair of ``proposed`` and is still
        established, taken out of the pool; None if there is none."""
        with self._lock:
            for kept in list(self._idle):
                if not kept.assoc.is_established:
                    self._idle.remove(kept)  # the peer ended it meanwhile
                elif proposed <= kept.proposed:
                    self._idle.remove(kept)
                    return kept
        return None

    def give_back(self, kept: Kept) -> None:
        """Keep ``kept`` open for the next batch."""
        with self._lock:
            self._idle.append(kept)

    def release_all(self) -> int:
        """Release every idle association (blocking); return how many were open."""
        with self._lock:
            idle, self._idle = self._idle, []
        released = 0
        for kept in idle:
            if kept.assoc.is_established:
                kept.assoc.release()
                released += 1
        return released

    def __len__(self) -> int:
        with self._lock:
            return len(self._idle)
