"""The gateway side of one running driver: the :class:`DeviceHost` it is given.

:class:`DriverHost` passes captures on to intake and records what the supervisor
needs to judge the driver:

- *progress*: the loop time of the driver's last sign of life (a capture begun, a
  chunk written, a commit, an abort, a change of state). A driver that says
  TRANSFERRING and shows no progress for ``hang_timeout`` seconds is hung.
- *open captures*: sinks begun and neither committed nor aborted. When a driver run
  ends (crash, hang, device gone, gateway stopping) :meth:`DriverHost.abort_open`
  aborts them, so a partial capture never lingers in staging. A sink whose commit
  had started is left alone: its commit decides (nothing was acknowledged before
  it returned, so nothing acknowledged can be lost either way).

State changes go to the :class:`StatusBoard` and are logged once per change.
QUARANTINED is the gateway's verdict, never a driver's: a driver reporting it is
recorded as ERROR.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from gateway.core.capture import DEFAULT_MAX_CAPTURE_BYTES, CaptureOffer, DeviceIdentity
from gateway.devices.contract import CaptureReceipt, CaptureSink, DriverState
from gateway.devices.status import StatusBoard

log = logging.getLogger(__name__)

BeginCapture = Callable[[DeviceIdentity, CaptureOffer], Awaitable[CaptureSink]]


def _loop_time() -> float:
    try:
        return asyncio.get_running_loop().time()
    except RuntimeError:
        return 0.0


class _TrackedSink:
    """A sink that reports progress to its host and leaves the open set when done."""

    def __init__(self, host: DriverHost, sink: CaptureSink) -> None:
        self._host = host
        self._sink = sink
        self.committing = False

    async def write(self, chunk: bytes) -> None:
        """Append ``chunk`` to the capture."""
        self._host.touch()
        await self._sink.write(chunk)
        self._host.touch()

    async def commit(
        self, *, length: int, sha256: str, offer: CaptureOffer | None = None
    ) -> CaptureReceipt:
        """Make the capture durable (see :class:`CaptureSink`)."""
        self.committing = True
        self._host.touch()
        try:
            return await self._sink.commit(length=length, sha256=sha256, offer=offer)
        finally:
            self._host.touch()
            self._host.open_sinks.discard(self)

    async def abort(self, reason: str) -> None:
        """Discard whatever was written."""
        self._host.open_sinks.discard(self)
        self._host.touch()
        await self._sink.abort(reason)


class DriverHost:
    """The host API one driver instance sees (and what the supervisor watches)."""

    def __init__(
        self,
        device_name: str,
        begin: BeginCapture,
        board: StatusBoard | None = None,
        max_capture_bytes: int = DEFAULT_MAX_CAPTURE_BYTES,
    ) -> None:
        self.device_name = device_name
        #: ``[spool] max_capture_mb`` in bytes, for drivers that know sizes beforehand
        self.max_capture_bytes = max_capture_bytes
        self._begin = begin
        self._board = board
        self.state = DriverState.DISCONNECTED
        self.detail = ""
        self.last_progress = _loop_time()
        self.open_sinks: set[_TrackedSink] = set()

    def touch(self) -> None:
        """Record a sign of life of the driver."""
        self.last_progress = _loop_time()

    async def begin_capture(self, identity: DeviceIdentity, offer: CaptureOffer) -> CaptureSink:
        """Start receiving a capture announced by the device."""
        self.touch()
        sink = _TrackedSink(self, await self._begin(identity, offer))
        self.open_sinks.add(sink)
        self.touch()
        return sink

    def set_state(self, state: DriverState, detail: str = "") -> None:
        """Record the driver's state; log only changes."""
        if state == DriverState.QUARANTINED:
            state, detail = DriverState.ERROR, detail or "driver reported QUARANTINED"
        self.record(state, detail)

    def record(self, state: DriverState, detail: str = "") -> None:
        """Set the state (the supervisor uses this for ERROR and QUARANTINED)."""
        if state == self.state and detail == self.detail:
            return
        log.info("device %s: %s%s", self.device_name, state, f" ({detail})" if detail else "")
        self.state = state
        self.detail = detail
        self.touch()
        if self._board is not None:
            self._board.update(self.device_name, state=state, detail=detail)

    def hung_for(self, now: float) -> float | None:
        """Seconds without progress while TRANSFERRING; None in any other state.

        None too while a commit is under way: that is the spool making the capture
        durable (an fsync of a gigabyte stack on a slow SD card can take minutes), not
        the driver hanging, and cancelling it would only make the device send it again.
        """
        if self.state != DriverState.TRANSFERRING:
            return None
        if any(sink.committing for sink in self.open_sinks):
            return None
        return now - self.last_progress

    def new_run(self) -> None:
        """A driver run starts: progress counts from now."""
        self.touch()

    async def abort_open(self, reason: str) -> int:
        """Abort the captures this driver left open; return how many there were."""
        left = [sink for sink in self.open_sinks if not sink.committing]
        self.open_sinks.clear()
        for sink in left:
            with contextlib.suppress(Exception):
                await sink.abort(reason)
        return len(left)
