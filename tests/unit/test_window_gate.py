"""The forwarder's window gate with an injected clock: waiting is shown, not failed;
"send now" holds until the backlog is sent or a window opens; the wait ends exactly
when the window opens; the stuck clock counts window time only."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from gateway.core.capture import CaptureOffer, InstanceUIDs
from gateway.core.uids import new_uid
from gateway.core.windows import SendWindows
from gateway.forward.window_gate import WindowGate
from gateway.spool import ledger as db
from gateway.spool.deliveries import record_sent
from gateway.spool.ledger import Ledger
from gateway.spool.send_now import SendNowStore, pending_destinations
from tests.support.dicom_files import DEVICE

BERLIN = ZoneInfo("Europe/Berlin")


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=BERLIN).timestamp()


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _wrapped(path: Path, count: int) -> list[int]:
    """``count`` WRAPPED captures pending for "pacs" (no attempts)."""
    conn = db.open_ledger(path)
    ids = []
    for n in range(count):
        uids = InstanceUIDs(new_uid(), new_uid(), new_uid())
        spool_id = db.insert_capture(
            conn,
            driver="d",
            device=DEVICE,
            offer=CaptureOffer(f"{n}"),
            uids=uids,
            raw_name=f"{uids.sop_instance}.raw",
            raw_size=3,
            raw_sha256="0" * 64,
        )
        db.mark_wrapped(
            conn,
            spool_id,
            dicom_name=f"{uids.sop_instance}.dcm",
            sop_class_uid="1.2",
            transfer_syntax_uid="1.2.840.10008.1.2.4.50",
            destinations=["pacs"],
            now=0,
        )
        ids.append(spool_id)
    assert {i: ["pacs"] for i in ids} == pending_destinations(conn)
    conn.close()
    return ids


def test_closed_window_waits_send_now_sends_until_the_backlog_is_gone(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    ids = _wrapped(path, 2)
    store = SendNowStore(tmp_path)
    clock = Clock(at("2026-03-10T12:00"))

    async def scenario() -> None:
        ledger = Ledger(path)
        ledger.start()
        try:
            gate = WindowGate("pacs", SendWindows(["19:00-07:00"], BERLIN), store, ledger, clock)
            assert not await gate.allows()
            shown = gate.status(pending=2)
            assert shown["waiting_for_window"] is True
            assert shown["window_open"] is False
            assert shown["send_now"] is False
            assert shown["send_windows"] == ["19:00-07:00"]
            opens = datetime.fromisoformat(shown["next_window"]).astimezone(BERLIN)
            assert opens.isoformat() == "2026-03-10T19:00:00+01:00"
            assert gate.status(pending=0)["waiting_for_window"] is False  # nothing waits

            store.request("pacs", "tech")
            assert await gate.allows()
            assert gate.status(pending=2) | {"next_window": None} == {
                "send_windows": ["19:00-07:00"],
                "window_open": False,
                "next_window": None,
                "waiting_for_window": False,
                "send_now": True,
            }
            for spool_id in ids:  # the backlog goes out
                await ledger.call(record_sent, spool_id, "pacs")
            assert not await gate.allows(), "once nothing waits, the windows rule again"
            assert store.get("pacs") is None
            assert gate.status(pending=0)["send_now"] is False
        finally:
            ledger.close()

    asyncio.run(scenario())


def test_an_opening_window_ends_send_now(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    _wrapped(path, 1)
    store = SendNowStore(tmp_path)
    clock = Clock(at("2026-03-10T18:00"))

    async def scenario() -> None:
        ledger = Ledger(path)
        ledger.start()
        try:
            gate = WindowGate("pacs", SendWindows(["19:00-07:00"], BERLIN), store, ledger, clock)
            store.request("pacs", "tech")
            assert await gate.allows()
            clock.now = at("2026-03-10T19:00")
            assert await gate.allows()
            assert store.get("pacs") is None, "a window opened: the override is over"
            clock.now = at("2026-03-11T07:00")
            assert not await gate.allows(), "next morning it waits again"
        finally:
            ledger.close()

    asyncio.run(scenario())


def test_the_wait_ends_when_the_window_opens_or_on_a_poke(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    _wrapped(path, 1)
    opening = at("2026-03-10T19:00")
    clock = Clock(opening - 0.4)  # the window opens in 0.4 s of real time

    async def scenario() -> tuple[float, float]:
        ledger = Ledger(path)
        ledger.start()
        try:
            gate = WindowGate(
                "pacs", SendWindows(["19:00-07:00"], BERLIN), SendNowStore(tmp_path), ledger, clock
            )
            wanted = asyncio.Event()
            start = time.monotonic()
            await gate.wait(wanted)
            slept = time.monotonic() - start
            wanted.set()  # a poke before the wait: it returns at once and is consumed
            start = time.monotonic()
            await gate.wait(wanted)
            poked = time.monotonic() - start
            assert not wanted.is_set()
            return slept, poked
        finally:
            ledger.close()

    slept, poked = asyncio.run(scenario())
    assert slept >= 0.39, "not before the window opens"
    assert poked < slept


def test_the_stuck_clock_runs_only_inside_the_windows(tmp_path: Path) -> None:
    clock = Clock(at("2026-03-11T15:00"))
    gate = WindowGate(
        "pacs",
        SendWindows(["19:00-07:00"], BERLIN),
        SendNowStore(tmp_path),
        Ledger(tmp_path / "unused.sqlite3"),
        clock,
    )
    # Arrived at 08:00 this morning: 7 h ago, but none of it in a window.
    assert gate.stuck_cutoff(3600).astimezone(BERLIN).isoformat() == "2026-03-11T06:00:00+01:00"
    always = WindowGate(
        "pacs", SendWindows([], BERLIN), SendNowStore(tmp_path), Ledger(tmp_path / "u2"), clock
    )
    assert always.stuck_cutoff(3600).timestamp() == clock.now - 3600
