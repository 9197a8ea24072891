"""One supervisor owns every long-lived task of the gateway.

Stages start in order under one root :class:`asyncio.TaskGroup`: each stage is a
coroutine function taking a ``ready`` callback, and :meth:`Supervisor.start` returns
only once the stage called it (AnyIO's ``task_status.started()`` pattern), so a stage
never starts before the one it depends on is serving. Drivers run under
:meth:`Supervisor.start_restarting`: a crash is logged and the driver restarted with
jittered, capped backoff; it never takes the gateway down. :meth:`Supervisor.stop`
cancels the tasks in reverse start order: devices first (no new captures), then the
wrapping and forwarding stages, which finish or abandon their work safely.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from gateway.forward.schedule import Backoff

log = logging.getLogger(__name__)

Ready = Callable[[], None]
Stage = Callable[[Ready], Awaitable[None]]


class StartupError(RuntimeError):
    """A stage failed or did not report ready in time."""


class Supervisor:
    """Starts, restarts and stops the gateway's named tasks."""

    def __init__(self, group: asyncio.TaskGroup) -> None:
        self._group = group
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self, name: str, stage: Stage, *, timeout: float = 60.0) -> None:
        """Run ``stage`` as task ``name`` and wait until it reports ready."""
        ready = asyncio.Event()
        task = self._group.create_task(self._guard(name, stage(ready.set)), name=name)
        self._tasks.append(task)
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

    @staticmethod
    async def _guard(name: str, work: Awaitable[None]) -> None:
        try:
            await work
        except asyncio.CancelledError:
            raise
        except Exception:
            log.critical("%s failed; the gateway stops", name)
            raise

    def start_restarting(
        self,
        name: str,
        run: Callable[[], Awaitable[None]],
        *,
        initial: float = 1.0,
        cap: float = 60.0,
        healthy_after: float = 60.0,
    ) -> None:
        """Run ``run()`` as task ``name``; restart it with backoff whenever it fails.

        A run that lasted ``healthy_after`` seconds resets the backoff.
        """

        async def keep_running() -> None:
            backoff = Backoff(initial=initial, cap=cap)
            loop = asyncio.get_running_loop()
            while True:
                started = loop.time()
                try:
                    await run()
                    log.warning("%s returned; restarting it", name)
                except asyncio.CancelledError:
                    raise
                except Exception as err:
                    log.error("%s crashed (%s); restarting it", name, type(err).__name__)
                    log.debug("%s crash details", name, exc_info=True)
                if loop.time() - started >= healthy_after:
                    backoff.reset()
                await asyncio.sleep(backoff.next_delay())

        self._tasks.append(self._group.create_task(keep_running(), name=name))

    async def stop(self) -> None:
        """Cancel every task, newest first, waiting for each to finish."""
        for task in reversed(self._tasks):
            task.cancel()
            await asyncio.wait({task})
        self._tasks.clear()
