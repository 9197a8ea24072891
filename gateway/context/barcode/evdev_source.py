"""Keyboard-wedge scanners: the event device, read with python-evdev, grabbed.

:func:`evdev_events` opens the configured ``/dev/input/by-id/…-event-kbd``,
``grab()``s it (EVIOCGRAB: the scanner's keys reach no console, no login prompt and
no other program) and yields its input events as they come, read by a reader on the
device's file descriptor (so a cancelled wait loses none). When the device goes
away (unplugged: ENODEV) or cannot be opened or grabbed (absent, no permission,
grabbed by someone else), it retries with a capped backoff and logs the change
once, not every retry. Closing the device releases the grab.

Anything that yields :class:`~gateway.context.barcode.wedge.KeyEvent` can stand in
for it (:data:`KeyEventSource`): the stage's tests feed synthetic events, since a
development machine has no ``/dev/input`` (and no ``/dev/uinput`` to make one).
evdev is imported when a device is first opened: it builds only on Linux.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

from gateway.context.barcode.presence import Presence, reason
from gateway.context.barcode.read import ScanRead
from gateway.context.barcode.wedge import KeyEvent, WedgeDecoder
from gateway.core.backoff import Backoff

if TYPE_CHECKING:
    import evdev

__all__ = ["QUIET", "KeyEventSource", "evdev_events", "wedge_reads"]

KeyEventSource = Callable[[str, str], AsyncIterator[KeyEvent]]
"""``(device path, scanner label)`` → the scanner's key events, for ever."""

QUIET = 1.0
"""Seconds without a key after which pending keys are reported as incomplete."""


def _open(path: str) -> evdev.InputDevice[str]:
    import evdev  # Linux only: imported when a wedge scanner is configured

    device = evdev.InputDevice(path)
    try:
        device.grab()
    except OSError:
        device.close()
        raise
    return device


async def evdev_events(
    path: str, label: str, *, initial: float = 0.5, cap: float = 10.0
) -> AsyncIterator[KeyEvent]:
    """The input events of the event device at ``path``, grabbed, for ever
    (reconnecting; cancel to stop)."""
    presence = Presence(label, path)
    backoff = Backoff(initial=initial, cap=cap)
    while True:
        try:
            device = await asyncio.to_thread(_open, path)
        except OSError as err:
            presence.away(reason(err))
            await asyncio.sleep(backoff.next_delay())
            continue
        presence.here()
        backoff.reset()
        try:
            async for event in _events(device):
                yield event
        except OSError as err:
            presence.away(reason(err))
        finally:
            device.close()
        await asyncio.sleep(backoff.next_delay())


async def _events(device: evdev.InputDevice[str]) -> AsyncIterator[KeyEvent]:
    """Events from an open device until it fails (the OSError is raised)."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[KeyEvent | OSError] = asyncio.Queue()
    fd = device.fd

    def readable() -> None:
        try:
            for event in list(device.read()):
                queue.put_nowait(event)
        except BlockingIOError:
            return
        except OSError as err:
            loop.remove_reader(fd)
            queue.put_nowait(err)

    loop.add_reader(fd, readable)
    try:
        while True:
            item = await queue.get()
            if isinstance(item, OSError):
                raise item
            yield item
    finally:
        with contextlib.suppress(ValueError, OSError):
            loop.remove_reader(fd)


async def wedge_reads(
    events: AsyncIterator[KeyEvent], decoder: WedgeDecoder, quiet: float = QUIET
) -> AsyncIterator[ScanRead]:
    """The reads ``decoder`` makes of ``events``, plus an incomplete read when keys
    are left pending for ``quiet`` seconds (a scanner set up without its Enter
    suffix shows on the page instead of vanishing). Ends when ``events`` ends."""
    loop = asyncio.get_running_loop()
    reads: asyncio.Queue[ScanRead | None] = asyncio.Queue()
    last = loop.time()

    async def pump() -> None:
        nonlocal last
        try:
            async for event in events:
                last = loop.time()
                read = decoder.feed(event)
                if read is not None:
                    reads.put_nowait(read)
        finally:
            reads.put_nowait(None)

    task = asyncio.create_task(pump(), name="barcode-keys")
    try:
        while True:
            try:
                async with asyncio.timeout(quiet):
                    item = await reads.get()
            except TimeoutError:
                if decoder.pending and loop.time() - last >= quiet:
                    flushed = decoder.flush()
                    if flushed is not None:
                        yield flushed
                continue
            if item is None:
                break
            yield item
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
