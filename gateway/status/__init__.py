"""Status: what the box tells the outside — the state snapshot, MQTT, the page and
/metrics, and the box's checks (``checks``: the same code for ``dermgate check`` and
the page's "why isn't it sending?"). It reads the ledger and the event bus; no stage
below imports it.
"""

__all__ = [
    "checks",
    "ha_discovery",
    "mqtt",
    "pi_health",
    "snapshot",
    "web",
]
