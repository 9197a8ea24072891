"""Status: what the box tells the outside — the state snapshot, MQTT, the page and
/metrics. It reads the ledger and the event bus; no stage below imports it.
"""

__all__ = [
    "ha_discovery",
    "mqtt",
    "pi_health",
    "snapshot",
    "web",
]
