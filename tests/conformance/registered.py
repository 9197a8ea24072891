"""The adapters the conformance battery runs: one per driver that has landed.

A new driver joins by writing ``tests/conformance/<driver>.py`` with a
:class:`~tests.conformance.kit.DeviceAdapter` and adding it here.
"""

from __future__ import annotations

from tests.conformance.kit import DeviceAdapter
from tests.conformance.photo_folder import PhotoFolderAdapter
from tests.conformance.scanner_export import ScannerExportAdapter
from tests.conformance.serial_dermatoscope import SerialDermatoscopeAdapter
from tests.conformance.usb_confocal import UsbConfocalAdapter

ADAPTERS: tuple[DeviceAdapter, ...] = (
    SerialDermatoscopeAdapter(),
    UsbConfocalAdapter(),
    ScannerExportAdapter(),
    PhotoFolderAdapter(),
)
