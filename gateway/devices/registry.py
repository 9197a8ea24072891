"""Driver discovery through the ``dermgate.drivers`` entry-point group."""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import cast

from gateway.devices.contract import DriverFactory

ENTRY_POINT_GROUP = "dermgate.drivers"


class UnknownDriver(LookupError):
    """No installed driver has the requested id."""


def available_drivers() -> dict[str, DriverFactory]:
    """Every installed driver, by id."""
    found: dict[str, DriverFactory] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found[ep.name] = cast(DriverFactory, ep.load())
    return found


def find_driver(driver_id: str) -> DriverFactory:
    """The driver registered as ``driver_id``."""
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == driver_id:
            return cast(DriverFactory, ep.load())
    names = sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))
    known = ", ".join(names) or "none installed"
    raise UnknownDriver(f"unknown driver {driver_id!r} (installed: {known})")
