"""Supervision of drivers, in process: backoff, quarantine, hangs.

The drivers are the test plugins of tests/plugins/dermgate-testdriver (found through
the entry-point group like any third-party driver) and the intake is the real one,
on a real spool and ledger in a temporary folder. A "fast clock" here is the
supervisor's injected sleep: it records each restart delay and returns at once.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from gateway.devices.contract import DriverState
from gateway.devices.host import DriverHost
from gateway.devices.registry import find_driver
from gateway.devices.status import StatusBoard
from gateway.intake import Intake
from gateway.service.supervise import RestartPolicy, Supervisor
from gateway.spool.dirs import SpoolDirs
from gateway.spool.ledger import Ledger


@pytest.fixture
async def intake(tmp_path: Path) -> AsyncIterator[Intake]:
    """The real intake on a fresh spool."""
    dirs = SpoolDirs(tmp_path / "spool")
    dirs.create()
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    ledger.start()
    yield Intake(ledger, dirs, lambda: None)
    ledger.close()


def driver_run(
    driver_id: str, options: dict[str, object], host: DriverHost, runs: list[int]
) -> Callable[[], Awaitable[None]]:
    """A run() that builds a fresh instance of the plugin driver each time."""
    factory = find_driver(driver_id)
    validated = factory.Options.model_validate(options)

    async def run() -> None:
        runs.append(1)
        await factory(validated, host, host.device_name).run()

    return run


async def supervise_until_done(
    intake: Intake,
    board: StatusBoard,
    driver_id: str,
    options: dict[str, object],
    policy: RestartPolicy,
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    rng: random.Random | None = None,
    timeout: float = 30.0,
) -> list[int]:
    """Run one supervised driver until the supervisor gives up on it."""
    board.add("dev", driver_id)
    host = DriverHost("dev", functools.partial(intake.begin, driver_id), board)
    runs: list[int] = []
    async with asyncio.TaskGroup() as group:
        supervisor = Supervisor(group, sleep=sleep, rng=rng)
        handle = supervisor.start_driver(
            "dev", driver_run(driver_id, options, host, runs), host, board, policy
        )
        assert handle.task is not None
        async with asyncio.timeout(timeout):
            await asyncio.wait({handle.task})
    return runs


async def test_backoff_is_jittered_doubling_and_capped(intake: Intake, tmp_path: Path) -> None:
    delays: list[float] = []

    async def fast_sleep(seconds: float) -> None:
        delays.append(seconds)
        await asyncio.sleep(0)

    board = StatusBoard(None)
    policy = RestartPolicy(initial=1.0, cap=8.0, quarantine_after=40, quarantine_window=3600)
    runs = await supervise_until_done(
        intake,
        board,
        "test-crasher",
        {"crash_after": 0},
        policy,
        sleep=fast_sleep,
        rng=random.Random(7),
    )
    assert len(runs) == 40, "restarted after every crash until quarantined"
    assert len(delays) == 39
    for failures, delay in enumerate(delays, start=1):
        base = min(8.0, 2.0 ** (failures - 1))
        assert base / 2 <= delay <= base, (failures, delay)
    assert max(delays) <= 8.0, "capped at restart_max"
    capped = delays[4:]
    assert len({round(d, 6) for d in capped}) > len(capped) // 2, "jittered, not lockstep"
    status = board.get("dev")
    assert status.state == DriverState.QUARANTINED
    assert status.restarts == 39
    assert status.last_crash == "RuntimeError"
    assert not status.running


async def test_quarantine_after_k_crashes_is_logged_once_and_written(
    intake: Intake, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "status" / "devices.json"
    board = StatusBoard(path)
    policy = RestartPolicy(initial=0.01, cap=0.02, quarantine_after=3, quarantine_window=60)
    caplog.set_level(logging.INFO)
    async with asyncio.TaskGroup() as group:
        writer = group.create_task(board.run(lambda: None))
        runs = await supervise_until_done(
            intake, board, "test-crasher", {"crash_after": 0.01}, policy
        )
        await asyncio.sleep(0.1)
        writer.cancel()
    assert len(runs) == 3
    quarantined = [r for r in caplog.records if "QUARANTINED after" in r.getMessage()]
    assert len(quarantined) == 1
    assert quarantined[0].levelno == logging.ERROR
    document = json.loads(path.read_text())
    assert document["version"] == 1
    (device,) = document["devices"]
    assert device["name"] == "dev"
    assert device["driver"] == "test-crasher"
    assert device["state"] == "QUARANTINED"
    assert device["running"] is False
    assert device["restarts"] == 2
    assert device["last_crash"] == "RuntimeError"
    assert "restart the gateway" in device["detail"]


async def test_crashes_spread_over_more_than_the_window_never_quarantine(
    intake: Intake,
) -> None:
    board = StatusBoard(None)
    policy = RestartPolicy(initial=0.3, cap=0.3, quarantine_after=2, quarantine_window=0.1)
    board.add("dev", "test-crasher")
    host = DriverHost("dev", functools.partial(intake.begin, "test-crasher"), board)
    runs: list[int] = []
    async with asyncio.TaskGroup() as group:
        supervisor = Supervisor(group)
        handle = supervisor.start_driver(
            "dev", driver_run("test-crasher", {"crash_after": 0}, host, runs), host, board, policy
        )
        await asyncio.sleep(1.2)
        assert board.get("dev").state != DriverState.QUARANTINED
        assert len(runs) >= 3, "restarted again and again"
        await handle.stop("test over")
    assert board.get("dev").state == DriverState.DISCONNECTED
    assert board.get("dev").detail == "test over"


async def test_hung_driver_is_cancelled_restarted_and_its_partial_capture_aborted(
    intake: Intake, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    board = StatusBoard(None)
    policy = RestartPolicy(
        initial=0.05, cap=0.1, quarantine_after=3, quarantine_window=60, hang_timeout=0.4
    )
    loop = asyncio.get_running_loop()
    started = loop.time()
    runs = await supervise_until_done(intake, board, "test-hanger", {"chunk": 1000}, policy)
    elapsed = loop.time() - started
    assert len(runs) == 3, "each hang cancelled the driver and started a fresh one"
    assert elapsed >= 3 * 0.4, "a driver is only called hung after hang_timeout"
    hung = [
        r
        for r in caplog.records
        if r.name == "gateway.service.supervise" and "driver hung" in r.getMessage()
    ]
    assert len(hung) == 3
    status = board.get("dev")
    assert status.last_crash == "hang"
    assert status.state == DriverState.QUARANTINED
    assert list(intake.dirs.staging.iterdir()) == [], "every partial capture was aborted"
    assert list(intake.dirs.raw.iterdir()) == []
    assert list(intake.dirs.dicom.iterdir()) == []


async def test_a_driver_making_progress_is_not_hung(intake: Intake) -> None:
    """TRANSFERRING for longer than hang_timeout is fine while bytes keep arriving."""
    board = StatusBoard(None)
    board.add("dev", "slow")
    host = DriverHost("dev", functools.partial(intake.begin, "slow"), board)
    policy = RestartPolicy(hang_timeout=0.3)
    from dermgate_testdriver.drivers import IDENTITY

    from gateway.core.capture import CaptureOffer

    async def slow_transfer() -> None:
        sink = await host.begin_capture(IDENTITY, CaptureOffer(device_capture_id="slow-1"))
        host.set_state(DriverState.TRANSFERRING)
        for _ in range(12):
            await asyncio.sleep(0.1)
            await sink.write(b"x" * 100)
        await sink.abort("test over")
        host.set_state(DriverState.READY)
        await asyncio.Event().wait()

    async with asyncio.TaskGroup() as group:
        supervisor = Supervisor(group)
        handle = supervisor.start_driver("dev", slow_transfer, host, board, policy)
        await asyncio.sleep(1.6)
        assert board.get("dev").restarts == 0
        assert board.get("dev").state == DriverState.READY
        await handle.stop("test over")


async def test_stopping_a_driver_mid_transfer_aborts_its_partial_capture(intake: Intake) -> None:
    """A hotplug device going away (or the gateway stopping) cancels the driver: its
    unfinished capture is discarded (never acknowledged) and status says why."""
    board = StatusBoard(None)
    board.add("dev", "test-hanger")
    host = DriverHost("dev", functools.partial(intake.begin, "test-hanger"), board)
    runs: list[int] = []
    async with asyncio.TaskGroup() as group:
        supervisor = Supervisor(group)
        handle = supervisor.start_driver(
            "dev", driver_run("test-hanger", {}, host, runs), host, board, RestartPolicy()
        )
        while host.state != DriverState.TRANSFERRING:
            await asyncio.sleep(0.01)
        assert len(list(intake.dirs.staging.iterdir())) == 1, "a partial capture is open"
        await handle.stop("device removed")
    assert list(intake.dirs.staging.iterdir()) == []
    status = board.get("dev")
    assert (status.state, status.detail, status.running) == (
        DriverState.DISCONNECTED,
        "device removed",
        False,
    )
    assert status.restarts == 0
    assert runs == [1]
