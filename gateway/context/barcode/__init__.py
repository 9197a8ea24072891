"""Barcode scanners that open a device's patient session (``[[barcodes]]``).

This package owns the scanners: reading them (a HID keyboard wedge through
python-evdev, grabbed exclusively, in :mod:`.evdev_source`; a serial USB-CDC
scanner through pyserial in :mod:`.serial_source`), decoding what they send into
codes (the pure keyboard decoder in :mod:`.wedge`, the line decoder in
:mod:`.serial_source`) and turning each code into a session request on the
context desk (:mod:`.stage`). Every scan that opens no session is kept as a notice
for the page; the scanned text is patient data and goes nowhere else.
"""

__all__ = ["evdev_source", "presence", "read", "serial_source", "stage", "wedge"]
