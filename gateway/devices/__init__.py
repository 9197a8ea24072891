"""Devices: the driver contract, finding drivers (entry points, hotplug), hosting and
supervising them, and their state. Knows nothing of DICOM or the ledger; a driver's
captures reach intake through the :class:`~gateway.devices.contract.DeviceHost`.
"""

__all__ = [
    "contract",
    "folders",
    "host",
    "hotplug",
    "registry",
    "simulation",
    "simulator_hook",
    "status",
]
