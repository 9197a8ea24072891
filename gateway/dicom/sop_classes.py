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
    MultiFrameGrayscaleByteSecondaryCaptureImageStorage,
    MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
    VLPhotographicImageStorage,
)

__all__ = ["COMPATIBLE", "NO_SUBSTITUTE", "WRITTEN", "uid_name"]

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


COMPATIBLE: Final[dict[str, str]] = {
    str(DermoscopicPhotographyImageStorage): str(VLPhotographicImageStorage),
    str(ConfocalMicroscopyImageStorage): str(MultiFrameGrayscaleByteSecondaryCaptureImageStorage),
    str(ConfocalMicroscopyTiledPyramidalImageStorage): str(
        MultiFrameGrayscaleByteSecondaryCaptureImageStorage
    ),
}
"""SOP class → the widely accepted class its derived object has (``fallback =
"compatible"``, :mod:`gateway.dicom.compatible`), in the same transfer syntax, with
the same pixels. Multi-frame Grayscale Byte SC is written only as such a copy, so it
is not in :data:`WRITTEN` (which lists what a capture is wrapped as)."""

NO_SUBSTITUTE: Final[frozenset[str]] = frozenset(
    {str(EncapsulatedOBJStorage), str(EncapsulatedMTLStorage), str(EncapsulatedSTLStorage)}
)
"""Classes with no lossless substitute: a receiver that refuses them gets nothing."""


def uid_name(uid: str) -> str:
    """The standard's name of a SOP class or transfer syntax UID (the UID if unknown)."""
    return UID(uid).name or uid
