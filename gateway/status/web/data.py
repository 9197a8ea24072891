"""What the local page and ``/metrics`` read: figures from the ledger, the devices, the disk.

Blocking: call :func:`read_figures` and :func:`read_spool` on a worker thread. They
open the ledger read-only (SQLite WAL: the service keeps writing meanwhile) and
read it through :mod:`gateway.spool.figures`, which selects only columns without
patient data — never ``patient_json``, never file names, never device capture ids
(they may quote what a device was told). A destination's last error is shown as
the fixed phrase of the code the sender recorded (:mod:`gateway.core.errors`). The
verdict rules ("is it delivering?") are in :func:`verdict`.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from gateway.spool.figures import DELIVERED, WAITING, page_figures, recent_captures
from gateway.spool.ledger import open_ledger
from gateway.spool.routing import removed_destinations, waiting_for_removed
from gateway.spool.states import CaptureState

STALE_BACKLOG = 600.0  # seconds a capture may wait before the verdict turns amber
SLOW_COMMITMENT = 3600.0


def _age(stamp: str | None, now: float) -> float | None:
    if not stamp:
        return None
    try:
        return max(0.0, now - datetime.fromisoformat(stamp).timestamp())
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class DestinationFigures:
    """One destination as the ledger shows it."""

    name: str
    host: str
    port: int
    storage_commitment: bool
    pending: int = 0
    sent: int = 0
    committed: int = 0
    refused: int = 0
    retrying: int = 0
    last_error: str | None = None
    reachable: bool | None = None  # from the state snapshot; None: not known
    removed: bool = False  # no longer configured; captures still wait for it
    window_open: bool = True  # inside a send window now (or it has none)
    next_window: str | None = None  # ISO time the next window opens; None while open
    send_now: bool = False  # a technician's "send now" is in force

    @property
    def failing(self) -> bool:
        """Deliveries are waiting and the last attempt failed, or it is unreachable."""
        return self.retrying > 0 or self.reachable is False

    @property
    def waiting_for_window(self) -> bool:
        """Deliveries wait for the send window (not a failure)."""
        return self.pending > 0 and not self.window_open and not self.send_now


@dataclass(frozen=True, slots=True)
class DiskFigures:
    """The spool's filesystem."""

    free: int
    total: int
    reserve: int

    @property
    def low(self) -> bool:
        """Below the reserve: new captures are refused at the device."""
        return self.free < self.reserve


@dataclass(frozen=True, slots=True)
class Figures:
    """Everything the overview and ``/metrics`` show, patient-free by construction."""

    counts: dict[str, int]
    quarantined_open: int
    oldest_waiting_age: float | None
    commitment_lag: float | None
    destinations: list[DestinationFigures]
    delivered_by_class: dict[str, int]
    quarantined_by_class: dict[str, int]
    disk: DiskFigures
    devices: list[dict[str, Any]] = field(default_factory=list)
    alarms: list[dict[str, Any]] = field(default_factory=list)
    worklist: dict[str, Any] = field(default_factory=dict)  # the state document's section
    health: dict[str, Any] = field(default_factory=dict)  # the box's health section

    @property
    def backlog(self) -> int:
        """Captures not yet sent anywhere."""
        return sum(self.counts.get(s, 0) for s in WAITING)

    @property
    def delivered(self) -> int:
        """Captures every destination has stored."""
        return sum(self.counts.get(s, 0) for s in DELIVERED)


def read_figures(
    ledger_path: Path,
    spool_root: Path,
    reserve: int,
    destinations: list[tuple[str, str, int, bool]],
    now: float | None = None,
) -> Figures:
    """Read the ledger and the disk (blocking). ``destinations``: (name, host, port, commit)."""
    now = time.time() if now is None else now
    usage = shutil.disk_usage(spool_root if spool_root.exists() else spool_root.parent)
    disk = DiskFigures(free=usage.free, total=usage.total, reserve=reserve)
    if not ledger_path.exists():
        return Figures(
            {str(s): 0 for s in CaptureState},
            0,
            None,
            None,
            [DestinationFigures(n, h, p, c) for n, h, p, c in destinations],
            {},
            {},
            disk,
        )
    conn = open_ledger(ledger_path, readonly=True)
    try:
        read = page_figures(conn, [(n, c) for n, _, _, c in destinations])
        removed = removed_destinations(conn, [n for n, _, _, _ in destinations])
    finally:
        conn.close()
    dests = []
    for name, host, port, commit in destinations:
        d = read.destinations[name]
        dests.append(
            DestinationFigures(
                name,
                host,
                port,
                commit,
                pending=d.pending,
                sent=d.sent,
                committed=d.committed,
                refused=d.refused,
                retrying=d.retrying,
                last_error=None if d.last_error is None else d.last_error.message,
            )
        )
    dests += [
        DestinationFigures(
            name,
            "",
            0,
            False,
            pending=states.get("PENDING", 0),
            sent=states.get("SENT", 0),
            removed=True,
        )
        for name, states in removed.items()
    ]
    first = read.first_unconfirmed_epoch
    return Figures(
        counts=read.counts,
        quarantined_open=read.quarantined_open,
        oldest_waiting_age=_age(read.oldest_waiting, now),
        commitment_lag=None if first is None else max(0.0, now - first),
        destinations=dests,
        delivered_by_class=read.delivered_by_class,
        quarantined_by_class=read.quarantined_by_class,
        disk=disk,
    )


@dataclass(frozen=True, slots=True)
class Verdict:
    """Is it delivering? ``colour`` green, amber or red, and why in plain words."""

    colour: str
    headline: str
    reasons: list[str]


def verdict(fig: Figures) -> Verdict:
    """Red: it cannot deliver or accept; amber: it delivers but needs a look; else green."""
    red: list[str] = []
    amber: list[str] = []
    if fig.disk.low:
        red.append("The disk is below its reserve: new captures are refused at the device.")
    if not fig.destinations:
        red.append("No PACS is configured: captures are only kept here.")
    for dest in fig.destinations:
        if dest.removed:
            amber.append(
                f"{dest.pending + dest.sent} capture(s) wait for {dest.name}, which is no longer "
                "configured (destination removed): configure it again, or let go of it "
                f"(dermgate spool forget-destination {dest.name})."
            )
        elif dest.failing:
            why = dest.last_error or "not reachable"
            red.append(f"{dest.name} does not take captures: {why}")
    if fig.quarantined_open:
        amber.append(f"{fig.quarantined_open} capture(s) set aside: see the spool.")
    windowed = [d for d in fig.destinations if d.waiting_for_window]
    sending = [d for d in fig.destinations if d.pending and not d.waiting_for_window]
    stale = fig.oldest_waiting_age is not None and fig.oldest_waiting_age > STALE_BACKLOG
    if stale and (sending or not windowed):  # a wait for the window is not a delay
        amber.append("Captures have been waiting for more than 10 minutes.")
    if fig.commitment_lag is not None and fig.commitment_lag > SLOW_COMMITMENT:
        amber.append("The PACS has not confirmed some captures for more than an hour.")
    if fig.worklist.get("configured") and fig.worklist.get("stale"):
        why = fig.worklist.get("last_error") or "no refresh yet"
        amber.append(f"The worklist is stale ({why}): patients picked may be out of date.")
    for device in fig.devices:
        if device.get("state") in ("ERROR", "QUARANTINED"):
            amber.append(f"Device {device.get('name')} is {device.get('state')}.")
    for alarm in fig.alarms:
        text = str(alarm.get("message") or alarm.get("code") or "alarm")
        if alarm.get("code") == "disk_full" or alarm.get("code") == "destination_unreachable":
            if text not in red:
                red.append(text[:1].upper() + text[1:] + ".")
        else:
            amber.append(text[:1].upper() + text[1:] + ".")
    if red:
        return Verdict("red", "Not delivering", red + amber)
    if amber:
        return Verdict("amber", "Delivering, but needs a look", amber)
    if windowed and not sending:
        names = ", ".join(d.name for d in windowed)
        return Verdict(
            "green",
            f"Waiting for the send window: {fig.backlog} to send",
            [f"{names}: sending starts when the send window opens (or with Send now)."],
        )
    if fig.backlog:
        return Verdict("green", f"Delivering: {fig.backlog} on the way", [])
    return Verdict("green", "Delivering: everything received is in the PACS", [])


@dataclass(frozen=True, slots=True)
class SpoolRow:
    """One line of the spool view (no patient data, no device capture id)."""

    spool_id: int
    state: str
    age: float | None
    device: str
    device_class: str
    reason: str | None
    last_error: str | None
    sensitive: bool = False
    removed: tuple[str, ...] = ()  # destinations no longer configured it still waits for


def read_spool(
    ledger_path: Path,
    state: str | None = None,
    limit: int = 200,
    now: float | None = None,
    configured: Sequence[str] | None = None,
) -> list[SpoolRow]:
    """The newest ``limit`` captures (optionally in ``state``), blocking; with
    ``configured`` (the destination names), which removed ones each still waits for."""
    now = time.time() if now is None else now
    if not ledger_path.exists():
        return []
    conn = open_ledger(ledger_path, readonly=True)
    try:
        rows = recent_captures(conn, state, limit)
        removed = {} if configured is None else waiting_for_removed(conn, configured)
    finally:
        conn.close()
    return [
        SpoolRow(
            spool_id=r.spool_id,
            state=r.state,
            age=_age(r.received_at, now),
            device=f"{r.model or '?'} ({r.driver})",
            device_class=str(r.device_class or ""),
            reason=r.reason,
            last_error=r.last_error,
            sensitive=r.sensitive,
            removed=tuple(removed.get(r.spool_id, ())),
        )
        for r in rows
    ]


def human_age(seconds: float | None) -> str:
    """``42 s``, ``7 min``, ``3 h 5 min``, ``2 d 4 h``; ``-`` for None."""
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def human_bytes(n: int) -> str:
    """Bytes in MB/GB for people."""
    if n >= 10**9:
        return f"{n / 10**9:.1f} GB"
    return f"{n / 10**6:.0f} MB"
