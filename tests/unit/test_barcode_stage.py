"""The barcode stage: scans open the configured device's session on the context desk.

The context stage (the real :class:`~gateway.context.desk.ContextDesk`) is written in
parallel; until it is on main these tests drive the barcode stage against a small
recording desk that implements the one desk method the stage calls. Scanners are
real where they can be: a serial scanner over a pty, a keyboard wedge as synthetic
python-evdev events (no /dev/input here).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import pytest
from evdev import InputEvent

from drivers.serial_dermatoscope.pty_link import PtyLink
from gateway.context.barcode.evdev_source import KeyEventSource
from gateway.context.barcode.read import ReadKind, ScanRead
from gateway.context.barcode.stage import BarcodeStage, ScanOutcome, match_code
from gateway.context.barcode.wedge import KeyEvent
from gateway.context.desk import (
    Actor,
    ContextError,
    ContextErrorCode,
    Scanned,
    SessionRequest,
    SessionView,
)
from gateway.core.capture import PatientContext
from gateway.core.config.context import BarcodeSettings
from gateway.core.context import SessionSource
from gateway.core.events import EventBus
from tests.support.barcode import PERSON_GAP, Keyboard, key_source, scanner_connected

PATIENT = r"^(?P<patient_id>PID\d{4})$"
ACCESSION = r"^(?P<accession_number>ACC-\d{4}/\d{4}_x)$"
REFUSED = "ACC-0000/0000_x"
BROKEN = "PID6666"


class RecordingDesk:
    """A stand-in for the context stage: records open_session calls, refuses one code."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, SessionRequest, Actor]] = []

    async def open_session(self, device: str, request: SessionRequest, actor: Actor) -> SessionView:
        self.calls.append((device, request, actor))
        if isinstance(request, Scanned) and request.accession_number == REFUSED:
            raise ContextError(ContextErrorCode.NO_SUCH_ITEM, "no worklist item has it")
        if isinstance(request, Scanned) and request.patient_id == BROKEN:
            raise RuntimeError(f"a bug that quotes {BROKEN}")
        patient_id = request.patient_id if isinstance(request, Scanned) else None
        return SessionView(
            id=len(self.calls),
            device=device,
            source=SessionSource.BARCODE,
            patient=PatientContext(patient_id=patient_id or "X"),
            study_uid="1.2.3",
            accession_number="",
            procedure="",
            opened_at="2026-12-06T10:00:00+00:00",
            opened_by=actor.label,
            operator_name="",
            closed_at=None,
            lesion=None,
            sensitive=False,
            captures=0,
        )


class Started:
    """Runs a stage; stops it on exit."""

    def __init__(self, stage: BarcodeStage) -> None:
        self.stage = stage
        self.ready = asyncio.Event()

    async def __aenter__(self) -> Started:
        self.task = asyncio.create_task(self.stage.run(self.ready.set))
        async with asyncio.timeout(5):
            await self.ready.wait()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task

    async def notices(self, count: int, timeout: float = 10) -> None:
        async with asyncio.timeout(timeout):
            while len(self.stage.recent()) < count:
                await asyncio.sleep(0.02)


def wedge(batches: Iterable[list[InputEvent]]) -> KeyEventSource:
    def source(path: str, label: str) -> AsyncIterator[KeyEvent]:
        assert path == "/dev/input/by-id/usb-Scanner-event-kbd"
        assert label == "barcodes[0]"
        return key_source(batches)

    return source


async def test_scans_open_sessions_and_everything_else_is_a_notice(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    kb = Keyboard()
    batches = [kb.type("PID0001"), kb.type("PID0002", gap=PERSON_GAP)]
    link = PtyLink(tmp_path / "ttyACM1")
    link.open()
    scanners = [
        BarcodeSettings(
            device="/dev/input/by-id/usb-Scanner-event-kbd",
            for_device="dermatoscope",
            pattern=PATIENT,
        ),
        BarcodeSettings(port=str(link.path), for_device="confocal", pattern=ACCESSION),
    ]
    desk, bus = RecordingDesk(), EventBus()
    events = bus.subscribe()
    stage = BarcodeStage(scanners, desk, bus, key_events=wedge(batches))
    try:
        async with Started(stage) as running:
            await running.notices(2)  # the wedge's two
            await scanner_connected(caplog, "barcodes[1]")  # input is flushed at open
            assert link.master is not None
            os.write(link.master, b"ACC-2026/0042_x\r\nhello\r\n" + REFUSED.encode() + b"\r\n")
            await running.notices(5)
    finally:
        link.close()

    assert desk.calls == [
        ("dermatoscope", Scanned(patient_id="PID0001"), Actor("barcode", "barcodes[0]")),
        ("confocal", Scanned(accession_number="ACC-2026/0042_x"), Actor("barcode", "barcodes[1]")),
        ("confocal", Scanned(accession_number=REFUSED), Actor("barcode", "barcodes[1]")),
    ]
    seen = [
        (n.scanner, n.device, n.outcome, n.text, n.session_id, n.error)
        for n in reversed(stage.recent())
    ]
    assert seen == [
        ("barcodes[0]", "dermatoscope", ScanOutcome.MATCHED, "PID0001", 1, None),
        ("barcodes[0]", "dermatoscope", ScanOutcome.TYPED, "PID0002", None, None),
        ("barcodes[1]", "confocal", ScanOutcome.MATCHED, "ACC-2026/0042_x", 2, None),
        ("barcodes[1]", "confocal", ScanOutcome.NO_MATCH, "hello", None, None),
        (
            "barcodes[1]",
            "confocal",
            ScanOutcome.REFUSED,
            REFUSED,
            None,
            ContextErrorCode.NO_SUCH_ITEM,
        ),
    ]
    assert stage.recent()[0].message == "no worklist item has it"

    published = []
    while len(events):
        published.append((await events.get())[1])
    assert [(e["kind"], e["scanner"], e["outcome"]) for e in published] == [
        ("barcode_scanned", "barcodes[0]", "matched"),
        ("barcode_scanned", "barcodes[0]", "typed"),
        ("barcode_scanned", "barcodes[1]", "matched"),
        ("barcode_scanned", "barcodes[1]", "no_match"),
        ("barcode_scanned", "barcodes[1]", "refused"),
    ]
    said = json.dumps(published) + "\n".join(r.getMessage() for r in caplog.records)
    for code in ("PID0001", "PID0002", "ACC-2026", "hello", REFUSED):
        assert code not in said
    assert "PID0001" not in repr(stage.recent())


async def test_the_notice_list_is_bounded_newest_first() -> None:
    kb = Keyboard()
    batches = [kb.type(f"X{n}") for n in range(10)]
    scanner = BarcodeSettings(
        device="/dev/input/by-id/usb-Scanner-event-kbd", for_device="dermatoscope", pattern=PATIENT
    )
    desk = RecordingDesk()
    stage = BarcodeStage([scanner], desk, key_events=wedge(batches), keep=3)
    async with Started(stage) as running, asyncio.timeout(10):
        await running.task  # the source ran out: the stage is done
    assert [n.text for n in stage.recent()] == ["X9", "X8", "X7"]
    assert all(n.outcome is ScanOutcome.NO_MATCH for n in stage.recent())
    assert desk.calls == []


async def test_reads_that_are_not_codes_never_reach_the_desk() -> None:
    scanner = BarcodeSettings(port="/dev/ttyACM9", for_device="d", pattern=r"(?P<patient_id>.+)")
    desk = RecordingDesk()
    stage = BarcodeStage([scanner], desk)
    for kind in (ReadKind.TYPED, ReadKind.TOO_LONG, ReadKind.UNREADABLE, ReadKind.INCOMPLETE):
        notice = await stage.take(0, ScanRead(kind, "PID0001"))
        assert notice.outcome == kind.value
    assert desk.calls == []
    notice = await stage.take(0, ScanRead(ReadKind.CODE, "PID0001"))
    assert notice.outcome is ScanOutcome.MATCHED
    assert len(desk.calls) == 1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("P123456", Scanned(patient_id="123456")),
        ("A99", Scanned(accession_number="99")),
        ("P123456 ", None),  # the whole code must match
        ("xP123456", None),
        ("P", None),  # an empty group names nobody
    ],
)
def test_the_whole_code_must_match_and_name_one_thing(text: str, expected: Scanned | None) -> None:
    pattern = re.compile(r"P(?P<patient_id>\d*)|A(?P<accession_number>\d+)")
    assert match_code(pattern, text) == expected


async def test_a_failing_desk_refuses_the_scan_and_the_scanner_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    kb = Keyboard()
    batches = [kb.type(BROKEN), kb.type("PID0001")]
    scanner = BarcodeSettings(
        device="/dev/input/by-id/usb-Scanner-event-kbd", for_device="dermatoscope", pattern=PATIENT
    )
    stage = BarcodeStage([scanner], RecordingDesk(), key_events=wedge(batches))
    async with Started(stage) as running, asyncio.timeout(10):
        await running.task
    failed, matched = reversed(stage.recent())
    assert (failed.outcome, failed.error) == (ScanOutcome.REFUSED, None)
    assert "internal error" in failed.message
    assert matched.outcome is ScanOutcome.MATCHED
    assert "barcodes[0]: opening a session failed: RuntimeError" in caplog.text
    assert BROKEN not in caplog.text
