"""Telling systemd how the service is: READY=1, WATCHDOG=1, STOPPING=1 and STATUS= lines.

The notify protocol is one datagram per message to the AF_UNIX socket named by
``$NOTIFY_SOCKET`` (a path, or an abstract socket written with a leading ``@``);
see sd_notify(3). Without ``$NOTIFY_SOCKET`` (not under systemd, or not
``Type=notify``) every call does nothing.

:class:`ServiceNotifier` is a stage of the gateway (it runs on the event loop):

- ``READY=1`` once every stage is serving (:meth:`ServiceNotifier.ready`, called by
  :mod:`gateway.service.app` after the last stage reported ready);
- ``WATCHDOG=1`` every half of ``$WATCHDOG_USEC``, sent from the event loop itself and
  only while ``healthy()`` (every stage still running, see
  :meth:`gateway.service.supervise.Supervisor.healthy`). A wedged loop sends nothing,
  nor does a gateway whose stage died: systemd then restarts the service
  (``WatchdogSec=``). A pinger thread would not notice a wedged loop, hence none.
  ``$WATCHDOG_PID``, when set, must be this process (else the pings are for another);
- ``STATUS=`` on every change of the active alarms (``delivering`` when there is
  none, else e.g. ``pacs unreachable; disk full``): ``systemctl status dermgate``
  shows it. Alarm subjects are box-assigned names, never patient data;
- ``STOPPING=1`` when the gateway begins to stop (:meth:`ServiceNotifier.stopping`).
  systemd still watches while the service stops (up to ``TimeoutStopSec=``), and the
  stages end one by one then, so from here on the pings only need the loop to turn;
  the notifier is the first stage started, hence the last one stopped.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable, Mapping

from gateway.core import alarms
from gateway.core.events import ActiveAlarm, EventBus

__all__ = ["ServiceNotifier", "notify", "status_text", "watchdog_interval"]

log = logging.getLogger(__name__)

Ready = Callable[[], None]


def notify(message: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send ``message`` (``"READY=1"``, ``"WATCHDOG=1"``, …) to systemd.

    False when there is no ``$NOTIFY_SOCKET`` or the datagram could not be sent
    (logged at DEBUG: systemd going away must not stop the gateway).
    """
    env = os.environ if environ is None else environ
    address = env.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address[0] == "@":
        address = "\0" + address[1:]  # an abstract socket
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(message.encode("utf-8"), address)
    except OSError as err:
        log.debug("sd_notify %s: %s", message.split("=", 1)[0], err)
        return False
    return True


def watchdog_interval(environ: Mapping[str, str] | None = None, pid: int | None = None) -> float:
    """Seconds between WATCHDOG=1 pings: half of ``$WATCHDOG_USEC``; 0 for none (no
    watchdog, a malformed value, or ``$WATCHDOG_PID`` naming another process)."""
    env = os.environ if environ is None else environ
    try:
        usec = int(env.get("WATCHDOG_USEC", "0"))
    except ValueError:
        return 0.0
    owner = env.get("WATCHDOG_PID", "")
    if owner and owner != str(os.getpid() if pid is None else pid):
        return 0.0
    return usec / 2e6 if usec > 0 else 0.0


_PHRASES: dict[str, str] = {
    alarms.DISK_FULL: "disk full",
    alarms.STUCK_CAPTURES: "captures stuck for {subject}",
    alarms.DESTINATION_UNREACHABLE: "{subject} unreachable",
    alarms.DRIVER_QUARANTINED: "device {subject} quarantined",
    alarms.COMMITMENT_OVERDUE: "commitment overdue at {subject}",
    alarms.CLOCK_NOT_SYNCHRONISED: "clock not synchronised",
}


def status_text(active: Mapping[tuple[str, str], ActiveAlarm]) -> str:
    """The STATUS= line for the active alarms: ``delivering`` when there is none."""
    if not active:
        return "delivering"
    parts = []
    for code, subject in sorted(active):
        phrase = _PHRASES.get(code, code.replace("_", " ") + " {subject}")
        parts.append(phrase.format(subject=subject).strip())
    return "; ".join(parts)


class ServiceNotifier:
    """The gateway's side of ``Type=notify`` (see the module docstring)."""

    def __init__(
        self,
        bus: EventBus,
        healthy: Callable[[], bool],
        *,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self._bus = bus
        self._healthy = healthy
        self._env = dict(os.environ if environ is None else environ)
        self.interval = watchdog_interval(self._env)
        self._status = ""
        self._was_healthy = True
        self._serving = asyncio.Event()
        self._stopping = False

    @property
    def enabled(self) -> bool:
        """True under a ``Type=notify`` service manager."""
        return bool(self._env.get("NOTIFY_SOCKET"))

    def ready(self) -> None:
        """Every stage is serving: READY=1 with the current status."""
        self._status = status_text(self._bus.alarms)
        notify(f"READY=1\nSTATUS={self._status}", self._env)
        self._serving.set()

    def stopping(self) -> None:
        """The gateway begins to stop (draining transfers, then exiting)."""
        self._stopping = True
        notify("STOPPING=1\nSTATUS=stopping", self._env)

    def _update_status(self) -> None:
        text = status_text(self._bus.alarms)
        if text != self._status:
            self._status = text
            notify(f"STATUS={text}", self._env)

    def _ping(self) -> None:
        healthy = self._stopping or self._healthy()  # stopping: stages end on purpose
        if healthy:
            notify("WATCHDOG=1", self._env)
        elif self._was_healthy:
            log.error("watchdog pings stop (a stage has ended): systemd will restart the service")
        self._was_healthy = healthy

    async def run(self, ready: Ready) -> None:
        """The stage: pings the watchdog and follows the alarms until cancelled."""
        ready()
        if not self.enabled:
            await asyncio.Event().wait()  # nothing to tell; a stage serves until stopped
        changed = self._bus.watch()
        await self._serving.wait()  # pings and status changes follow READY=1
        self._update_status()
        loop = asyncio.get_running_loop()
        next_ping = loop.time()
        while True:
            if self.interval and loop.time() >= next_ping:
                self._ping()
                next_ping = loop.time() + self.interval
            wait = next_ping - loop.time() if self.interval else None
            try:
                async with asyncio.timeout(wait):
                    await changed.wait()
            except TimeoutError:
                continue
            changed.clear()
            if not self._stopping:
                self._update_status()
