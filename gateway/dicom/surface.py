"""Encapsulated OBJ (…104.4), MTL (…104.5) and STL (…104.3) Storage.

(Stub: filled in by the scanner-export work.)
"""

from __future__ import annotations

from pathlib import Path

from gateway.dicom.errors import WrapError
from gateway.dicom.job import WrapJob, WrittenObject


def write_encapsulated_3d(job: WrapJob, dest: Path) -> WrittenObject:
    """Write one OBJ, MTL or STL file as an encapsulated 3D model document."""
    raise WrapError("3D models are not supported yet")
