"""Waiting for an idle service, restarting it, and the health gate.

The service holds a shared ``flock`` on the busy lock (``/run/dermgate/busy.lock``,
see :mod:`gateway.core.busy`) while a capture is in intake or wrap or an
association is open; :func:`wait_idle` takes it exclusively, so it returns only when
nothing is in flight.

The health gate after a restart: the unit is active (``systemctl restart`` of a
``Type=notify`` unit returns after READY=1), :func:`health_check` passes, and for
the soak the unit stays active with ``NRestarts`` unchanged.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shlex
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_BUSY_LOCK = Path("/run/dermgate/busy.lock")
UNIT = "dermgate"


class Busy(Exception):
    """The service stayed busy for the whole wait."""


@contextlib.contextmanager
def wait_idle(lock: Path, timeout: float) -> Iterator[None]:
    """Hold the busy lock exclusively; raise :class:`Busy` after ``timeout`` seconds.

    No lock folder means no service has run since boot: nothing is in flight.
    """
    if not lock.parent.is_dir():
        yield
        return
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise Busy(
                        f"the service stayed busy (captures or transfers in flight) "
                        f"for {timeout:g} s; try again later"
                    ) from None
                time.sleep(0.2)
        yield
    finally:
        os.close(fd)


@dataclass
class Systemctl:
    """The ``systemctl`` command (``--systemctl`` replaces it with a stand-in in tests)."""

    command: list[str] = field(default_factory=lambda: ["systemctl"])
    unit: str = UNIT

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """Run ``systemctl ARGS``; never raises for a non-zero exit."""
        try:
            return subprocess.run(
                [*self.command, *args],
                capture_output=True,
                text=True,
                check=False,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess([*self.command, *args], 124, "", "timed out")

    def restart(self) -> bool:
        """Restart the unit (after ``reset-failed``); whether systemctl said it worked."""
        self.run("reset-failed", self.unit)
        return self.run("restart", self.unit).returncode == 0

    def active(self) -> bool:
        """Whether the unit is active."""
        return self.run("is-active", self.unit).stdout.strip() == "active"

    def restarts(self) -> int | None:
        """The unit's ``NRestarts`` (None when systemctl does not say)."""
        out = self.run("show", "-p", "NRestarts", "--value", self.unit).stdout.strip()
        return int(out) if out.isdigit() else None

    @classmethod
    def parse(cls, text: str) -> Systemctl:
        """From a command line (``--systemctl "/path/fake-systemctl --flag"``)."""
        return cls(command=shlex.split(text))


@dataclass(frozen=True)
class GateSettings:
    """How long the gate waits and soaks, and the configuration it checks with."""

    config: Path
    soak: float = 60.0
    ready_timeout: float = 120.0
    check_timeout: float = 120.0


def health_check(release: Path, settings: GateSettings) -> str | None:
    """The release's own check against the box's configuration; None when it passes.

    ``dermgate check --config FILE --connect`` of the new release: the configuration,
    the box, and every peer it talks to (C-ECHO to each PACS, its QIDO-RS probe to each
    DICOMweb store, the service's own commitment listener, the worklist SCP, the MQTT
    broker); exit 0 when nothing fails (warnings allowed).
    """
    command = [
        str(release / "venv" / "bin" / "dermgate"),
        "check",
        "--config",
        str(settings.config),
        "--connect",
    ]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, check=False, timeout=settings.check_timeout
        )
    except subprocess.TimeoutExpired:
        return f"its check did not finish within {settings.check_timeout:g} s"
    except OSError as err:
        return f"its check could not run: {err.strerror}"
    if done.returncode != 0:
        failed = [line for line in done.stdout.splitlines() if line.startswith("FAIL")]
        said = f": {failed[0][:200]}" if failed else ""
        return f"its check failed (dermgate check --connect exit {done.returncode}){said}"
    return None


def gate_after_restart(release: Path, systemctl: Systemctl, settings: GateSettings) -> str | None:
    """Gate ``release`` once the service was restarted into it; None when it passed."""
    deadline = time.monotonic() + settings.ready_timeout
    while not systemctl.active():
        if time.monotonic() >= deadline:
            return f"the service was not active within {settings.ready_timeout:g} s"
        time.sleep(1.0)
    baseline = systemctl.restarts()
    failed = health_check(release, settings)
    if failed:
        return failed
    end = time.monotonic() + settings.soak
    while True:
        if not systemctl.active():
            return "the service stopped during the soak"
        if systemctl.restarts() != baseline:
            return "the service restarted during the soak"
        left = end - time.monotonic()
        if left <= 0:
            return None
        time.sleep(min(1.0, left))
