"""Why a capture could not be wrapped as DICOM.

Every error here is *permanent*: retrying the same capture gives the same answer,
so the spool keeps the capture, marks it quarantined and shows ``str(error)`` as
the reason on the technician's page. Messages therefore name the problem in plain
words and say what happens to the capture; they never contain patient data.

Exception tree::

    WrapError                  base: the capture is kept and quarantined
    ├── NotAJpeg               the bytes are not a JPEG, or its header is damaged
    ├── UnsupportedJpeg        a real JPEG that DICOM cannot carry as-is
    │                          (progressive, 12-bit, grayscale, 4:4:4, arithmetic …)
    ├── InconsistentSettings   the device's settings contradict each other
    └── IncompleteDeviceIdentity  the device did not report a required identity field
                               (manufacturer, model, serial number, firmware)
"""

from __future__ import annotations


class WrapError(Exception):
    """A capture cannot be turned into DICOM; it is kept and quarantined.

    ``str(error)`` is the quarantine reason shown to the technician.
    """


class NotAJpeg(WrapError):
    """The capture is not a JPEG at all, or its header cannot be read."""


class UnsupportedJpeg(WrapError):
    """The capture is a JPEG that DermGate cannot encapsulate without transcoding."""


class InconsistentSettings(WrapError):
    """The acquisition settings reported by the device contradict each other."""


class IncompleteDeviceIdentity(WrapError):
    """The device did not report an identity field DICOM requires (type 1)."""
