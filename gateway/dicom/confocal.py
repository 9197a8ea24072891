"""Confocal Microscopy Image (…77.1.8) and Tiled Pyramidal (…77.1.9) Storage.

(Stub: filled in by the usb-confocal work.)
"""

from __future__ import annotations

from pathlib import Path

from gateway.dicom.errors import WrapError
from gateway.dicom.job import WrapJob, WrittenObject


def write_confocal(job: WrapJob, dest: Path) -> WrittenObject:
    """Write a confocal z-stack or mosaic from its raw pixel stream."""
    raise WrapError("confocal microscopy is not supported yet")
