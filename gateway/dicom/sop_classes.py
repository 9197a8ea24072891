"""Every SOP class DermGate writes, with the transfer syntaxes it writes each one in.

The forwarder proposes one presentation context per (SOP class, transfer syntax) of
the objects in a batch; ``dermgate echo`` proposes all of :data:`WRITTEN` to learn
which of them a receiver takes. A new writer adds its class here (a unit test checks
the list against the classes :mod:`gateway.dicom.context` knows how to fill).
"""

from __future__ import annotations

from typing import Final

from pydicom.uid import (
    UID,
    ConfocalMicroscopyImageStorage,
    ConfocalMicroscopyTiledPyramidalImageStorage,
    DermoscopicPhotographyImageStorage,
    EncapsulatedMTLStorage,
    EncapsulatedOBJStorage,
    EncapsulatedSTLStorage,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
    VLPhotographicImageStorage,
)

__all__ = ["WRITTEN", "uid_name"]

_JPEG: Final = (str(JPEGBaseline8Bit), str(JPEGExtended12Bit))
_NATIVE: Final = (str(ExplicitVRLittleEndian),)

WRITTEN: Final[tuple[tuple[str, tuple[str, ...]], ...]] = (
    (str(DermoscopicPhotographyImageStorage), _JPEG),  # the device's JPEG, encapsulated
    (str(VLPhotographicImageStorage), (*_JPEG, *_NATIVE)),  # JPEG, or native pixels
    (str(ConfocalMicroscopyImageStorage), _NATIVE),
    (str(ConfocalMicroscopyTiledPyramidalImageStorage), _NATIVE),
    (str(MultiFrameGrayscaleWordSecondaryCaptureImageStorage), _NATIVE),  # 16-bit stacks
    (str(EncapsulatedOBJStorage), _NATIVE),
    (str(EncapsulatedMTLStorage), _NATIVE),
    (str(EncapsulatedSTLStorage), _NATIVE),
)
"""(SOP Class UID, transfer syntax UIDs it is written in), in the order they are proposed."""


def uid_name(uid: str) -> str:
    """The standard's name of a SOP class or transfer syntax UID (the UID if unknown)."""
    return UID(uid).name or uid
