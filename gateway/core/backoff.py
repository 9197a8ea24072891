"""Retry timing: jittered, capped exponential backoff."""

from __future__ import annotations

import random


def backoff_delay(
    failures: int, *, initial: float, cap: float, rng: random.Random | None = None
) -> float:
    """Seconds to wait after the ``failures``-th consecutive failure (1-based).

    The base doubles per failure from ``initial`` up to ``cap``; the result is drawn
    uniformly from [base/2, base] so that many boxes (or many instances) that failed
    together do not retry in lockstep.
    """
    rng = rng or random.Random()
    exponent = min(max(failures - 1, 0), 62)
    base = min(cap, initial * (2.0**exponent))
    return rng.uniform(base / 2, base)


class Backoff:
    """Consecutive-failure counter for reconnect loops (devices, peers)."""

    def __init__(self, *, initial: float, cap: float) -> None:
        self.initial = initial
        self.cap = cap
        self.failures = 0

    def next_delay(self) -> float:
        """Record one more failure and return how long to wait."""
        self.failures += 1
        return backoff_delay(self.failures, initial=self.initial, cap=self.cap)

    def reset(self) -> None:
        """The peer acknowledged us: start again from ``initial``."""
        self.failures = 0
