"""The contract between the gateway and a device driver.

A driver is a class registered in the ``dermgate.drivers`` entry-point group. The
gateway builds it with its validated options and a :class:`DeviceHost`, then runs
:meth:`Driver.run` for as long as the gateway runs. The driver streams each capture
into a :class:`CaptureSink` and tells the device "saved" only after
:meth:`CaptureSink.commit` returned: at that point the capture is durable.

Two optional class attributes make the driver's device simulator part of the
contract (:mod:`gateway.devices.simulator_hook` says why they are class attributes):
``simulator = "module:main"`` is what ``dermgate simulate DRIVER`` runs, and
``conformance = "module:AdapterClass"`` names a
:class:`~gateway.devices.simulator_hook.SimulatorAdapter`, which ``dermgate
conformance DRIVER`` uses to run the conformance kit against that simulator.

The contract is generic over the driver's options model: a driver class is a
:class:`DriverFactory` of its own ``Options`` (the gateway validates a device's
options with ``Options`` and hands the result to the class), and a driver that
derives from :class:`BaseDriver` ``[MyOptions]`` gets ``self.options`` typed as
``MyOptions``, checked by mypy, with no ``isinstance`` at run time.
"""

from __future__ import annotations

import abc
import enum
from dataclasses import dataclass
from typing import ClassVar, Generic, Protocol, TypeVar

from pydantic import BaseModel

from gateway.core.capture import (
    CaptureOffer,
    CaptureRefused,
    DeviceClass,
    DeviceIdentity,
    RefusalReason,
)

__all__ = [
    "BaseDriver",
    "CaptureReceipt",
    "CaptureRefused",
    "CaptureSink",
    "DeviceHost",
    "Driver",
    "DriverFactory",
    "DriverState",
    "Matcher",
    "OptionsT",
    "RefusalReason",
    "SerialMatch",
    "UsbMatch",
]

#: A driver's options model (a pydantic model, ``extra="forbid"``).
OptionsT = TypeVar("OptionsT", bound=BaseModel)


class DriverState(enum.StrEnum):
    """Standard per-driver state shown by status."""

    DISCONNECTED = "DISCONNECTED"
    CONNECTING = "CONNECTING"
    READY = "READY"
    TRANSFERRING = "TRANSFERRING"
    ERROR = "ERROR"
    #: Set by the gateway, never by a driver: it crashed too often and is stopped.
    QUARANTINED = "QUARANTINED"


@dataclass(frozen=True, slots=True)
class UsbMatch:
    """Matches a USB device by vendor and product id (``0x1234``, ``0xabcd``)."""

    vendor_id: int
    product_id: int


@dataclass(frozen=True, slots=True)
class SerialMatch:
    """Matches a serial port by its device path (fnmatch pattern, e.g.
    ``/dev/ttyACM*``) and, when given, the USB ids of the adapter behind it."""

    pattern: str
    vendor_id: int | None = None
    product_id: int | None = None


Matcher = UsbMatch | SerialMatch


@dataclass(frozen=True, slots=True)
class CaptureReceipt:
    """Proof that a capture is durable; ``duplicate`` is True for a re-offer."""

    spool_id: int
    sop_instance_uid: str
    duplicate: bool


class CaptureSink(Protocol):
    """Where a driver streams the bytes of one capture."""

    async def write(self, chunk: bytes) -> None:
        """Append ``chunk`` to the capture."""

    async def commit(
        self, *, length: int, sha256: str, offer: CaptureOffer | None = None
    ) -> CaptureReceipt:
        """Make the capture durable; raise :class:`CaptureRefused` if it cannot be.

        ``offer``, when given, replaces the offer made at ``begin_capture`` (same
        ``device_capture_id``): metadata learned during the transfer, such as each
        frame's depth in a confocal stack.
        """

    async def abort(self, reason: str) -> None:
        """Discard whatever was written; nothing is kept."""


class DeviceHost(Protocol):
    """What the gateway offers a running driver."""

    async def begin_capture(self, identity: DeviceIdentity, offer: CaptureOffer) -> CaptureSink:
        """Start receiving a capture announced by the device."""

    def set_state(self, state: DriverState, detail: str = "") -> None:
        """Report the driver's state (logged once per change)."""

    @property
    def max_capture_bytes(self) -> int:
        """The largest capture the gateway keeps (``[spool] max_capture_mb``).

        A larger one is refused with :attr:`RefusalReason.TOO_LARGE`, a refusal that
        retrying cannot change. A driver that knows a capture's size before offering
        it (a file in a folder) may refuse it itself, without streaming it.
        """


class Driver(Protocol):
    """A running device driver: what :meth:`DriverFactory.__call__` returns."""

    async def run(self) -> None:
        """Serve the device until cancelled; reconnect on your own when it goes away."""


class DriverFactory(Protocol[OptionsT]):
    """The class registered in the entry-point group, generic over its options model.

    Read-only members, so that a class (whose members are class variables) matches.
    """

    @property
    def id(self) -> str:
        """The driver id of ``[[devices]] driver = "..."``."""

    @property
    def device_class(self) -> DeviceClass:
        """The kind of device the driver serves."""

    @property
    def Options(self) -> type[OptionsT]:
        """The pydantic model of the driver's ``[[devices]]`` options."""

    @property
    def matchers(self) -> tuple[Matcher, ...]:
        """USB and serial matchers for hotplug (empty: not hotpluggable)."""

    def __call__(self, options: OptionsT, host: DeviceHost, name: str) -> Driver:
        """Build a driver for one configured device."""


class BaseDriver(abc.ABC, Generic[OptionsT]):
    """A convenient base for a driver class: ``class MyDriver(BaseDriver[MyOptions])``.

    Keeps ``options`` (typed ``MyOptions``), ``host`` and ``name``; a subclass sets
    ``id``, ``device_class``, ``Options = MyOptions`` (mypy checks it is the model
    named in brackets) and ``matchers``, and implements :meth:`run`.
    """

    id: ClassVar[str]
    device_class: ClassVar[DeviceClass]
    Options: type[OptionsT]
    matchers: ClassVar[tuple[Matcher, ...]] = ()

    def __init__(self, options: OptionsT, host: DeviceHost, name: str) -> None:
        """Keep the device's validated ``options``, the ``host`` and the device's ``name``."""
        self.options = options
        self.host = host
        self.name = name

    @abc.abstractmethod
    async def run(self) -> None:
        """Serve the device until cancelled; reconnect on your own when it goes away."""
