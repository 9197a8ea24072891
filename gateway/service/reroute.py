"""Routing the spool again at start-up: the configuration may have changed since the
last run (destinations added or removed, routes changed); says what changed."""

from __future__ import annotations

import collections
import logging
import time

from gateway.core.routing import RoutePlan
from gateway.spool import ledger as db
from gateway.spool.ledger import Ledger
from gateway.spool.routing import REMOVED_NOTE, removed_destinations

__all__ = ["route_again"]

log = logging.getLogger("gateway.service.app")  # the start-up's lines, as before


async def route_again(ledger: Ledger, plan: RoutePlan) -> None:
    """Route the captures still on disk by this configuration (destinations or routes
    may have changed since the last run), and say what changed."""
    changes = await ledger.call(db.reroute, plan, time.time())
    if changes.added:
        added = collections.Counter(name for _, name in changes.added)
        for name, count in sorted(added.items()):
            log.info("%d capture(s) still in the spool are now also routed to %s", count, name)
    if changes.withdrawn:
        log.warning(
            "%d delivery(ies) not sent yet were withdrawn: the routes no longer send them there",
            len(changes.withdrawn),
        )
    if changes.released:
        log.info("%d capture(s) set aside for want of a route now have one", len(changes.released))
    if changes.unrouted:
        log.warning("%d capture(s) set aside: no route sends them anywhere", len(changes.unrouted))
    removed = await ledger.call(removed_destinations, plan.destinations)
    for name, states in removed.items():
        log.warning(
            "destination %s was removed from the configuration: %d capture(s) waiting for it "
            "stay in the spool (shown as %r) until it is configured again or let go of "
            "(dermgate spool forget-destination %s)",
            name,
            sum(states.values()),
            REMOVED_NOTE,
            name,
        )
