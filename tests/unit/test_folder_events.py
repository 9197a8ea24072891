"""FolderEvents: the kernel's word that a writer closed a file in a drop folder.

Real files in a real folder, written by this process as a copy tool would; the
events come from the kernel (inotify), nothing is simulated.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.driver_api import FolderEvents


@pytest.fixture
async def watched(tmp_path: Path) -> AsyncIterator[tuple[Path, FolderEvents]]:
    events = FolderEvents.open(tmp_path)
    assert events is not None, "inotify is available on Linux"
    yield tmp_path, events
    events.close()


async def settle_events(events: FolderEvents) -> None:
    """Let the event loop read what the kernel has queued."""
    for _ in range(5):
        await asyncio.sleep(0.02)


async def test_a_file_still_being_written_is_not_closed_until_its_writer_closes_it(
    watched: tuple[Path, FolderEvents],
) -> None:
    folder, events = watched
    with open(folder / "IMG_0001.JPG", "wb") as fh:
        fh.write(b"half a photo")
        fh.flush()
        await settle_events(events)
        assert events.closed_at("IMG_0001.JPG") is None, "open for writing: not complete"
        fh.write(b" and the rest")
    waiting = asyncio.get_running_loop().time()
    await events.wait(10)
    assert asyncio.get_running_loop().time() - waiting < 5, "the close wakes the waiter"
    assert events.closed_at("IMG_0001.JPG") is not None


async def test_a_write_after_the_close_makes_the_file_wait_again(
    watched: tuple[Path, FolderEvents],
) -> None:
    folder, events = watched
    photo = folder / "IMG_0002.JPG"
    photo.write_bytes(b"first part")
    await settle_events(events)
    assert events.closed_at(photo.name) is not None
    with open(photo, "ab") as fh:  # the copy tool opens it again
        fh.write(b"second part")
        fh.flush()
        await settle_events(events)
        assert events.closed_at(photo.name) is None, "written since the close"
    await settle_events(events)
    assert events.closed_at(photo.name) is not None, "closed again"
    os.utime(photo, (0, 0))  # cp -p sets the times after the close: not a write
    await settle_events(events)
    assert events.closed_at(photo.name) is not None
    photo.unlink()
    await settle_events(events)
    assert events.closed_at(photo.name) is None, "a removed file is forgotten"


async def test_a_finished_file_renamed_into_the_folder_counts_as_closed(
    watched: tuple[Path, FolderEvents],
) -> None:
    folder, events = watched
    outside = folder.parent / f"{folder.name}-tmp"
    outside.mkdir()
    (outside / "IMG_0003.JPG").write_bytes(b"a whole photo")
    await settle_events(events)
    assert events.closed_at("IMG_0003.JPG") is None
    os.rename(outside / "IMG_0003.JPG", folder / "IMG_0003.JPG")
    await events.wait(10)
    assert events.closed_at("IMG_0003.JPG") is not None


async def test_a_folder_that_goes_away_is_reported_lost(tmp_path: Path) -> None:
    folder = tmp_path / "share"
    folder.mkdir()
    events = FolderEvents.open(folder)
    assert events is not None
    try:
        (folder / "IMG_0004.JPG").write_bytes(b"x")
        await settle_events(events)
        (folder / "IMG_0004.JPG").unlink()
        await events.wait(0)  # the close of the write above
        folder.rmdir()
        await events.wait(10)
        assert events.lost, "the driver then opens a new watch (or looks alone decide)"
    finally:
        events.close()
