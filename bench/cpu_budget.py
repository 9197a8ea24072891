"""Run a benchmark process on a Pi-class CPU budget: a fraction of one core.

A Raspberry Pi core is several times slower than this machine's, so a gateway that is
CPU-bound on the box can look wire-bound here. ``--cpu-budget 0.5`` confines a process
(and everything it starts) to half of one core with the cgroup v1 ``cpu`` controller:
a child folder of ``/sys/fs/cgroup/cpu/`` whose ``cpu.cfs_quota_us`` is the fraction
of ``cpu.cfs_period_us`` (100 ms), the process entering its ``tasks`` before it
``exec``\\s, the folder removed afterwards. Each measured process gets its own
folder, so the gateway and its DCMTK anchor each get the same budget, not a share of
one. This needs root and the v1 controller (as on these machines; there is no systemd
as PID 1 for ``systemd-run``); anywhere else :class:`CpuBudgetUnavailable` says why.

Usage::

    with cpu_budget(0.5, "gateway") as budget:
        proc = subprocess.Popen(cmd, preexec_fn=budget.preexec)
        ...
    print(budget.describe())
    # 0.5 of one core (cgroup v1 cpu, 50000/100000 us), throttled 123 times, 4.5 s

``cpu_budget(None, ...)`` is a budget that confines nothing, so callers need no branch.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["CpuBudget", "CpuBudgetUnavailable", "cpu_budget"]

CPU_ROOT = Path("/sys/fs/cgroup/cpu")


class CpuBudgetUnavailable(RuntimeError):
    """The machine cannot confine a process to a CPU budget (says what is missing)."""


@dataclass
class CpuBudget:
    """One cgroup (or none) that processes started with :meth:`preexec` run in."""

    fraction: float | None
    folder: Path | None = None
    period_us: int = 100_000
    throttled: tuple[int, float] = field(default=(0, 0.0))

    def preexec(self) -> None:
        """For ``subprocess.Popen(preexec_fn=...)``: the child enters the budget before exec."""
        if self.folder is not None:
            with open(self.folder / "tasks", "w", encoding="ascii") as tasks:
                tasks.write(str(os.getpid()))

    def add(self, pid: int) -> None:
        """Put an already running process (not its existing threads' siblings) in the budget."""
        if self.folder is not None:
            (self.folder / "tasks").write_text(str(pid), encoding="ascii")

    def read_throttling(self) -> tuple[int, float]:
        """How often and for how long (seconds) the budget held its processes back."""
        if self.folder is None:
            return (0, 0.0)
        stat: dict[str, int] = {}
        with contextlib.suppress(OSError, ValueError):
            for line in (self.folder / "cpu.stat").read_text(encoding="ascii").splitlines():
                key, value = line.split()
                stat[key] = int(value)
        return (stat.get("nr_throttled", 0), stat.get("throttled_time", 0) / 1e9)

    def describe(self) -> str:
        """One line: the budget, and how much it throttled."""
        if self.fraction is None:
            return "no CPU budget (every core the machine gives)"
        quota = round(self.fraction * self.period_us)
        times, seconds = self.throttled
        return (
            f"{self.fraction:g} of one core (cgroup v1 cpu, {quota}/{self.period_us} us), "
            f"throttled {times} times, {seconds:.1f} s"
        )


def _check_available() -> None:
    if os.geteuid() != 0:
        raise CpuBudgetUnavailable("--cpu-budget needs root (it writes to /sys/fs/cgroup/cpu)")
    if not (CPU_ROOT / "cpu.cfs_quota_us").is_file():
        raise CpuBudgetUnavailable(
            f"--cpu-budget needs the cgroup v1 cpu controller at {CPU_ROOT} "
            "(cpu.cfs_quota_us not found; cgroup v2-only machines are not supported)"
        )


@contextlib.contextmanager
def cpu_budget(fraction: float | None, name: str) -> Iterator[CpuBudget]:
    """A CPU budget of ``fraction`` of one core for the processes started inside it.

    Leaving the block records the throttling figures, moves any process still inside
    back to the root group and removes the folder.
    """
    if fraction is None:
        yield CpuBudget(None)
        return
    if not 0.01 <= fraction <= 64:
        raise CpuBudgetUnavailable(
            f"--cpu-budget {fraction:g}: give a fraction of one core, e.g. 0.5"
        )
    _check_available()
    folder = CPU_ROOT / f"dermgate-bench-{name}-{os.getpid()}"
    folder.mkdir()
    try:
        period = int((folder / "cpu.cfs_period_us").read_text(encoding="ascii"))
        (folder / "cpu.cfs_quota_us").write_text(str(round(fraction * period)), encoding="ascii")
        budget = CpuBudget(fraction, folder, period)
        yield budget
        budget.throttled = budget.read_throttling()
    finally:
        _remove(folder)


def _remove(folder: Path) -> None:
    """Move whatever still runs in ``folder`` to the root group, then remove it."""
    for _ in range(50):
        with contextlib.suppress(OSError):
            for pid in (folder / "tasks").read_text(encoding="ascii").split():
                with contextlib.suppress(OSError):
                    (CPU_ROOT / "tasks").write_text(pid, encoding="ascii")
        try:
            folder.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.1)
    folder.rmdir()
