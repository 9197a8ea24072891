"""The ``usb-confocal`` driver's options and USB matchers, checked at start-up.

The RCM-1 simulator through ``dermgate run`` into Orthanc is in
``tests/e2e/test_usb_confocal.py``.
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from drivers.usb_confocal.driver import UsbConfocalDriver, UsbConfocalOptions
from gateway.devices.contract import UsbMatch


def test_options_are_checked_at_start_up() -> None:
    options = UsbConfocalOptions.model_validate({"usb_backend": "emulated:/run/rcm.sock"})
    assert options.vendor_id == 0x1D50
    assert options.product_id == 0x6189
    assert UsbConfocalDriver.matchers == (UsbMatch(0x1D50, 0x6189),)
    for bad in ({"usb_backend": "usbip:host"}, {"usb_backend": "emulated:"}, {"port": "x"}):
        with pytest.raises(ValidationError):
            UsbConfocalOptions.model_validate(bad)


def test_usb_port_option_is_checked_at_start_up() -> None:
    for good in ("1-1", "3-1.4.2", "/dev/bus/usb/002/017"):
        assert UsbConfocalOptions.model_validate({"usb_port": good}).usb_port == good
    for bad in ("1", "1-", "usb1-1", "/dev/bus/usb/2/17", "/dev/ttyACM0"):
        with pytest.raises(ValidationError, match="USB port"):
            UsbConfocalOptions.model_validate({"usb_port": bad})
