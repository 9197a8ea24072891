"""A token bucket: at most ``max_mbps`` leaves the box for one destination.

One :class:`TokenBucket` per destination, shared by all its associations (threads
for C-STORE) and requests (STOW-RS). Whoever is about to write ``n`` bytes calls
``take(n)`` (a thread) or ``await take_async(n)`` (the event loop) first; both
return once the bytes fit the rate.

How it stays fair: taking *reserves* the bytes at once, under a lock, and the
bucket may go into debt; the caller then sleeps for as long as the debt takes to
pay off at the rate. Reservations are served in the order they were made, so no
sender starves another, and the long-run total never exceeds ``rate`` × time +
``burst`` whatever the number of senders. A chunk larger than the burst is allowed
(it waits longer), so a sender never has to split its writes to fit.

For a body sent by an HTTP client (STOW-RS), wrap the chunks it reads::

    async def paced(chunks):
        async for chunk in chunks:
            await bucket.take_async(len(chunk))
            yield chunk
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

__all__ = ["TokenBucket", "bucket_for"]

_BURST_SECONDS = 0.25
"""The burst is this many seconds of the rate (at least :data:`_MIN_BURST`)."""
_MIN_BURST = 64 * 1024
_MIN_FRAGMENT = 16 * 1024


class TokenBucket:
    """At most ``rate`` bytes per second on average, bursts up to ``burst`` bytes.

    Thread-safe; ``clock`` and ``sleep`` are injectable for tests.
    """

    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = float(rate)
        self.burst = float(burst) if burst is not None else max(rate * _BURST_SECONDS, _MIN_BURST)
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tokens = self.burst
        self._stamp = clock()

    @classmethod
    def from_mbps(cls, mbps: float) -> TokenBucket:
        """A bucket for ``mbps`` megabits (10⁶ bits) per second."""
        return cls(mbps * 1_000_000 / 8)

    def fragment_size(self) -> int:
        """The largest write worth making at this rate: a quarter second of it (at
        least 16 KiB), so a slow link sees data every fraction of a second, not one
        large write after a long silence that the peer might time out on."""
        return max(_MIN_FRAGMENT, int(self.rate * _BURST_SECONDS))

    def reserve(self, n: int) -> float:
        """Reserve ``n`` bytes now; return the seconds to wait before writing them."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            self._tokens -= n
            return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    def take(self, n: int) -> None:
        """Block the calling thread until ``n`` bytes may be written."""
        wait = self.reserve(n)
        if wait > 0:
            self._sleep(wait)

    async def take_async(self, n: int) -> None:
        """Wait (without blocking the loop) until ``n`` bytes may be written."""
        wait = self.reserve(n)
        if wait > 0:
            await asyncio.sleep(wait)


def bucket_for(max_mbps: float | None) -> TokenBucket | None:
    """The bucket for a destination's ``max_mbps``; None when unlimited (None or 0)."""
    if not max_mbps:
        return None
    return TokenBucket.from_mbps(max_mbps)
