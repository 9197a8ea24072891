"""Running totals for ``/metrics``, read from the ledger (blocking; a read-only connection).

Prometheus counters must never go down, and ours must not start again at zero on every
restart when the ledger knows better. So each total here is a count of ledger rows
that, once counted, stay counted:

* captures received, by device class: a ``captures`` row is never deleted (purge marks
  it PURGED; a moved held capture keeps its row);
* deliveries a destination accepted (``sent_at`` set: never cleared; a removed
  destination's open rows are deleted, but a removed destination is not reported). One
  rare exception: a delivery stored, then due again (its commitment failed), then
  withdrawn by its routes (the capture flagged sensitive) is deleted, and the total drops
  by one, which Prometheus's ``rate()`` reads as a counter reset;
* deliveries confirmed, with how long each took from the capture's arrival
  (``received_at``) to its confirmation (``committed_at``), as histogram buckets, for the
  destinations that confirm (Storage Commitment or a DICOMweb read-back). A confirmed
  delivery is never reset nor deleted. A destination without confirmation has no
  latency: its deliveries count as delivered after a retention period, which is a
  setting, not a measurement.

Only state, class and destination columns and two timestamps are read: never patient
data, file names or device capture ids. An interval below zero (the clock was set back
between arrival and confirmation) is counted as 0 s. The histograms are kept between
scrapes (:class:`LatencyTally`): each scrape reads only what was confirmed since.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.spool.states import DeliveryState

__all__ = [
    "LATENCY_BUCKETS",
    "DeliveryHistory",
    "LatencyHistogram",
    "LatencyTally",
    "delivery_history",
]

#: Upper bounds (seconds) of the delivery-latency buckets: a PACS that confirms at
#: once, within minutes, within a working day, or days later.
LATENCY_BUCKETS: tuple[float, ...] = (
    5.0,
    15.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1800.0,
    3600.0,
    7200.0,
    14400.0,
    28800.0,
    86400.0,
    172800.0,
    604800.0,
)


@dataclass(frozen=True, slots=True)
class LatencyHistogram:
    """One destination's confirmed deliveries: cumulative counts per bucket bound
    (as :data:`LATENCY_BUCKETS`), the total and the sum of the latencies in seconds."""

    buckets: tuple[int, ...]
    count: int
    total_seconds: float


@dataclass(frozen=True, slots=True)
class DeliveryHistory:
    """The ledger's running totals (see the module's docstring for why each only grows)."""

    received_by_class: dict[str, int]
    sent: dict[str, int]
    latency: dict[str, LatencyHistogram]


def _latency_sql() -> str:
    # Rounded to the millisecond the stamps have (julianday's doubles are off by some µs).
    seconds = "ROUND((julianday(d.committed_at) - julianday(c.received_at)) * 86400.0, 3)"
    bounds = ", ".join(f"SUM(s <= {b!r})" for b in LATENCY_BUCKETS)
    return (
        f"SELECT COUNT(*), TOTAL(MAX(s, 0.0)), MAX(stamp), {bounds} FROM ("
        f"SELECT {seconds} AS s, d.committed_at AS stamp FROM deliveries d "
        "JOIN captures c ON c.id = d.capture_id WHERE d.destination = ? AND d.state = ? "
        "AND d.committed_at IS NOT NULL AND d.committed_at > ?) WHERE s IS NOT NULL"
    )


_LATENCY_SQL = _latency_sql()
_EMPTY = LatencyHistogram((0,) * len(LATENCY_BUCKETS), 0, 0.0)


def _committed(conn: sqlite3.Connection, destination: str) -> int:
    row = conn.execute(
        "SELECT COUNT(*) FROM deliveries WHERE destination = ? AND state = ? "
        "AND committed_at IS NOT NULL",
        (destination, DeliveryState.COMMITTED),
    ).fetchone()
    return int(row[0])


class LatencyTally:
    """The latency histograms, kept between scrapes so that a scrape reads only the
    deliveries confirmed since the last one (a box with years of captures would
    otherwise compute every interval again each time).

    A confirmed delivery never changes, so adding the ones stamped after the newest
    seen is exact, as long as the count agrees: when the ledger holds more confirmed
    deliveries than were added (two confirmations in one millisecond, the clock set
    back, a restored ledger), everything is read again.
    """

    def __init__(self) -> None:
        self._seen: dict[str, tuple[LatencyHistogram, str]] = {}

    def read(self, conn: sqlite3.Connection, destination: str) -> LatencyHistogram:
        """The histogram of ``destination`` now (blocking)."""
        known, mark = self._seen.get(destination, (_EMPTY, ""))
        found = conn.execute(_LATENCY_SQL, (destination, DeliveryState.COMMITTED, mark)).fetchone()
        added = LatencyHistogram(
            tuple(int(n or 0) for n in found[3:]), int(found[0]), float(found[1])
        )
        total = known.count + added.count
        if total != _committed(conn, destination) and mark:
            self._seen.pop(destination)
            return self.read(conn, destination)
        merged = LatencyHistogram(
            tuple(a + b for a, b in zip(known.buckets, added.buckets, strict=True)),
            total,
            known.total_seconds + added.total_seconds,
        )
        self._seen[destination] = (merged, str(found[2]) if found[2] is not None else mark)
        return merged


def delivery_history(
    conn: sqlite3.Connection,
    destinations: Sequence[tuple[str, bool]],
    tally: LatencyTally | None = None,
) -> DeliveryHistory:
    """The totals for the configured ``destinations`` (name, confirms deliveries);
    ``tally`` keeps the latency histograms between calls (None: read them whole)."""
    tally = LatencyTally() if tally is None else tally
    received = {
        str(cls or "unknown"): int(n)
        for cls, n in conn.execute(
            "SELECT json_extract(device_json, '$.device_class'), COUNT(*) FROM captures GROUP BY 1"
        )
    }
    sent: dict[str, int] = {}
    latency: dict[str, LatencyHistogram] = {}
    for name, confirms in destinations:
        row = conn.execute(
            "SELECT COUNT(*) FROM deliveries WHERE destination = ? AND sent_at IS NOT NULL",
            (name,),
        ).fetchone()
        sent[name] = int(row[0])
        if confirms:
            latency[name] = tally.read(conn, name)
    return DeliveryHistory(received, sent, latency)
