"""Synthetic keyboard-wedge input: the key events a HID scanner (or a person) makes.

A development machine has no ``/dev/input`` and no ``/dev/uinput``, so tests build
python-evdev's own ``InputEvent`` values as the kernel would deliver them from a US
keyboard: for each character Shift down if needed, key down, EV_SYN, key up, Shift up,
EV_SYN. The character table is written here from ``evdev.ecodes`` names, not taken
from the decoder, so the decoder's own table is what is tested.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable

import pytest
from evdev import InputEvent, ecodes

SCANNER_GAP = 0.004
"""Seconds between characters from a scanner."""
PERSON_GAP = 0.18
"""Seconds between characters from a person typing."""

_SYMBOLS = {
    "-": ("KEY_MINUS", False),
    "_": ("KEY_MINUS", True),
    "=": ("KEY_EQUAL", False),
    "+": ("KEY_EQUAL", True),
    "/": ("KEY_SLASH", False),
    "?": ("KEY_SLASH", True),
    ".": ("KEY_DOT", False),
    ">": ("KEY_DOT", True),
    ",": ("KEY_COMMA", False),
    "<": ("KEY_COMMA", True),
    ";": ("KEY_SEMICOLON", False),
    ":": ("KEY_SEMICOLON", True),
    "'": ("KEY_APOSTROPHE", False),
    '"': ("KEY_APOSTROPHE", True),
    "[": ("KEY_LEFTBRACE", False),
    "{": ("KEY_LEFTBRACE", True),
    "]": ("KEY_RIGHTBRACE", False),
    "}": ("KEY_RIGHTBRACE", True),
    "\\": ("KEY_BACKSLASH", False),
    "|": ("KEY_BACKSLASH", True),
    "`": ("KEY_GRAVE", False),
    "~": ("KEY_GRAVE", True),
    " ": ("KEY_SPACE", False),
    **{s: (f"KEY_{d}", True) for s, d in zip("!@#$%^&*()", "1234567890", strict=True)},
}


def key_for(char: str) -> tuple[int, bool]:
    """(key code, Shift needed) of ``char`` on a US keyboard."""
    if char.isdigit():
        return ecodes.ecodes[f"KEY_{char}"], False
    if char.isalpha() and char.isascii():
        return ecodes.ecodes[f"KEY_{char.upper()}"], char.isupper()
    name, shift = _SYMBOLS[char]
    return ecodes.ecodes[name], shift


class Keyboard:
    """Makes the events of keys pressed from ``start`` on, with a clock of its own."""

    def __init__(self, start: float = 1_780_000_000.0) -> None:
        self.now = start

    def _event(self, type_: int, code: int, value: int) -> InputEvent:
        sec = int(self.now)
        return InputEvent(sec, round((self.now - sec) * 1_000_000), type_, code, value)

    def _syn(self) -> InputEvent:
        return self._event(ecodes.EV_SYN, ecodes.SYN_REPORT, 0)

    def press(self, code: int, *, shift: bool = False, hold: int = 0) -> list[InputEvent]:
        """One key stroke (with Shift around it; ``hold`` auto-repeats while down)."""
        events: list[InputEvent] = []
        if shift:
            events += [self._event(ecodes.EV_KEY, ecodes.KEY_LEFTSHIFT, 1), self._syn()]
        events += [
            self._event(ecodes.EV_MSC, ecodes.MSC_SCAN, 0x70000 + code),
            self._event(ecodes.EV_KEY, code, 1),
            self._syn(),
        ]
        events += [self._event(ecodes.EV_KEY, code, 2) for _ in range(hold)]
        events += [self._event(ecodes.EV_KEY, code, 0), self._syn()]
        if shift:
            events += [self._event(ecodes.EV_KEY, ecodes.KEY_LEFTSHIFT, 0), self._syn()]
        return events

    def type(
        self, text: str, gap: float = SCANNER_GAP, *, enter: int | None = ecodes.KEY_ENTER
    ) -> list[InputEvent]:
        """``text`` typed at ``gap`` seconds a character, then ``enter`` (None: none)."""
        events: list[InputEvent] = []
        for char in text:
            code, shift = key_for(char)
            events += self.press(code, shift=shift)
            self.now += gap
        if enter is not None:
            events += self.press(enter)
            self.now += gap
        return events

    def wait(self, seconds: float) -> None:
        """Let time pass with no key."""
        self.now += seconds


async def key_source(batches: Iterable[list[InputEvent]]) -> AsyncIterator[InputEvent]:
    """An event source (as :func:`gateway.context.barcode.evdev_source.evdev_events`)
    yielding ``batches`` of events, letting the loop run between batches."""
    for batch in batches:
        for event in batch:
            yield event
        await asyncio.sleep(0)


async def scanner_connected(
    caplog: pytest.LogCaptureFixture, label: str, times: int = 1, timeout: float = 10
) -> None:
    """Wait until ``label``'s scanner has been logged as connected ``times`` times
    (the port is open and its input flushed: what is written now is read)."""

    def count() -> int:
        return sum(
            1
            for r in caplog.records
            if r.name == "dermgate.barcodes"
            and r.getMessage().startswith(f"{label}: scanner connected")
        )

    async with asyncio.timeout(timeout):
        while count() < times:
            await asyncio.sleep(0.02)
