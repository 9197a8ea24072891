"""The presentation contexts DermGate proposes and accepts, in one place.

``docs/conformance-statement.md`` lists them, and
``tests/unit/test_conformance_statement.py`` checks its tables against the names
here: a SOP class or transfer syntax added to the code but not to the statement
fails that test.

Storage: C-STORE proposes, per association, one presentation context for each
distinct (SOP class, transfer syntax) pair of the batch it carries, each with the
single transfer syntax the spooled file is encoded in (:func:`storage_contexts`;
files are sent as they were written, never converted). :data:`STORAGE_CONTEXTS`
is every pair a DermGate writer can produce (:data:`gateway.dicom.sop_classes.WRITTEN`,
which ``dermgate echo`` proposes whole) plus the classes of the derived objects a
destination with ``fallback = "compatible"`` is sent instead
(:data:`gateway.dicom.sop_classes.COMPATIBLE`, in the original's transfer syntax):
for such a destination, each pair of a batch whose class has a compatible class
also proposes that class in the same syntax (:func:`storage_contexts` with
``compatible=True``), so the association says at once whether the fallback can go.
The other services propose or accept
their SOP class with pynetdicom's default transfer syntaxes
(:data:`DEFAULT_SYNTAXES`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final

from pynetdicom import DEFAULT_TRANSFER_SYNTAXES

from gateway.dicom.mpps import MPPS_SOP_CLASS
from gateway.dicom.sop_classes import COMPATIBLE, WRITTEN

__all__ = [
    "DEFAULT_SYNTAXES",
    "MPPS",
    "STORAGE_COMMITMENT_PUSH",
    "STORAGE_CONTEXTS",
    "VERIFICATION",
    "WORKLIST_FIND",
    "storage_contexts",
]


def _with_compatible() -> dict[str, tuple[str, ...]]:
    contexts = dict(WRITTEN)
    for original, derived in COMPATIBLE.items():
        known = contexts.get(derived, ())
        contexts[derived] = known + tuple(s for s in contexts[original] if s not in known)
    return contexts


STORAGE_CONTEXTS: Final[Mapping[str, tuple[str, ...]]] = _with_compatible()
"""Every storage SOP class DermGate writes or derives → the transfer syntaxes its
files are in."""

VERIFICATION: Final = "1.2.840.10008.1.1"
"""Verification SOP Class (C-ECHO): SCU towards each peer, SCP on our listener."""
STORAGE_COMMITMENT_PUSH: Final = "1.2.840.10008.1.20.1"
"""Storage Commitment Push Model SOP Class (N-ACTION out, N-EVENT-REPORT in)."""
WORKLIST_FIND: Final = "1.2.840.10008.5.1.4.31"
"""Modality Worklist Information Model – FIND (C-FIND SCU)."""
MPPS: Final = MPPS_SOP_CLASS
"""Modality Performed Procedure Step SOP Class (N-CREATE, N-SET SCU)."""

DEFAULT_SYNTAXES: Final[tuple[str, ...]] = tuple(str(s) for s in DEFAULT_TRANSFER_SYNTAXES)
"""pynetdicom's default transfer syntaxes, proposed by every non-storage context."""


def storage_contexts(
    pairs: Iterable[tuple[str, str]], *, compatible: bool = False
) -> list[tuple[str, str]]:
    """The presentation contexts one C-STORE association proposes for a batch.

    ``pairs`` are the batch's (SOP Class UID, Transfer Syntax UID), one per
    instance; the answer has each distinct pair once, sorted: one context per pair,
    proposing that single transfer syntax. With ``compatible`` (the destination's
    ``fallback = "compatible"``), a pair whose class has a compatible class also
    brings (compatible class, same syntax).
    """
    wanted = set(pairs)
    if compatible:
        wanted |= {(COMPATIBLE[c], ts) for c, ts in wanted if c in COMPATIBLE}
    return sorted(wanted)
