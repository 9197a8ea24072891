"""One supervisor owns every long-lived task of the gateway.

Stages start in order under one root :class:`asyncio.TaskGroup`: each stage is a
coroutine function taking a ``ready`` callback, and :meth:`Supervisor.start` returns
only once the stage called it (AnyIO's ``task_status.started()`` pattern), so a stage
never starts before the one it depends on is serving. A stage that fails stops the
gateway: stages are the gateway's own code. Its cause (type and message, e.g. "is
[gateway] listen_port in use?") is logged once, when it fails, as a
:class:`StageFailed`; the service's last line (:func:`stop_reason`) names the stage.

Drivers are plugins and run under :meth:`Supervisor.start_driver`, which never lets
one take the gateway down:

- a driver that raises (or returns: a driver serves until cancelled) has *crashed*;
- a driver that reports TRANSFERRING and shows no progress (see
  :class:`gateway.devices.host.DriverHost`) for ``hang_timeout`` seconds is *hung*:
  it is cancelled (its ``finally`` blocks run) and that counts as a crash;
- after a crash the captures the run left open are aborted (never acknowledged, so
  the device still holds them) and the driver is built anew and restarted after a
  jittered delay that doubles from ``initial`` up to ``cap`` (a run that lasted
  ``cap`` seconds starts the doubling again);
- ``quarantine_after`` crashes within ``quarantine_window`` seconds: the driver is
  stopped for good, its state is QUARANTINED, one ERROR line is logged, and every
  other task runs on. A restart of the gateway (or, for a hotplug device,
  unplugging and plugging it in again) gives it a fresh start.

:meth:`Supervisor.stop` cancels the tasks in reverse start order: devices first (no
new captures), then the wrapping and forwarding stages, which finish or abandon
their work safely.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from gateway.core.backoff import backoff_delay
from gateway.devices.contract import DriverState
from gateway.devices.host import DriverHost
from gateway.devices.status import StatusBoard

log = logging.getLogger(__name__)

Ready = Callable[[], None]
Stage = Callable[[Ready], Awaitable[None]]
Sleep = Callable[[float], Awaitable[None]]

#: A driver that ignores cancellation this long is abandoned (and logged).
CANCEL_GRACE = 30.0
#: A stage still stopping after this long is named in the log (once).
SLOW_STOP = 5.0


class StartupError(RuntimeError):
    """A stage failed or did not report ready in time."""


class StageFailed(RuntimeError):
    """A stage of the gateway raised: the gateway stops. ``__cause__`` is the error."""

    def __init__(self, stage: str, cause: BaseException) -> None:
        super().__init__(f"{stage} failed: {describe_error(cause)}")
        self.stage = stage


def describe_error(err: BaseException) -> str:
    """``Type: message`` of an error (the first one of an exception group)."""
    while isinstance(err, BaseExceptionGroup) and err.exceptions:
        err = err.exceptions[0]
    text = str(err)
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def stop_reason(err: BaseException) -> str:
    """Why the gateway stopped on ``err``, for the service's last log line: the failed
    stage (its cause was logged when it failed), else the error itself."""
    while isinstance(err, BaseExceptionGroup) and err.exceptions:
        err = err.exceptions[0]
    if isinstance(err, StartupError) and isinstance(err.__cause__, StageFailed):
        err = err.__cause__
    if isinstance(err, StageFailed):
        return f"the {err.stage} stage failed (cause logged above)"
    return describe_error(err)


class DriverHung(Exception):
    """A driver stayed TRANSFERRING without progress past its deadline."""


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """How a driver is restarted and when it is quarantined (``[supervision]``)."""

    initial: float = 1.0
    cap: float = 60.0
    quarantine_after: int = 5
    quarantine_window: float = 600.0
    hang_timeout: float = 120.0


class DriverTask:
    """A supervised driver; :meth:`stop` ends it cleanly (e.g. its device went)."""

    def __init__(self, supervisor: Supervisor, name: str, host: DriverHost) -> None:
        self.name = name
        self.host = host
        self.stop_detail = "gateway stopped"
        self._supervisor = supervisor
        self.task: asyncio.Task[None] | None = None

    async def stop(self, detail: str) -> None:
        """Cancel the driver, wait until its cleanup ran, and show ``detail``."""
        self.stop_detail = detail
        if self.task is None:
            return
        self.task.cancel()
        await asyncio.wait({self.task})
        self._supervisor.forget(self.task)


class Supervisor:
    """Starts, restarts and stops the gateway's named tasks."""

    def __init__(
        self,
        group: asyncio.TaskGroup,
        *,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self._group = group
        self._tasks: list[asyncio.Task[None]] = []
        self._stages: list[asyncio.Task[None]] = []
        self._stopping = False
        self._sleep = sleep
        self._rng = rng or random.Random()

    async def start(self, name: str, stage: Stage, *, timeout: float = 60.0) -> None:
        """Run ``stage`` as task ``name`` and wait until it reports ready."""
        ready = asyncio.Event()
        task = self._group.create_task(self._guard(name, stage(ready.set)), name=name)
        self._tasks.append(task)
        self._stages.append(task)
        waiter = asyncio.ensure_future(ready.wait())
        try:
            await asyncio.wait({task, waiter}, timeout=timeout, return_when="FIRST_COMPLETED")
        finally:
            waiter.cancel()
        if not ready.is_set():
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise StartupError(f"{name} failed to start") from task.exception()
            raise StartupError(f"{name} did not become ready within {timeout:.0f} s")
        log.debug("%s ready", name)

    def healthy(self) -> bool:
        """True while every stage started with :meth:`start` is still running (a stage
        serves until cancelled: one that ended is dead). Drivers do not count: a
        crashed one is restarted, a quarantined one is an alarm, not a dead gateway."""
        return all(not task.done() for task in self._stages)

    def dead_stages(self) -> list[str]:
        """The names of the stages that have ended (see :meth:`healthy`)."""
        return [task.get_name() for task in self._stages if task.done()]

    async def _guard(self, name: str, work: Awaitable[None]) -> None:
        try:
            await work
            if not self._stopping:  # a stage serves until cancelled: see healthy()
                log.error("the %s stage has ended on its own; the gateway is not whole", name)
        except asyncio.CancelledError:
            raise
        except Exception as err:
            failed = StageFailed(name, err)
            log.critical("the gateway stops: %s", failed)
            log.debug("%s: traceback", name, exc_info=True)
            raise failed from err

    def start_driver(
        self,
        name: str,
        run: Callable[[], Awaitable[None]],
        host: DriverHost,
        board: StatusBoard | None,
        policy: RestartPolicy,
    ) -> DriverTask:
        """Run ``run()`` (a fresh driver each time) as task ``device:name``, supervised."""
        handle = DriverTask(self, name, host)
        work = self._keep_running(handle, run, board, policy)
        handle.task = self._group.create_task(work, name=f"device:{name}")
        self._tasks.append(handle.task)
        return handle

    def forget(self, task: asyncio.Task[None]) -> None:
        """Drop a finished task from the stop list."""
        if task in self._tasks:
            self._tasks.remove(task)

    async def _keep_running(
        self,
        handle: DriverTask,
        run: Callable[[], Awaitable[None]],
        board: StatusBoard | None,
        policy: RestartPolicy,
    ) -> None:
        loop = asyncio.get_running_loop()
        name, host = handle.name, handle.host
        crashes: collections.deque[float] = collections.deque()
        failures = 0
        restarts = board.get(name).restarts if board is not None else 0

        def show(**changes: object) -> None:
            if board is not None:
                board.update(name, **changes)

        try:
            while True:
                started = loop.time()
                host.new_run()
                show(running=True)
                try:
                    await self._run_watched(run, host, policy.hang_timeout)
                    crash = "returned"
                    log.error("device %s: driver returned (it must serve until stopped)", name)
                except DriverHung:
                    crash = "hang"
                    log.error(
                        "device %s: driver hung (TRANSFERRING, no progress for %.0f s); cancelled",
                        name,
                        policy.hang_timeout,
                    )
                except Exception as err:
                    crash = type(err).__name__
                    log.error("device %s: driver crashed (%s)", name, crash)
                    log.debug("device %s: crash details", name, exc_info=True)
                finally:
                    left = await host.abort_open("driver stopped")
                    if left:
                        log.info("device %s: %d unfinished capture(s) discarded", name, left)
                now = loop.time()
                if now - started >= policy.cap:
                    failures = 0
                failures += 1
                crashes.append(now)
                while crashes and crashes[0] <= now - policy.quarantine_window:
                    crashes.popleft()
                if len(crashes) >= policy.quarantine_after:
                    host.record(
                        DriverState.QUARANTINED,
                        f"stopped after {len(crashes)} crashes within "
                        f"{policy.quarantine_window:.0f} s (last: {crash}); "
                        "restart the gateway to try again",
                    )
                    show(running=False, last_crash=crash)
                    log.error(
                        "device %s: QUARANTINED after %d crashes within %.0f s; "
                        "the other devices run on",
                        name,
                        len(crashes),
                        policy.quarantine_window,
                    )
                    return
                delay = backoff_delay(
                    failures, initial=policy.initial, cap=policy.cap, rng=self._rng
                )
                restarts += 1
                what = "hung" if crash == "hang" else f"crashed ({crash})"
                host.record(DriverState.ERROR, f"driver {what}; restarting in {delay:.1f} s")
                show(running=False, last_crash=crash, restarts=restarts)
                await self._sleep(delay)
        except asyncio.CancelledError:
            if host.state != DriverState.QUARANTINED:
                host.record(DriverState.DISCONNECTED, handle.stop_detail)
            show(devnode=None)
            raise
        finally:
            show(running=False)

    @staticmethod
    async def _run_watched(
        run: Callable[[], Awaitable[None]], host: DriverHost, hang_timeout: float
    ) -> None:
        """Await ``run()``; cancel it and raise :class:`DriverHung` if it hangs."""

        async def call() -> None:
            await run()

        loop = asyncio.get_running_loop()
        inner = asyncio.create_task(call())
        interval = min(1.0, hang_timeout / 4)
        try:
            while True:
                done, _ = await asyncio.wait({inner}, timeout=interval)
                if done:
                    if inner.cancelled():
                        raise RuntimeError("driver cancelled itself")
                    inner.result()
                    return
                idle = host.hung_for(loop.time())
                if idle is not None and idle >= hang_timeout:
                    raise DriverHung(f"no progress for {idle:.0f} s")
        finally:
            if not inner.done():
                inner.cancel()
                done, _ = await asyncio.wait({inner}, timeout=CANCEL_GRACE)
                if not done:
                    log.error("device %s: driver ignores cancellation", host.device_name)
            elif not inner.cancelled():
                inner.exception()  # retrieved: never "exception was never retrieved"

    async def stop(self) -> None:
        """Cancel every task, newest first, waiting for each to finish."""
        self._stopping = True
        for task in reversed(self._tasks):
            task.cancel()
            done, _ = await asyncio.wait({task}, timeout=SLOW_STOP)
            if not done:
                log.warning("%s is slow to stop; still waiting for it", task.get_name())
                await asyncio.wait({task})
        self._tasks.clear()
        self._stages.clear()
