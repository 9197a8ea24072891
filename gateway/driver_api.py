"""The driver SDK: the only module a device driver imports from DermGate.

What is exported here is the contract between the gateway and a driver; anything
else in ``gateway`` may change without notice. A driver checks
:data:`CONTRACT_VERSION` if it relies on something added after version 1.
"""

from __future__ import annotations

from gateway.core.backoff import Backoff
from gateway.core.capture import (
    CaptureOffer,
    CaptureRefused,
    ContentType,
    DeviceClass,
    DeviceIdentity,
    RefusalReason,
)
from gateway.devices.contract import (
    CaptureReceipt,
    CaptureSink,
    DeviceHost,
    Driver,
    DriverFactory,
    DriverState,
    Matcher,
    SerialMatch,
    UsbMatch,
)
from gateway.devices.simulation import Simulator, run_simulator, write_report

#: Bumped when the contract changes in a way a driver can notice.
CONTRACT_VERSION = 1

__all__ = [
    "CONTRACT_VERSION",
    "Backoff",
    "CaptureOffer",
    "CaptureReceipt",
    "CaptureRefused",
    "CaptureSink",
    "ContentType",
    "DeviceClass",
    "DeviceHost",
    "DeviceIdentity",
    "Driver",
    "DriverFactory",
    "DriverState",
    "Matcher",
    "RefusalReason",
    "SerialMatch",
    "Simulator",
    "UsbMatch",
    "run_simulator",
    "write_report",
]

# The simulator hook: a driver's ``conformance = "module:AdapterClass"`` names a
# SimulatorAdapter, which ``dermgate conformance DRIVER`` uses to run the kit
# against the driver's simulator (gateway/devices/simulator_hook.py says how).
from gateway.devices.simulator_hook import (  # noqa: E402 - kept in one block
    DEVICE_NAME,
    Fault,
    SimulatorAdapter,
    SimulatorReport,
)

__all__ += ["DEVICE_NAME", "Fault", "SimulatorAdapter", "SimulatorReport"]
