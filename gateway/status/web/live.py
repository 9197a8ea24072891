"""The live parts of the gateway state the page shows: devices, destinations, alarms.

Read straight from the :class:`~gateway.status.snapshot.GatewayState`'s sources
(status board, forwarders, event bus) instead of calling its ``snapshot()``: that
numbers each document (``seq``) for MQTT dashboards, and a page polling every few
seconds must not make those numbers jump. The same privacy rules as the state
document apply: a device's ``detail`` only in states where drivers describe the
device (not the capture), a destination's last error only as a code and a fixed
phrase (:meth:`~gateway.core.errors.DeliveryError.shown`).
"""

from __future__ import annotations

from typing import Any

from gateway.devices.contract import DriverState
from gateway.status.snapshot import GatewayState

SHOWN_DETAIL = {DriverState.DISCONNECTED, DriverState.CONNECTING, DriverState.READY}


async def live_view(state: GatewayState) -> dict[str, Any]:
    """``{"devices": [...], "destinations": [...], "alarms": [...], "worklist": {...},
    "health": {...}}`` as in the document."""
    devices = []
    for name in state.board.names():
        d = state.board.get(name)
        devices.append(
            {
                "name": d.name,
                "driver": d.driver,
                "state": str(d.state),
                "detail": d.detail if d.state in SHOWN_DETAIL else "",
                "restarts": d.restarts,
            }
        )
    destinations = [
        {
            "name": f.name,
            "reachable": f.reachable,
            "last_error": None if f.last_error is None else f.last_error.shown(),
            **f.gate.status(),  # the page knows what is pending
        }
        for f in state.forwarders
    ]
    alarms = [
        {"code": a.code, "subject": a.subject, "message": a.message, "since": a.since}
        for a in sorted(state.bus.alarms.values(), key=lambda a: a.since)
    ]
    worklist = state.sections.get("worklist")  # counts and age only
    health = state.sections.get("health")  # the box's temperature, supply, storage
    return {
        "devices": devices,
        "destinations": destinations,
        "alarms": alarms,
        "worklist": {"configured": False} if worklist is None else worklist(),
        "health": {} if health is None else health(),
    }
