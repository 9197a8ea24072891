"""Driver discovery through the ``dermgate.drivers`` entry-point group.

Drivers are found only here, never by scanning folders: first-party drivers are
registered in DermGate's own ``pyproject.toml``, third-party drivers in their own
package's, and both are found the same way (``pip install`` a driver package and
its ids appear).

The group's entry points are read once per process (a scan of every installed
distribution; ``dermgate run`` looks a driver up twice per device): a driver package
installed later appears at the next start, as any new code does.

Loading one driver imports only that driver's entry point, so a plugin that fails
to import (a missing dependency after an upgrade, a syntax error) is an error for
the devices that use it, never for the others: :func:`find_driver` raises
:class:`BrokenDriver` naming the plugin, its entry point and the exception class.
"""

from __future__ import annotations

import functools
from importlib.metadata import EntryPoint, entry_points
from typing import Any, cast

from pydantic import BaseModel

from gateway.devices.contract import DriverFactory

ENTRY_POINT_GROUP = "dermgate.drivers"


class UnknownDriver(LookupError):
    """No installed driver can serve the requested id."""


class BrokenDriver(UnknownDriver):
    """A driver is registered under the id but cannot be loaded (its import fails,
    or the object is not a driver class). Only the devices using it are affected."""


@functools.cache
def _registered() -> tuple[EntryPoint, ...]:
    """Every entry point of :data:`ENTRY_POINT_GROUP`, read once per process."""
    return tuple(entry_points(group=ENTRY_POINT_GROUP))


def _plugin(ep: EntryPoint) -> str:
    dist = ep.dist
    return f"{dist.name} {dist.version}" if dist is not None else "unknown package"


def _load(ep: EntryPoint) -> DriverFactory[Any]:
    """Import one entry point and check it has the shape of a driver class."""

    # The plugin's name and version only for an error: reading a distribution's
    # metadata parses its METADATA file (~10 ms a driver at start-up).
    def where() -> str:
        return f"driver {ep.name!r} ({ep.value}, from {_plugin(ep)})"

    try:
        loaded = ep.load()
    except Exception as err:  # any import-time failure of a plugin is that plugin's fault
        raise BrokenDriver(f"{where()} failed to load: {type(err).__name__}: {err}") from err
    options = getattr(loaded, "Options", None)
    if not isinstance(loaded, type) or not (
        isinstance(options, type) and issubclass(options, BaseModel)
    ):
        raise BrokenDriver(f"{where()} is not a driver class with an Options model")
    if not isinstance(getattr(loaded, "matchers", ()), tuple):
        raise BrokenDriver(f"{where()}: matchers must be a tuple of UsbMatch/SerialMatch")
    return cast(DriverFactory[Any], loaded)


def installed_ids() -> list[str]:
    """The ids of every registered driver (nothing is imported)."""
    return sorted({ep.name for ep in _registered()})


def available_drivers() -> tuple[dict[str, DriverFactory[Any]], dict[str, BrokenDriver]]:
    """Every installed driver by id, and the ones that failed to load, by id."""
    found: dict[str, DriverFactory[Any]] = {}
    broken: dict[str, BrokenDriver] = {}
    for ep in _registered():
        try:
            found[ep.name] = _load(ep)
        except BrokenDriver as err:
            broken[ep.name] = err
    return found, broken


def find_driver(driver_id: str) -> DriverFactory[Any]:
    """The driver registered as ``driver_id``.

    Raises :class:`UnknownDriver` if none is, :class:`BrokenDriver` if it fails to load.
    """
    for ep in _registered():
        if ep.name == driver_id:
            return _load(ep)
    known = ", ".join(installed_ids()) or "none installed"
    raise UnknownDriver(f"unknown driver {driver_id!r} (installed: {known})")
