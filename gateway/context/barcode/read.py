"""What a scanner read: a code, or why there is none (shared by both kinds of scanner)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

__all__ = ["MAX_CODE", "ReadKind", "ScanRead"]

MAX_CODE = 128
"""Characters a code may have; a longer one is dropped (a read of kind TOO_LONG)."""


class ReadKind(enum.StrEnum):
    """What a scanner's read is."""

    CODE = "code"
    """A complete code, read at a scanner's pace and ended by Enter (or CR/LF)."""
    TYPED = "typed"
    """Keys at a person's pace: typed on a keyboard, not scanned; never used."""
    TOO_LONG = "too_long"
    """Longer than :data:`MAX_CODE`: dropped (``text`` keeps the first characters)."""
    UNREADABLE = "unreadable"
    """Keys outside the US layout, or bytes that are not printable text (shown as
    U+FFFD in ``text``): a code with a character missing could name someone else."""
    INCOMPLETE = "incomplete"
    """Characters that no Enter (CR/LF) ended: the scanner paused or went away."""


@dataclass(frozen=True, slots=True)
class ScanRead:
    """One read: its kind and the text (patient data: kept out of ``repr``)."""

    kind: ReadKind
    text: str = field(repr=False)
