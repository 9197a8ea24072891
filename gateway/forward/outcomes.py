"""Recording a batch's delivery outcomes: one ledger transaction per group.

The forwarder decides what each outcome means (:class:`Decided`); :func:`write_group`
records a group of them with :func:`~gateway.spool.deliveries.record_outcomes` (one
commit, one ``fdatasync``) and only then tells the rest of the service: a
``CaptureDelivered`` or ``CaptureQuarantined`` event per capture, a DEBUG line per
capture (an ERROR per refusal). The forwarder logs one INFO summary per batch from
the :class:`Tally`, not one line per instance.
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass

from pydicom.uid import UID

from gateway.core.events import CaptureDelivered, CaptureQuarantined, EventSink
from gateway.forward.cstore import StoreOutcome
from gateway.spool.deliveries import DeliveryOutcome, Refused, Sent, record_outcomes
from gateway.spool.ledger import Ledger

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=64)
def _class_name(sop_class: str) -> str:
    """The standard's name of a SOP class for an event ("" for none); a handful of
    classes, so named once each rather than once per instance."""
    return UID(sop_class).name if sop_class else ""


@dataclass(frozen=True, slots=True)
class Decided:
    """One outcome and what the ledger is to record for it."""

    record: DeliveryOutcome
    outcome: StoreOutcome
    sop_class: str
    """The SOP class actually sent (for the events)."""


@dataclass(slots=True)
class Tally:
    """What one batch did so far, for its summary line."""

    sent: int = 0
    retry: int = 0
    refused: int = 0
    waiting: int = 0
    """Deliveries to the destination still PENDING after the latest group."""
    tracked: bool = False
    """Whether the batch's first attempted outcome told the breaker (reachability)."""
    reached: bool = False
    """Whether any attempted outcome reached the destination."""


async def write_group(
    ledger: Ledger, bus: EventSink, destination: str, group: list[Decided], tally: Tally
) -> None:
    """Record ``group`` in one ledger transaction, then publish its events, log each
    capture at DEBUG (a refusal at ERROR) and count it in ``tally``."""
    tally.waiting = await ledger.call(record_outcomes, destination, [d.record for d in group])
    for decided in group:
        record, outcome = decided.record, decided.outcome
        sop_class = _class_name(decided.sop_class)
        if isinstance(record, Sent):
            tally.sent += 1
            log.debug(
                "spool id %d delivered to %s (%s)", record.spool_id, destination, outcome.detail
            )
            bus.publish(
                CaptureDelivered(
                    spool_id=record.spool_id, destination=destination, sop_class=sop_class
                )
            )
        elif isinstance(record, Refused):
            tally.refused += 1
            bus.publish(
                CaptureQuarantined(
                    spool_id=record.spool_id,
                    stage="refused",
                    destination=destination,
                    sop_class=sop_class,
                )
            )
            log.error(
                "spool id %d quarantined: %s refused it (%s)",
                record.spool_id,
                destination,
                outcome.detail,
            )
        else:
            tally.retry += 1
            log.debug(
                "spool id %d not delivered to %s (%s); next attempt in %.0f s",
                record.spool_id,
                destination,
                outcome.detail,
                max(0.0, record.next_attempt_at - time.time()),
            )


__all__ = ["Decided", "Tally", "write_group"]
