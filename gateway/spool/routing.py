"""Routes applied in the ledger: which deliveries a capture has, and at which priority.

Blocking functions taking a connection (the ledger thread). The decisions are
:class:`~gateway.core.routing.RoutePlan`'s; here they become delivery rows:

* a capture is routed when it is WRAPPED (:func:`create_deliveries`, in the same
  transaction): one PENDING delivery per destination its routes name, with the
  route's priority. Routes see the capture's device class, driver, device name,
  SOP class and sensitive flag.
* A capture that no route sends anywhere is QUARANTINED with a reason starting
  :data:`NO_ROUTE_REASON`: kept, shown and counted as set aside, never dropped.
* :func:`reroute` routes the captures still on disk again (at start-up, and for
  one capture when a technician flags or unflags it sensitive:
  :func:`~gateway.spool.capture_marks.flag_sensitive`): deliveries to
  destinations now routed are added (a COMMITTED capture goes back to WRAPPED, so
  purge waits for the new destination); PENDING deliveries no route wants any more
  are withdrawn (SENT or COMMITTED ones cannot be: they are reported); a capture
  set aside for want of a route is released once one matches it.
* A destination no longer configured is never touched here: its deliveries stay,
  the capture is not purged, and listings show them as "destination removed",
  until a technician lets go of it (:func:`forget_destination`, ``dermgate spool
  forget-destination``).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field

from gateway.core.routing import CaptureFacts, RoutePlan
from gateway.spool.deliveries import refresh_capture_state
from gateway.spool.schema import transaction, utc_now_text
from gateway.spool.states import CaptureState, DeliveryState

__all__ = [
    "NO_ROUTE_REASON",
    "REMOVED_NOTE",
    "DestinationConfigured",
    "Forgotten",
    "Rerouted",
    "add_missing_deliveries",
    "capture_facts",
    "create_deliveries",
    "forget_destination",
    "removed_destinations",
    "reroute",
    "waiting_for_removed",
]

log = logging.getLogger(__name__)

#: How a capture that no route sends anywhere is set aside (its reason's start).
NO_ROUTE_REASON = "no route sends it anywhere"
#: How a delivery to a destination no longer in the configuration is shown.
REMOVED_NOTE = "destination removed"

_ON_DISK = (CaptureState.WRAPPED, CaptureState.SENT, CaptureState.COMMITTED)


@dataclass(slots=True)
class Rerouted:
    """What :func:`reroute` changed: (spool id, destination) pairs and spool ids."""

    added: list[tuple[int, str]] = field(default_factory=list)
    withdrawn: list[tuple[int, str]] = field(default_factory=list)
    already_sent: list[tuple[int, str]] = field(default_factory=list)
    unrouted: list[int] = field(default_factory=list)
    released: list[int] = field(default_factory=list)


def capture_facts(conn: sqlite3.Connection, spool_id: int) -> CaptureFacts | None:
    """What routes look at for capture ``spool_id`` (None: no such capture)."""
    row = conn.execute(f"SELECT {_FACTS} FROM captures c WHERE c.id = ?", (spool_id,)).fetchone()
    return None if row is None else _facts(row, 0)


def _no_route_reason(facts: CaptureFacts) -> str:
    return (
        f"{NO_ROUTE_REASON}: no [[routes]] entry matches it (device class "
        f"{facts.device_class or 'unknown'}, driver {facts.driver}, device "
        f"{facts.device or 'unnamed'}, SOP class {facts.sop_class_uid or 'unknown'}, "
        f"{'sensitive' if facts.sensitive else 'not sensitive'}); add a route, then restart "
        "or retry it"
    )


def create_deliveries(
    conn: sqlite3.Connection, spool_id: int, plan: RoutePlan | Iterable[str], now: float
) -> dict[str, int]:
    """Give a capture just WRAPPED its routed deliveries (inside the caller's transaction);
    return destination → priority. No route: the capture is set aside (``NO_ROUTE_REASON``);
    no destinations configured at all: it stays WRAPPED, kept in the spool only."""
    plan = RoutePlan.of(plan)
    facts = capture_facts(conn, spool_id)
    if facts is None:
        return {}
    targets = plan.targets(facts)
    conn.executemany(
        "INSERT OR IGNORE INTO deliveries (capture_id, destination, state, next_attempt_at, "
        "priority) VALUES (?, ?, ?, ?, ?)",
        [(spool_id, name, DeliveryState.PENDING, now, p) for name, p in targets.items()],
    )
    if not targets and plan.destinations:
        has_any = conn.execute(
            "SELECT 1 FROM deliveries WHERE capture_id = ? LIMIT 1", (spool_id,)
        ).fetchone()
        if has_any is None:
            conn.execute(
                "UPDATE captures SET state = ?, reason = ?, updated_at = ? WHERE id = ?",
                (CaptureState.QUARANTINED, _no_route_reason(facts), utc_now_text(), spool_id),
            )
            log.warning("spool id %d set aside: no [[routes]] entry sends it anywhere", spool_id)
    return targets


_FACTS = (
    "json_extract(c.device_json, '$.device_class'), c.driver, c.device_name, c.sop_class_uid, "
    "c.sensitive"
)


def _facts(row: sqlite3.Row | tuple[object, ...], at: int) -> CaptureFacts:
    return CaptureFacts(
        device_class=None if row[at] is None else str(row[at]),
        driver=str(row[at + 1]),
        device=None if row[at + 2] is None else str(row[at + 2]),
        sop_class_uid=None if row[at + 3] is None else str(row[at + 3]),
        sensitive=bool(row[at + 4]),
    )


def _on_disk(spool_ids: list[int] | None) -> tuple[str, list[object]]:
    """The WHERE clause (on ``captures c``) of the captures :func:`reroute` looks at."""
    marks = ",".join("?" for _ in _ON_DISK)
    where = (
        f"(c.state IN ({marks}) OR (c.state = ? AND c.reason LIKE ? "
        "AND NOT EXISTS (SELECT 1 FROM deliveries x WHERE x.capture_id = c.id)))"
    )
    args: list[object] = [*_ON_DISK, CaptureState.QUARANTINED, NO_ROUTE_REASON + "%"]
    if spool_ids is not None:
        where += f" AND c.id IN ({','.join('?' for _ in spool_ids)})"
        args.extend(spool_ids)
    return where, args


def _reroute_one(
    conn: sqlite3.Connection,
    spool_id: int,
    state: str,
    facts: CaptureFacts,
    existing: dict[str, tuple[DeliveryState, int]],
    plan: RoutePlan,
    now: float,
    out: Rerouted,
) -> None:
    targets = plan.targets(facts)
    changed = False
    for name, priority in targets.items():
        if name not in existing:
            conn.execute(
                "INSERT INTO deliveries (capture_id, destination, state, next_attempt_at, "
                "priority) VALUES (?, ?, ?, ?, ?)",
                (spool_id, name, DeliveryState.PENDING, now, priority),
            )
            out.added.append((spool_id, name))
            changed = True
        elif existing[name][0] is DeliveryState.PENDING and existing[name][1] != priority:
            conn.execute(
                "UPDATE deliveries SET priority = ? WHERE capture_id = ? AND destination = ?",
                (priority, spool_id, name),
            )
    left = len(existing)
    for name, (delivery, _) in existing.items():
        if name in targets or name not in plan.destinations:
            continue  # wanted, or a removed destination (kept, shown as removed)
        if delivery is DeliveryState.PENDING:
            conn.execute(
                "DELETE FROM deliveries WHERE capture_id = ? AND destination = ? AND state = ?",
                (spool_id, name, DeliveryState.PENDING),
            )
            out.withdrawn.append((spool_id, name))
            changed = True
            left -= 1
        elif delivery in (DeliveryState.SENT, DeliveryState.COMMITTED):
            out.already_sent.append((spool_id, name))
    left += len(targets.keys() - existing.keys())
    unrouted = not left and bool(plan.destinations) and state != CaptureState.QUARANTINED
    if not changed and not unrouted:
        return
    stamp = utc_now_text()
    if state == CaptureState.QUARANTINED:  # set aside for want of a route, now routed
        conn.execute(
            "UPDATE captures SET state = ?, reason = NULL, updated_at = ? WHERE id = ?",
            (CaptureState.WRAPPED, stamp, spool_id),
        )
        out.released.append(spool_id)
    elif unrouted:
        conn.execute(
            "UPDATE captures SET state = ?, reason = ?, updated_at = ? WHERE id = ?",
            (CaptureState.QUARANTINED, _no_route_reason(facts), stamp, spool_id),
        )
        out.unrouted.append(spool_id)
        return
    refresh_capture_state(conn, spool_id, stamp)


def reroute(
    conn: sqlite3.Connection,
    plan: RoutePlan | Iterable[str],
    now: float,
    spool_ids: list[int] | None = None,
) -> Rerouted:
    """Route the captures still on disk again (all, or those of ``spool_ids``), by the
    rules of this module's docstring, in one transaction."""
    out = Rerouted()
    with transaction(conn):
        _reroute_in(conn, RoutePlan.of(plan), now, spool_ids, out)
    return out


def _reroute_in(
    conn: sqlite3.Connection,
    plan: RoutePlan,
    now: float,
    spool_ids: list[int] | None,
    out: Rerouted,
) -> None:
    """:func:`reroute` inside the caller's transaction."""
    where, args = _on_disk(spool_ids)
    # Two reads for the lot (a spool of tens of thousands is routed at every start),
    # then writes only where something changes.
    existing: dict[int, dict[str, tuple[DeliveryState, int]]] = {}
    for spool_id, name, state, priority in conn.execute(
        "SELECT d.capture_id, d.destination, d.state, d.priority FROM deliveries d "
        f"JOIN captures c ON c.id = d.capture_id WHERE {where}",
        args,
    ):
        existing.setdefault(int(spool_id), {})[str(name)] = (DeliveryState(state), int(priority))
    rows = conn.execute(
        f"SELECT c.id, c.state, {_FACTS} FROM captures c WHERE {where} ORDER BY c.id", args
    ).fetchall()
    for row in rows:
        spool_id = int(row[0])
        found = existing.get(spool_id, {})
        _reroute_one(conn, spool_id, str(row[1]), _facts(row, 2), found, plan, now, out)


class DestinationConfigured(Exception):
    """The destination to forget is still in the configuration."""


@dataclass(frozen=True, slots=True)
class Forgotten:
    """What :func:`forget_destination` did: the deliveries it dropped (by state), the
    captures they were of, and what routing those again changed."""

    dropped: dict[str, int]
    spool_ids: list[int]
    rerouted: Rerouted


def forget_destination(
    conn: sqlite3.Connection, name: str, plan: RoutePlan | Iterable[str], now: float
) -> Forgotten:
    """A technician lets go of a removed destination: its open deliveries (PENDING, or
    SENT and never confirmed) are dropped, in one transaction, and their captures are
    routed again by ``plan`` (one confirmed everywhere else becomes COMMITTED, and may be
    purged; one that no route sends anywhere is set aside). Confirmed (COMMITTED)
    deliveries stay as the record of what it received. Raises
    :class:`DestinationConfigured` if ``plan`` still has ``name``."""
    plan = RoutePlan.of(plan)
    if name in plan.destinations:
        raise DestinationConfigured(
            f"destination {name} is configured: remove it from [[destinations]] first"
        )
    out = Rerouted()
    with transaction(conn):
        open_states = (DeliveryState.PENDING, DeliveryState.SENT)
        rows = conn.execute(
            "SELECT capture_id, state FROM deliveries WHERE destination = ? AND state IN (?, ?) "
            "ORDER BY capture_id",
            (name, *open_states),
        ).fetchall()
        dropped: dict[str, int] = {}
        for _, state in rows:
            dropped[str(state)] = dropped.get(str(state), 0) + 1
        spool_ids = sorted({int(r[0]) for r in rows})
        conn.execute(
            "DELETE FROM deliveries WHERE destination = ? AND state IN (?, ?)", (name, *open_states)
        )
        stamp = utc_now_text()
        for spool_id in spool_ids:
            refresh_capture_state(conn, spool_id, stamp)
        if spool_ids:
            _reroute_in(conn, plan, now, spool_ids, out)
    return Forgotten(dropped, spool_ids, out)


def add_missing_deliveries(
    conn: sqlite3.Connection, plan: RoutePlan | Iterable[str], now: float
) -> int:
    """Give the captures still on disk a delivery for destinations (or routes) added since;
    return how many were added (:func:`reroute`)."""
    return len(reroute(conn, plan, now).added)


def removed_destinations(
    conn: sqlite3.Connection, configured: Iterable[str]
) -> dict[str, dict[str, int]]:
    """Destinations with open deliveries (PENDING or SENT, not yet confirmed) that are no
    longer configured: name → delivery state → count."""
    names = list(configured)
    gone = f"destination NOT IN ({','.join('?' for _ in names)})" if names else "1"
    removed: dict[str, dict[str, int]] = {}
    for name, state, count in conn.execute(
        f"SELECT destination, state, COUNT(*) FROM deliveries WHERE {gone} "
        "AND state IN (?, ?) GROUP BY destination, state ORDER BY destination",
        (*names, DeliveryState.PENDING, DeliveryState.SENT),
    ):
        removed.setdefault(str(name), {})[str(state)] = int(count)
    return removed


def waiting_for_removed(
    conn: sqlite3.Connection, configured: Iterable[str]
) -> dict[int, list[str]]:
    """Spool id → the destinations no longer configured that it still waits for (an open
    delivery: PENDING, or SENT and not confirmed)."""
    names = list(configured)
    gone = f"destination NOT IN ({','.join('?' for _ in names)})" if names else "1"
    waiting: dict[int, list[str]] = {}
    for spool_id, name in conn.execute(
        f"SELECT capture_id, destination FROM deliveries WHERE {gone} AND state IN (?, ?) "
        "ORDER BY capture_id, destination",
        (*names, DeliveryState.PENDING, DeliveryState.SENT),
    ):
        waiting.setdefault(int(spool_id), []).append(str(name))
    return waiting
