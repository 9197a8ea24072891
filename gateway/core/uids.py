"""UIDs DermGate mints, and the constants that name DermGate in file meta.

All UIDs are in the ``2.25`` arc (PS3.5 B.2: a UUID written as one decimal
integer), so no organisational root has to be registered. Instance UIDs are
random and minted once at intake (then stored); Tracking UIDs are derived from the
patient and the lesion, so that the same lesion of the same patient gets the same
Tracking UID at every visit and on every device.
"""

from __future__ import annotations

import json
import uuid
from typing import Final

from pydicom.uid import generate_uid

__all__ = [
    "DERMGATE_IMPLEMENTATION_CLASS_UID",
    "IMPLEMENTATION_VERSION_NAME",
    "derived_uid",
    "new_uid",
    "tracking_uid",
]

#: Fixed namespace for name-based (uuid5) UIDs. Never change it: every Tracking
#: UID ever issued depends on it.
_DERMGATE_NAMESPACE: Final = uuid.UUID("6f1b0c8e-4a52-5d7e-9c3b-2d8a1e0f7b64")

#: Implementation Class UID (0002,0012) of files DermGate writes (fixed; it is
#: uuid5 of the namespace above and "implementation-class", written out).
DERMGATE_IMPLEMENTATION_CLASS_UID: Final = "2.25.100343258206691058786151558311907821793"

#: Implementation Version Name (0002,0013): at most 16 characters.
IMPLEMENTATION_VERSION_NAME: Final = "DERMGATE_010"


def new_uid() -> str:
    """A new random ``2.25.`` UID (study, series, SOP instance, frame of reference)."""
    return str(generate_uid(prefix=None))


def tracking_uid(issuer_of_patient_id: str, patient_id: str, lesion_id: str) -> str:
    """The Tracking UID (0062,0021) of a known patient's lesion, stable across visits.

    Derived with uuid5 from a fixed DermGate namespace, a domain label and the
    issuer, patient id and lesion id (as a JSON list, so no two triples give the
    same name), so re-imaging the same lesion of the same patient gives the same UID
    on any device without stored state, and another patient's lesion of the same
    label another. Only for a patient the device named (see
    :mod:`gateway.core.patient`).
    """
    name = "lesion-tracking\x00" + json.dumps([issuer_of_patient_id, patient_id, lesion_id])
    return f"2.25.{uuid.uuid5(_DERMGATE_NAMESPACE, name).int}"


def derived_uid(purpose: str, base_uid: str) -> str:
    """A ``2.25.`` UID derived from another UID, for UIDs a pure builder must mint.

    The same ``purpose`` and ``base_uid`` always give the same UID (e.g. the Frame
    of Reference UID of a SOP instance), so re-wrapping a capture after a crash
    produces the same object.
    """
    name = f"{purpose}\x00{base_uid}"
    return f"2.25.{uuid.uuid5(_DERMGATE_NAMESPACE, name).int}"
