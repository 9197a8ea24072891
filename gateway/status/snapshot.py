"""The gateway's state document: one schema-versioned JSON snapshot for dashboards.

:class:`GatewayState` (built once in :mod:`gateway.service.app`) reads the live parts of the
box — the ledger, the disk, the status board, the forwarders, the event bus — and
``await state.snapshot()`` returns the document below. MQTT publishes it retained on
``<prefix>/<id>/state``; the local page and the metrics read the same object.

Privacy rule: the document holds counts, states, ages and ids the box assigns
(device names, driver ids, destination names, alarm codes). Never patient data,
never a device's capture ids or file names, never free text received from a peer:
a destination's last error is reduced to a code and a fixed phrase, and a device's
``detail`` is shown only in the states where drivers describe the device rather
than the capture (DISCONNECTED, CONNECTING, READY).

The document (``version`` 1); times are ISO 8601 UTC, ages and durations seconds::

    {
      "version": 1,                    # this schema; bumped on incompatible change
      "gateway": "derm-box-01",        # [gateway] id
      "software": "0.1.0",             # DermGate version
      "generated": "2026-11-30T23:10:00.123+00:00",
      "uptime_s": 3600.5,              # since this run started
      "seq": 42,                       # document number, +1 per document made (for any
                                       # reader: MQTT, page, metrics), from 1 each run
      "last_event_seq": 117,           # seq of the newest event (0: none yet)
      "spool": {
        "counts": {"CAPTURED": 0, "WRAPPED": 2, "SENT": 1, "COMMITTED": 40,
                   "PURGED": 10, "QUARANTINED": 0},   # every state, 0 when none
        "undelivered": 2,              # CAPTURED + WRAPPED: not yet stored by every PACS
        "oldest_undelivered_age_s": 12.5,   # null when nothing waits
        "awaiting_commitment": 1,      # deliveries SENT, not yet committed
        "commitment_lag_s": 3.2        # age of the oldest of those; null when none
      },
      "disk": {
        "free_mb": 51234,              # free MiB on the spool's filesystem
        "reserve_mb": 128,             # [spool] reserve_mb
        "full": false                  # below the reserve: captures are refused
      },
      "devices": [
        {"name": "scope", "driver": "serial-dermatoscope", "state": "READY",
         "detail": "DS-100 SN123",     # only in DISCONNECTED/CONNECTING/READY, else ""
         "since": "...", "running": true, "restarts": 0, "hotplug": false}
      ],
      "destinations": [
        {"name": "pacs",
         "reachable": true,            # null: not tried yet in this run
         "circuit_open": false,        # sending paused, probing with C-ECHO
         "pending": 2,                 # deliveries waiting to be sent
         "stuck": 0,                   # captures past stuck_after, still undelivered
         "last_error": null}           # latest failed attempt, null once one succeeds:
                                       # {"code": "unreachable", "message": "..."}
      ],
      "alarms": [
        {"code": "destination_unreachable", "subject": "pacs",
         "message": "destination pacs is not reachable", "since": "..."}
      ]
    }

Alarm codes: ``disk_full`` (subject ""), ``stuck_captures`` (subject: destination),
``destination_unreachable`` (destination), ``driver_quarantined`` (device name),
``commitment_overdue`` (destination: it stores but its commitment reports do not
arrive, see :mod:`gateway.forward.overdue`).
Error codes: see :data:`ERROR_PHRASES`.

Stages may add a section of their own (:attr:`GatewayState.sections`). With
``[mqtt]`` configured the document has::

      "mqtt": {
        "connected": true,             # connected to the broker now
        "reconnects": 0,               # reconnections (counted at CONNACK) this run
        "events_dropped": 0,           # events lost from the full outbox this run
        "events_waiting": 0,           # events in the outbox, not yet acknowledged
        "last_error": null             # or {"code": "not_authorised", "message": "..."}
      }

(on MQTT itself ``connected`` is of course always true; the local page shows it.)
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from gateway.core.events import EventBus
from gateway.devices.contract import DriverState
from gateway.spool.states import CaptureState, DeliveryState

if TYPE_CHECKING:
    from gateway.devices.status import StatusBoard
    from gateway.forward.forwarder import Forwarder
    from gateway.spool.ledger import Ledger
    from gateway.spool.space import SpaceGuard

STATE_VERSION = 1

ERROR_PHRASES: dict[str, str] = {
    "unreachable": "cannot open a connection to the PACS (network, address or port)",
    "association_rejected": "the PACS rejected the association (AE titles or its settings)",
    "no_response": "the PACS did not answer in time",
    "aborted": "the PACS dropped the connection",
    "store_failed": "the PACS answered a store request with a failure status",
    "not_accepted": "the PACS does not accept this kind of object",
    "local_file": "the gateway could not read its own DICOM file",
    "commitment_failed": "the PACS could not confirm that it keeps an object",
    "other": "delivery failed",
}

_SHOWN_DETAIL = {DriverState.DISCONNECTED, DriverState.CONNECTING, DriverState.READY}


def classify_error(detail: str | None) -> dict[str, str] | None:
    """A peer error reduced to ``{"code", "message"}`` with a fixed phrase.

    The free text (which may quote what the peer said) is not passed on; only a
    C-STORE status number is kept in the phrase.
    """
    if not detail:
        return None
    text = detail.lower()
    if text.startswith("association rejected"):
        code = "association_rejected"
    elif text.startswith("could not open an association"):
        code = "unreachable"
    elif text.startswith(("no c-store response", "no c-echo response", "no n-action")):
        code = "no_response"
    elif "aborted" in text or "association closed" in text:
        code = "aborted"
    elif text.startswith(("c-store status", "c-echo status", "n-action status")):
        code = "store_failed"
    elif "accepts no presentation context" in text or "does not offer" in text:
        code = "not_accepted"
    elif text.startswith("cannot read dicom file"):
        code = "local_file"
    elif text.startswith("commitment failed"):
        code = "commitment_failed"
    else:
        code = "other"
    message = ERROR_PHRASES[code]
    if code == "store_failed":
        status = detail.rsplit(" ", 1)[-1]
        if status.startswith("0x") and len(status) == 6:
            message = f"{message} ({status})"
    return {"code": code, "message": message}


def _age(stamp: str | None, now: datetime) -> float | None:
    if not stamp:
        return None
    try:
        then = datetime.fromisoformat(stamp)
    except ValueError:
        return None
    if then.tzinfo is None:
        then = then.replace(tzinfo=UTC)
    return round(max(0.0, (now - then).total_seconds()), 1)


@dataclass(frozen=True, slots=True)
class SpoolFigures:
    """What the ledger says, in one read."""

    counts: dict[str, int]
    oldest_undelivered: str | None
    awaiting_commitment: int
    oldest_sent_epoch: float | None
    pending: dict[str, int]


def spool_figures(conn: sqlite3.Connection) -> SpoolFigures:
    """Counts and oldest times for the snapshot (blocking; on the ledger thread)."""
    counts = {str(state): 0 for state in CaptureState}
    for state, n in conn.execute("SELECT state, COUNT(*) FROM captures GROUP BY state"):
        counts[str(state)] = int(n)
    row = conn.execute(
        "SELECT MIN(received_at) FROM captures WHERE state IN (?, ?)",
        (CaptureState.CAPTURED, CaptureState.WRAPPED),
    ).fetchone()
    oldest = None if row is None or row[0] is None else str(row[0])
    row = conn.execute(
        "SELECT COUNT(*), MIN(d.sent_epoch) FROM deliveries d JOIN captures c "
        "ON c.id = d.capture_id WHERE d.state = ? AND c.state != ?",
        (DeliveryState.SENT, CaptureState.QUARANTINED),
    ).fetchone()
    awaiting = int(row[0]) if row else 0
    oldest_sent = None if row is None or row[1] is None else float(row[1])
    pending = {
        str(dest): int(n)
        for dest, n in conn.execute(
            "SELECT d.destination, COUNT(*) FROM deliveries d JOIN captures c "
            "ON c.id = d.capture_id WHERE d.state = ? AND c.state != ? GROUP BY d.destination",
            (DeliveryState.PENDING, CaptureState.QUARANTINED),
        )
    }
    return SpoolFigures(counts, oldest, awaiting, oldest_sent, pending)


class GatewayState:
    """The live sources of the state document; ``await snapshot()`` reads them all."""

    def __init__(
        self,
        *,
        gateway_id: str,
        software: str,
        ledger: Ledger,
        space: SpaceGuard,
        board: StatusBoard,
        forwarders: Sequence[Forwarder],
        bus: EventBus,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.gateway_id = gateway_id
        self.software = software
        self.ledger = ledger
        self.space = space
        self.board = board
        self.forwarders = tuple(forwarders)
        self.bus = bus
        self._clock = clock
        self._started = clock()
        self.seq = 0
        self._lock = asyncio.Lock()
        self.sections: dict[str, Callable[[], dict[str, Any]]] = {}
        """Extra top-level sections: name → function returning it (e.g. "mqtt")."""

    def uptime(self) -> float:
        """Seconds since this run started."""
        return self._clock() - self._started

    async def snapshot(self) -> dict[str, Any]:
        """The current state document (see the module docstring)."""
        async with self._lock:
            figures = await self.ledger.call(spool_figures)
            free = await asyncio.to_thread(self.space.free_bytes)
            self.seq += 1
            seq = self.seq
        now = datetime.now(UTC)
        reserve = self.space.reserve_bytes
        devices = []
        for name in self.board.names():
            d = self.board.get(name)
            devices.append(
                {
                    "name": d.name,
                    "driver": d.driver,
                    "state": str(d.state),
                    "detail": d.detail if d.state in _SHOWN_DETAIL else "",
                    "since": d.since,
                    "running": d.running,
                    "restarts": d.restarts,
                    "hotplug": d.hotplug,
                }
            )
        destinations = [
            {
                "name": f.name,
                "reachable": f.reachable,
                "circuit_open": f.circuit_open,
                "pending": figures.pending.get(f.name, 0),
                "stuck": f.stuck,
                "last_error": classify_error(f.last_error),
            }
            for f in self.forwarders
        ]
        alarms = [
            {"code": a.code, "subject": a.subject, "message": a.message, "since": a.since}
            for a in sorted(self.bus.alarms.values(), key=lambda a: a.since)
        ]
        counts = figures.counts
        lag = (
            None
            if figures.oldest_sent_epoch is None
            else round(max(0.0, time.time() - figures.oldest_sent_epoch), 1)
        )
        document: dict[str, Any] = {
            "version": STATE_VERSION,
            "gateway": self.gateway_id,
            "software": self.software,
            "generated": now.isoformat(timespec="milliseconds"),
            "uptime_s": round(self.uptime(), 1),
            "seq": seq,
            "last_event_seq": self.bus.seq,
            "spool": {
                "counts": counts,
                "undelivered": counts[CaptureState.CAPTURED] + counts[CaptureState.WRAPPED],
                "oldest_undelivered_age_s": _age(figures.oldest_undelivered, now),
                "awaiting_commitment": figures.awaiting_commitment,
                "commitment_lag_s": lag,
            },
            "disk": {
                "free_mb": free // (1024 * 1024),
                "reserve_mb": reserve // (1024 * 1024),
                "full": self.space.alarm or free < reserve,
            },
            "devices": devices,
            "destinations": destinations,
            "alarms": alarms,
        }
        for name, section in self.sections.items():
            document[name] = section()
        return document


def stable_part(document: dict[str, Any]) -> dict[str, Any]:
    """The document without what changes by itself every second (time, ages, free
    space, sequence numbers): two documents with equal stable parts say the same."""
    spool = dict(document.get("spool", {}))
    for key in ("oldest_undelivered_age_s", "commitment_lag_s"):
        spool[key] = spool.get(key) is not None
    disk = dict(document.get("disk", {}))
    disk.pop("free_mb", None)
    skip = {"generated", "uptime_s", "seq", "last_event_seq", "spool", "disk", "mqtt"}
    return {
        **{k: v for k, v in document.items() if k not in skip},
        "spool": spool,
        "disk": disk,
    }
