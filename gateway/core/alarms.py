"""Alarm codes: the conditions an operator must act on (MQTT, the page, metrics).

A stage raises an alarm by code and subject through the event bus
(:mod:`gateway.core.events`); the codes are a contract (README "Alarms").
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "COMMITMENT_OVERDUE",
    "DESTINATION_UNREACHABLE",
    "DISK_FULL",
    "DRIVER_QUARANTINED",
    "STUCK_CAPTURES",
    "UNDER_VOLTAGE",
]

DISK_FULL: Final = "disk_full"
STUCK_CAPTURES: Final = "stuck_captures"
DESTINATION_UNREACHABLE: Final = "destination_unreachable"
DRIVER_QUARANTINED: Final = "driver_quarantined"
COMMITMENT_OVERDUE: Final = "commitment_overdue"
UNDER_VOLTAGE: Final = "under_voltage"
"""The box's power supply is too weak now (a Raspberry Pi's firmware says so)."""
