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
      "started": "2026-11-30T22:10:00+00:00",   # when this run started (UTC)
      "seq": 42,                       # document number, +1 per document made (for any
                                       # reader: MQTT, page, metrics), from 1 each run
      "last_event_seq": 117,           # seq of the newest event (0: none yet)
      "spool": {
        "counts": {"HELD": 0, "CAPTURED": 0, "WRAPPED": 2, "SENT": 1, "COMMITTED": 40,
                   "PURGED": 10, "QUARANTINED": 0},   # every state, 0 when none
        "held": 0,                     # captures waiting for a patient (not sent)
        "quarantined": 0,              # set aside now: QUARANTINED, not resolved by a
                                       # technician (counts.QUARANTINED keeps those too)
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
         "since": "...", "running": true, "restarts": 0, "hotplug": false,
         "session": 12}                # id of its open patient session, null: none
      ],
      "destinations": [
        {"name": "pacs",
         "reachable": true,            # null: not tried yet in this run
         "circuit_open": false,        # sending paused, probing with C-ECHO
         "pending": 2,                 # deliveries waiting to be sent
         "stuck": 0,                   # captures past stuck_after, still undelivered
         "last_error": null,           # latest failed attempt, null once one succeeds:
                                       # {"code": "unreachable", "message": "..."}
         "removed": false,             # true: no longer in the configuration, yet
                                       # captures still wait for it ("destination
                                       # removed"); then "pending" and
                                       # "awaiting_commitment" count them
         "send_windows": ["19:00-07:00"],   # local times sending is allowed; []: always
         "window_open": false,         # inside a window now (always true without windows)
         "next_window": "...",         # when the next window opens; null while open
         "waiting_for_window": true,   # deliveries wait for the window (not a failure)
         "send_now": false}            # a technician's "send now" is in force
      ],
      "alarms": [
        {"code": "destination_unreachable", "subject": "pacs",
         "message": "destination pacs is not reachable", "since": "..."}
      ],
      "worklist": {                    # {"configured": false} without [worklist]
        "configured": true,
        "items": 12,                   # items in the cache (counts only, never names/IDs)
        "age_s": 42.0,                 # since the last successful refresh; null: never
        "stale": false,                # no success within [worklist] stale_after
        "truncated": false,            # the last answer was cut at max_items
        "last_error": null             # why the last refresh failed: "unreachable",
                                       # "refused association", "C-FIND failed", ...
      }
    }

Alarm codes: ``disk_full`` (subject ""), ``stuck_captures`` (subject: destination),
``destination_unreachable`` (destination), ``driver_quarantined`` (device name),
``commitment_overdue`` (destination: it stores but its commitment reports do not
arrive, see :mod:`gateway.forward.overdue`).
Error codes: see :data:`gateway.core.errors.ERROR_PHRASES` (set where the delivery failed).

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
The ``health`` section (the box's temperature, supply, storage wear) is described in
:mod:`gateway.status.pi_health`; alarm code ``under_voltage`` (subject "") comes from it.
On MQTT the document also has ``"verdict": {"colour": "green"|"amber"|"red",
"headline": "...", "reasons": [...]}``: the page's "is it delivering?" verdict.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from gateway.core.events import EventBus
from gateway.devices.contract import DriverState
from gateway.spool.figures import spool_figures
from gateway.spool.routing import removed_destinations
from gateway.spool.sessions import open_session_ids
from gateway.spool.states import CaptureState

if TYPE_CHECKING:
    from gateway.devices.status import StatusBoard
    from gateway.forward.forwarder import Forwarder
    from gateway.spool.ledger import Ledger
    from gateway.spool.space import SpaceGuard

STATE_VERSION = 1

_SHOWN_DETAIL = {DriverState.DISCONNECTED, DriverState.CONNECTING, DriverState.READY}


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
        configured: Sequence[str] | None = None,
    ) -> None:
        self.gateway_id = gateway_id
        self.software = software
        self.ledger = ledger
        self.space = space
        self.board = board
        self.forwarders = tuple(forwarders)
        self.configured = (
            tuple(f.name for f in forwarders) if configured is None else tuple(configured)
        )
        """The configured destination names (others with open deliveries were removed)."""
        self.bus = bus
        self._clock = clock
        self._started = clock()
        self.started = datetime.now(UTC).isoformat(timespec="seconds")
        """When this run started (wall clock, ISO 8601 UTC)."""
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
            removed = await self.ledger.call(removed_destinations, self.configured)
            sessions = await self.ledger.call(open_session_ids)
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
                    "session": sessions.get(d.name),
                }
            )
        destinations = [
            {
                "name": f.name,
                "reachable": f.reachable,
                "circuit_open": f.circuit_open,
                "pending": figures.pending.get(f.name, 0),
                "stuck": f.stuck,
                "last_error": None if f.last_error is None else f.last_error.shown(),
                "removed": False,
                **f.gate.status(figures.pending.get(f.name, 0)),
            }
            for f in self.forwarders
        ]
        destinations += [
            {
                "name": name,
                "reachable": None,
                "circuit_open": False,
                "pending": states.get("PENDING", 0),
                "awaiting_commitment": states.get("SENT", 0),
                "stuck": 0,
                "last_error": None,
                "removed": True,
                "send_windows": [],
                "window_open": True,
                "next_window": None,
                "waiting_for_window": False,
                "send_now": False,
            }
            for name, states in removed.items()
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
            "started": self.started,
            "seq": seq,
            "last_event_seq": self.bus.seq,
            "spool": {
                "counts": counts,
                "held": counts[CaptureState.HELD],
                "quarantined": figures.quarantined_open,
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
        document["worklist"] = {"configured": False}  # replaced by the worklist's section
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
    worklist = dict(document.get("worklist", {}))
    worklist["age_s"] = worklist.get("age_s") is not None
    skip = {"generated", "uptime_s", "seq", "last_event_seq", "spool", "disk", "mqtt", "worklist"}
    stable = {
        **{k: v for k, v in document.items() if k not in skip},
        "spool": spool,
        "disk": disk,
        "worklist": worklist,
    }
    if isinstance(document.get("health"), dict):  # the temperature drifts by itself
        stable["health"] = {
            k: v for k, v in document["health"].items() if k not in ("cpu_temp_c", "read_at")
        }
    return stable
