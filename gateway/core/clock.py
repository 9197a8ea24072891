"""Can the box's clock be trusted? A box without a real-time clock (a Pi) starts in the
past until a time server sets its clock.

:func:`clock_synchronised` reads the system's own state, most certain first:

1. a clock before :data:`PLAUSIBLE_SINCE` is wrong whatever else says (a Pi that
   booted without network starts at its last shutdown's time or in 1970);
2. ``/run/systemd/timesync/synchronized`` exists: systemd-timesyncd set the clock
   (the file ``systemd-time-wait-sync`` waits for);
3. systemd-timesyncd runs (``/run/systemd/timesync`` exists) and has not synchronised:
   not synchronised. Otherwise (chrony, ntpd): cannot tell beyond (1), None.

The kernel's own NTP state (adjtimex(2)) is not asked: the service's unit has
``ProtectClock=yes``, which denies that call altogether. The service raises the
``clock_not_synchronised`` alarm from this (:mod:`gateway.service.clock`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["PLAUSIBLE_SINCE", "TIMESYNC_DIR", "clock_synchronised"]

#: 2025-01-01T00:00:00Z: no clock showing an earlier time is right (DermGate is younger).
PLAUSIBLE_SINCE = 1735689600.0
#: systemd-timesyncd's state folder.
TIMESYNC_DIR = Path("/run/systemd/timesync")


def clock_synchronised(
    *,
    now: Callable[[], float] = time.time,
    timesync_dir: Path = TIMESYNC_DIR,
) -> bool | None:
    """True/False when the system can tell whether its clock is right, else None
    (see the module docstring for the order of the sources)."""
    if now() < PLAUSIBLE_SINCE:
        return False
    if (timesync_dir / "synchronized").exists():
        return True
    if timesync_dir.is_dir():
        return False
    return None
