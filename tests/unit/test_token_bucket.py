"""The token bucket behind ``max_mbps``: its rate, sharing between threads, fairness."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from gateway.forward.bucket import TokenBucket, bucket_for


class FakeClock:
    """A clock that only moves when someone sleeps on it."""

    def __init__(self) -> None:
        self.now = 0.0
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


def test_megabits_are_bytes_over_eight() -> None:
    assert TokenBucket.from_mbps(8).rate == 1_000_000
    assert bucket_for(0) is None
    assert bucket_for(None) is None
    bucket = bucket_for(2.5)
    assert bucket is not None
    assert bucket.rate == 312_500
    with pytest.raises(ValueError, match="positive"):
        TokenBucket(0)
    # Writes of a quarter second of the rate, at least 16 KiB.
    assert TokenBucket.from_mbps(4).fragment_size() == 125_000
    assert TokenBucket.from_mbps(0.1).fragment_size() == 16 * 1024


def test_the_burst_goes_at_once_then_the_rate_holds() -> None:
    clock = FakeClock()
    bucket = TokenBucket(1000, burst=500, clock=clock, sleep=clock.sleep)
    assert bucket.reserve(500) == 0.0  # the burst
    assert bucket.reserve(1000) == pytest.approx(1.0)
    assert bucket.reserve(250) == pytest.approx(1.25)  # queued behind the first reservation
    clock.now = 10.0  # idle long enough: the bucket refills to its burst, no more
    assert bucket.reserve(500) == 0.0
    assert bucket.reserve(1) > 0


def test_a_chunk_larger_than_the_burst_is_allowed_and_just_waits() -> None:
    clock = FakeClock()
    bucket = TokenBucket(1000, burst=100, clock=clock, sleep=clock.sleep)
    bucket.take(5100)
    assert clock.now == pytest.approx(5.0)


def test_threads_share_the_rate_and_none_starves() -> None:
    """Four threads sending 64 KiB chunks through one 2 MB/s bucket: together they
    take at least (total - burst) / rate, and each gets its share."""
    bucket = TokenBucket(2_000_000, burst=64 * 1024)
    chunk, per_thread = 64 * 1024, 12
    done: dict[int, float] = {}
    start = time.monotonic()

    def send(index: int) -> None:
        for _ in range(per_thread):
            bucket.take(chunk)
        done[index] = time.monotonic() - start

    threads = [threading.Thread(target=send, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    total = 4 * per_thread * chunk
    least = (total - bucket.burst) / bucket.rate
    assert max(done.values()) >= least * 0.99
    # Reservations are served in order: no thread finishes before the others are
    # well on their way (a starved one would end far later than the rest).
    assert min(done.values()) >= least * 0.75


def test_asyncio_senders_share_the_bucket_with_threads() -> None:
    bucket = TokenBucket(1_000_000, burst=50_000)

    async def main() -> float:
        start = time.monotonic()
        thread = asyncio.to_thread(lambda: [bucket.take(50_000) for _ in range(5)])
        tasks = [bucket.take_async(50_000) for _ in range(5)]
        await asyncio.gather(thread, *tasks)
        return time.monotonic() - start

    elapsed = asyncio.run(main())
    assert elapsed >= (10 * 50_000 - 50_000) / 1_000_000 * 0.99
