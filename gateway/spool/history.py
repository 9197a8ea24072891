"""Running totals for ``/metrics``, read from the ledger (blocking; a read-only connection).

Prometheus counters must never go down, and ours must not start again at zero on every
restart when the ledger knows better. So each total here is a count of ledger rows
that, once counted, stay counted:

* captures received, by device class: a ``captures`` row is never deleted (purge marks
  it PURGED; a moved held capture keeps its row);
* deliveries a destination accepted (``sent_at`` set: never cleared; only a removed
  destination's open rows are deleted, and a removed destination is not reported);
* deliveries confirmed, with how long each took from the capture's arrival
  (``received_at``) to its confirmation (``committed_at``), as histogram buckets, for the
  destinations that confirm (Storage Commitment or a DICOMweb read-back). A confirmed
  delivery is never reset nor deleted. A destination without confirmation has no
  latency: its deliveries count as delivered after a retention period, which is a
  setting, not a measurement.

Only state, class and destination columns and two timestamps are read: never patient
data, file names or device capture ids. An interval below zero (the clock was set back
between arrival and confirmation) is counted as 0 s.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["LATENCY_BUCKETS", "DeliveryHistory", "LatencyHistogram", "delivery_history"]

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
    seconds = "(julianday(d.committed_at) - julianday(c.received_at)) * 86400.0"
    bounds = ", ".join(f"SUM(s <= {b!r})" for b in LATENCY_BUCKETS)
    return (
        f"SELECT destination, COUNT(*), TOTAL(MAX(s, 0.0)), {bounds} FROM ("
        f"SELECT d.destination AS destination, {seconds} AS s FROM deliveries d "
        "JOIN captures c ON c.id = d.capture_id WHERE d.committed_at IS NOT NULL "
        "AND d.destination = ?) WHERE s IS NOT NULL GROUP BY destination"
    )


_LATENCY_SQL = _latency_sql()


def delivery_history(
    conn: sqlite3.Connection, destinations: Sequence[tuple[str, bool]]
) -> DeliveryHistory:
    """The totals for the configured ``destinations`` (name, confirms deliveries)."""
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
        if not confirms:
            continue
        found = conn.execute(_LATENCY_SQL, (name,)).fetchone()
        if found is None:
            latency[name] = LatencyHistogram((0,) * len(LATENCY_BUCKETS), 0, 0.0)
        else:
            latency[name] = LatencyHistogram(
                tuple(int(n or 0) for n in found[3:]), int(found[1]), float(found[2])
            )
    return DeliveryHistory(received, sent, latency)
