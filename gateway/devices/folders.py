"""Drop folders: the host side of devices that deliver by writing files.

A 3D scanner workstation or a camera writes into a folder; the folder driver
decides when an entry is complete, streams it into the spool, and only then, as
the acknowledgement, moves it into ``FOLDER/.processed/``. An entry the gateway
refuses goes to ``FOLDER/.refused/`` with a ``NAME.reason.txt`` beside it saying
why in plain words (never patient data). Entries whose names start with ``.`` are
never touched (hidden files, half-written copies many tools make, our own folders).

Every move is a rename inside one filesystem followed by fsyncs of both
directories, so after a power cut an entry is either still waiting (it will be
offered again, and intake recognises it) or moved, never lost. These functions are
blocking; drivers run them on a worker thread.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from gateway.spool.files import atomic_write_bytes, fsync_dir

__all__ = ["DropFolder", "EntrySnapshot"]

PROCESSED = ".processed"
REFUSED = ".refused"
REASON_SUFFIX = ".reason.txt"


@dataclass(frozen=True, slots=True)
class EntrySnapshot:
    """Sizes and modification times of every file of one entry, to tell if it still moves."""

    files: tuple[tuple[str, int, int], ...]


class DropFolder:
    """One watched folder with its ``.processed`` and ``.refused`` sub-folders."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.processed = root / PROCESSED
        self.refused = root / REFUSED

    def prepare(self) -> None:
        """Create the sub-folders (the folder itself must exist: it is the device's)."""
        if not self.root.is_dir():
            raise FileNotFoundError(f"drop folder {self.root} does not exist")
        for sub in (self.processed, self.refused):
            sub.mkdir(exist_ok=True)

    def entries(self) -> list[Path]:
        """Waiting entries (files or folders), oldest first, hidden ones skipped."""
        found = [p for p in self.root.iterdir() if not p.name.startswith(".")]
        return sorted(found, key=lambda p: (_mtime_ns(p), p.name))

    @staticmethod
    def snapshot(entry: Path) -> EntrySnapshot:
        """What the entry looks like now (a folder: every file under it)."""
        files: list[tuple[str, int, int]] = []
        if entry.is_dir():
            for path in sorted(entry.rglob("*")):
                if path.is_file():
                    st = path.stat()
                    files.append((str(path.relative_to(entry)), st.st_size, st.st_mtime_ns))
        else:
            st = entry.stat()
            files.append((entry.name, st.st_size, st.st_mtime_ns))
        return EntrySnapshot(tuple(files))

    @staticmethod
    def settled(unchanged_since: float, quiet_for: float, now: float | None = None) -> bool:
        """True when an entry has looked the same (names, sizes, times) for ``quiet_for``
        seconds since ``unchanged_since``, both on the box's monotonic clock.

        Never judged by the files' modification times against the box's clock: a file
        server's clock that runs ahead would hold every entry back by the difference,
        and one that runs behind would make a copy in progress look finished.
        """
        return (time.monotonic() if now is None else now) - unchanged_since >= quiet_for

    def mark_processed(self, entry: Path) -> Path:
        """Acknowledge ``entry``: move it into ``.processed/`` (durably)."""
        return self._move(entry, self.processed)

    def refuse(self, entry: Path, reason: str) -> Path:
        """Set ``entry`` aside in ``.refused/`` with a reason file beside it."""
        target = self._free_name(self.refused, entry.name)
        atomic_write_bytes(
            target.with_name(target.name + REASON_SUFFIX), (reason.rstrip() + "\n").encode()
        )
        return self._move(entry, self.refused, target)

    def _move(self, entry: Path, into: Path, target: Path | None = None) -> Path:
        into.mkdir(exist_ok=True)
        target = target or self._free_name(into, entry.name)
        os.rename(entry, target)
        fsync_dir(into)
        fsync_dir(entry.parent)
        return target

    @staticmethod
    def _free_name(into: Path, name: str) -> Path:
        """``into/name``, or ``into/name.2`` … when a same-named entry is already there."""
        target = into / name
        n = 2
        while target.exists() or target.with_name(target.name + REASON_SUFFIX).exists():
            target = into / f"{name}.{n}"
            n += 1
        return target


def _mtime_ns(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        return 0
