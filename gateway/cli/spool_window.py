"""``dermgate spool send-now`` and the "waiting for the send window" notes of
``spool list`` and ``spool show``.

``send-now`` writes the same override as the page's "Send now" button
(:mod:`gateway.spool.send_now`), after its audit line; the running service sees it
within :data:`~gateway.spool.admin.SERVICE_POLL_SECONDS` (the page's button also
wakes it at once). The notes read the destinations' ``send_windows`` from the
configuration and the overrides in force, at the time of the command.
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime

from gateway.cli.spool_common import (
    EXIT_FAILURE,
    EXIT_NOT_POSSIBLE,
    EXIT_OK,
    _load,
    _Refusal,
    _run,
    os_user,
)
from gateway.core.config import DermGateConfig
from gateway.spool.admin import SERVICE_POLL_SECONDS
from gateway.spool.send_now import SendNowStore

__all__ = ["cmd_spool_send_now", "window_note", "window_waits"]


def window_waits(config: DermGateConfig, now: float | None = None) -> dict[str, float | None]:
    """Destination → when its next window opens, for each destination whose captures
    wait for its send window now (outside the windows, no "send now" in force)."""
    now = time.time() if now is None else now
    store = SendNowStore(config.gateway.state_dir)
    waits: dict[str, float | None] = {}
    for dest in config.destinations:
        windows = dest.windows()
        if not windows.is_open(now) and store.get(dest.name) is None:
            waits[dest.name] = windows.next_open(now)
    return waits


def local_minute(epoch: float | None) -> str:
    """``2026-12-06 19:00`` in the box's local time (``?`` for None)."""
    return "?" if epoch is None else datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M")


def window_note(destinations: list[str], waits: dict[str, float | None]) -> str | None:
    """``waiting for the send window: pacs (opens …)`` for those of ``destinations``
    that wait for their window; None when none does."""
    waiting = [f"{n} (opens {local_minute(waits[n])})" for n in destinations if n in waits]
    return "waiting for the send window: " + ", ".join(waiting) if waiting else None


def iso(epoch: float | None) -> str | None:
    """An ISO 8601 UTC instant (None stays None)."""
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC).isoformat()


def _send_now(args: argparse.Namespace) -> int:
    """Send what waits for a destination's send window now."""
    from gateway.core.state_owner import missing_folders, owned_like
    from gateway.status.web.audit import AuditLog

    config = _load(args.config)
    dest = next((d for d in config.destinations if d.name == args.destination), None)
    if dest is None:
        names = ", ".join(d.name for d in config.destinations) or "none"
        raise _Refusal(
            EXIT_NOT_POSSIBLE, f"no destination named {args.destination} (configured: {names})"
        )
    windows = dest.windows()
    if windows.is_open(time.time()):
        raise _Refusal(
            EXIT_NOT_POSSIBLE,
            f"{dest.name} has no send windows: it always sends"
            if windows.always
            else f"the send window of {dest.name} is open ({windows}): it is sending already",
        )
    store = SendNowStore(config.gateway.state_dir)
    audit = AuditLog.from_config(config)
    try:
        created = missing_folders(audit.path)
        audit.append_fields(os_user(), "send-now", {"destination": dest.name})
        owned_like(config.gateway.state_dir, *created, audit.path)
        created = missing_folders(store.folder / "x")
        store.request(dest.name, f"cli:{os_user()}")
        owned_like(config.gateway.state_dir, *created, store.folder / f"{dest.name}.json")
    except OSError as err:
        raise _Refusal(
            EXIT_FAILURE, f"cannot record send now for {dest.name}: {err.strerror or err}"
        ) from err
    print(
        f"Send now to {dest.name}: what waits for its send window ({windows}) is sent now, "
        "until none is left or a window opens. The running service picks this up within "
        f"{SERVICE_POLL_SECONDS} s."
    )
    return EXIT_OK


cmd_spool_send_now = _run("send-now", _send_now)
