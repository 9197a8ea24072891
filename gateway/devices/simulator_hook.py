"""The simulator hook: how a driver tells the conformance kit to drive its simulator.

A driver that ships a device simulator declares two optional class attributes, both
``"module:attribute"`` references that only the commands needing them import:

- ``simulator``: the simulator's ``main(argv) -> int``, what ``dermgate simulate
  DRIVER …`` runs (the device side of the wire);
- ``conformance``: a :class:`SimulatorAdapter` subclass, what ``dermgate conformance
  DRIVER`` reads to run the kit's battery against that simulator (the ``[[devices]]``
  options that point the gateway at it, the simulator's arguments, the DICOM objects
  one capture becomes).

Why class attributes and not a second entry-point group (``dermgate.simulators``):
the driver's one entry point already names the class, so the hook travels with the
driver and cannot drift from it (two registrations could name different ids);
``dermgate simulate`` has always read ``simulator`` from the class, and the adapter
sits beside it. Why strings and not the adapter class itself: a running gateway loads
every configured driver, and must not import test tooling to do so; the strings are
resolved by :func:`load_adapter` only when the kit runs, which names a broken one.

The adapter is plain data and pure functions (paths, options, report parsing), with
no processes: the kit (``gateway.conformance``) owns the simulator, the gateway and
the PACS. Rules it holds every adapter's simulator to:

- it takes ``--report FILE``, ``--seed N`` and ``--timeout S``, and exits 0 once
  every capture it made was acknowledged (it is the device's truth: its
  acknowledged ids are what must not be lost);
- its report is JSON (rewritten atomically, see ``write_report``) with an
  ``acknowledged`` list (capture ids, or objects with ``id`` or ``capture_id`` and
  optionally ``sha256`` of the content), and optionally ``refused`` (objects with an
  id and a ``reason``) and ``offered`` (a count);
- it injects the kit's faults on request (:class:`Fault`: ``--unplug-mid-transfer``,
  ``--garbage``, ``--reoffer``); :meth:`SimulatorAdapter.fault_args` may map them
  onto the simulator's own flags.
"""

from __future__ import annotations

import enum
import hashlib
import importlib
import json
import math
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

__all__ = [
    "DEVICE_NAME",
    "Fault",
    "HookError",
    "ReportError",
    "SimulatorAdapter",
    "SimulatorReport",
    "load_adapter",
]

#: The name the kit gives the device in the gateway configuration it writes.
DEVICE_NAME = "dev"


class Fault(enum.Enum):
    """A fault the kit asks a simulator to inject (the kit contract's flags)."""

    #: The device goes away half-way through a capture, then comes back and offers
    #: it again: the half must never be acknowledged or kept.
    UNPLUG = "--unplug-mid-transfer"
    #: Junk on the wire (or a junk entry in a folder): nothing crashes.
    GARBAGE = "--garbage"
    #: A capture offered again after its acknowledgement: acknowledged again, no
    #: second object.
    REOFFER = "--reoffer"


class ReportError(ValueError):
    """A simulator's report does not follow the kit contract."""


class HookError(LookupError):
    """A driver's ``conformance`` hook is missing or does not name an adapter class."""


@dataclass(frozen=True, slots=True)
class SimulatorReport:
    """What the simulated device says happened: its own capture ids."""

    acknowledged: tuple[str, ...]
    refused: tuple[tuple[str, str], ...]
    offered: int | None
    #: capture id -> SHA-256 of its content, where the simulator reports it.
    sha256: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Any) -> SimulatorReport:
        """Read a report; raise :class:`ReportError` naming what breaks the contract."""
        if not isinstance(data, dict):
            raise ReportError(f"report is not a JSON object: {data!r}")
        if not isinstance(data.get("acknowledged"), list):
            raise ReportError("report lacks an 'acknowledged' list")
        acknowledged = tuple(_capture_id(item) for item in data["acknowledged"])
        refused = tuple(
            (_capture_id(item), str(item.get("reason", "")) if isinstance(item, dict) else "")
            for item in data.get("refused", [])
        )
        offered = data.get("offered")
        digests = {
            _capture_id(item): str(item["sha256"])
            for item in data["acknowledged"]
            if isinstance(item, dict) and isinstance(item.get("sha256"), str)
        }
        return cls(acknowledged, refused, offered if isinstance(offered, int) else None, digests)


def _capture_id(item: Any) -> str:
    if isinstance(item, str):
        return item
    if isinstance(item, dict):
        for key in ("id", "capture_id"):
            if isinstance(item.get(key), str):
                return str(item[key])
    raise ReportError(f"report names a capture neither as a string nor by 'id': {item!r}")


class SimulatorAdapter(ABC):
    """What the conformance kit needs to know about one driver and its simulator.

    Subclasses set :attr:`objects_per_capture` and write :meth:`device_options` and
    :meth:`simulator_args`; the rest has defaults that fit most drivers. The kit
    builds the adapter with no arguments.
    """

    #: SOP Class UID -> how many objects of that class one acknowledged capture yields.
    objects_per_capture: ClassVar[Mapping[str, int]]
    #: How many captures the capture/fault checks ask for (keep the run short).
    captures: ClassVar[int] = 3
    #: A gateway log substring that proves the unplug hit a transfer, if the device
    #: class can promise one (a folder driver may never have seen the half copy).
    #: Intake logs " discarded: " for a partial capture it threw away.
    unplug_evidence: ClassVar[str | None] = None
    #: Simulator flags that space captures out (appended last, so they win) for the
    #: restart check, which must kill the gateway while captures are still coming. A
    #: device that waits for each acknowledgement is paced by the gateway already.
    paced_args: ClassVar[tuple[str, ...]] = ()
    #: Files of a processed folder entry that become no object (e.g. a manifest).
    not_objects: ClassVar[frozenset[str]] = frozenset()

    @abstractmethod
    def device_options(self, workdir: Path) -> dict[str, Any]:
        """The device's ``[[devices]]`` keys besides ``driver`` and ``name`` (strings,
        numbers, booleans or lists of them), pointing the driver at the simulated
        device under ``workdir``; short timings keep the run quick."""

    @abstractmethod
    def simulator_args(self, workdir: Path, *, captures: int) -> list[str]:
        """Simulator arguments besides ``--report``, ``--seed``, ``--timeout`` and faults."""

    def device_toml(self, driver: str, workdir: Path) -> str:
        """The ``[[devices]]`` section for a device named :data:`DEVICE_NAME`."""
        lines = ["[[devices]]", f"driver = {_toml(driver)}", f"name = {_toml(DEVICE_NAME)}"]
        lines += [f"{key} = {_toml(value)}" for key, value in self.device_options(workdir).items()]
        return "\n" + "\n".join(lines) + "\n"

    def read_report(self, data: Any) -> SimulatorReport:
        """The simulator's parsed ``--report`` JSON as a :class:`SimulatorReport`."""
        return SimulatorReport.from_json(data)

    def fault_args(self, fault: Fault) -> list[str]:
        """The simulator flags that inject ``fault`` (the kit contract's by default)."""
        return [fault.value]

    def prepare(self, workdir: Path) -> None:
        """Create whatever must exist before the simulator and gateway start."""
        workdir.mkdir(parents=True, exist_ok=True)

    def device_present(self, workdir: Path) -> bool:
        """True once the simulated device can be found (a pty link, a socket)."""
        return True

    def drop_folder(self, workdir: Path) -> Path | None:
        """The watched folder of a folder driver; None for a device on a wire."""
        return None

    def sent_digests(self, report: SimulatorReport, workdir: Path) -> set[str] | None:
        """SHA-256 of each object's bytes as the device holds them, for the acknowledged
        captures: the report's digests, else every file of the drop folder's
        ``.processed/`` (except :attr:`not_objects`); None if neither is known."""
        acknowledged = set(report.acknowledged)
        if acknowledged and acknowledged <= set(report.sha256):
            return {report.sha256[capture_id] for capture_id in acknowledged}
        folder = self.drop_folder(workdir)
        if folder is None:
            return None
        files = (p for p in (folder / ".processed").rglob("*") if p.is_file())
        return {_sha256(p) for p in files if p.name not in self.not_objects}

    def expected_objects(self, report: SimulatorReport) -> Counter[str]:
        """SOP Class UID -> number of objects the acknowledged captures must yield."""
        expected: Counter[str] = Counter()
        for _ in set(report.acknowledged):
            expected.update(self.objects_per_capture)
        return expected


def load_adapter(factory: type[Any] | object) -> SimulatorAdapter:
    """The adapter a driver class names in its ``conformance`` hook, built.

    Raises :class:`HookError` (with a message for the driver's author) when the class
    has no hook, or the hook does not name a :class:`SimulatorAdapter` subclass.
    """
    driver_id = getattr(factory, "id", repr(factory))
    target = getattr(factory, "conformance", None)
    if target is None:
        raise HookError(
            f"driver {driver_id} has no conformance hook "
            "(class attribute conformance = 'module:AdapterClass')"
        )
    if not isinstance(target, str) or ":" not in target:
        raise HookError(
            f"driver {driver_id}: conformance must be 'module:AdapterClass', not {target!r}"
        )
    if not isinstance(getattr(factory, "simulator", None), str):
        raise HookError(
            f"driver {driver_id} has no simulator (class attribute simulator = 'module:main')"
        )
    module_name, _, attr = target.partition(":")
    try:
        loaded = getattr(importlib.import_module(module_name), attr)
    except Exception as err:  # the hook's import is the plugin's fault, name it
        raise HookError(
            f"driver {driver_id}: conformance hook {target} failed to load: "
            f"{type(err).__name__}: {err}"
        ) from err
    if not (isinstance(loaded, type) and issubclass(loaded, SimulatorAdapter)):
        raise HookError(f"driver {driver_id}: {target} is not a SimulatorAdapter subclass")
    try:
        return loaded()
    except TypeError as err:  # abstract methods left unwritten, or a constructor argument
        raise HookError(f"driver {driver_id}: {target} cannot be built: {err}") from err


def _toml(value: Any) -> str:
    """``value`` as a TOML value (JSON's strings, numbers, booleans and arrays are TOML's)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"not a TOML-safe option value: {value!r}")
    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    if not isinstance(value, (str, int, float, bool)):
        raise TypeError(f"option value must be a string, number, boolean or list: {value!r}")
    return json.dumps(value, ensure_ascii=True)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
