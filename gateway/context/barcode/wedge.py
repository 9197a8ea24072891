"""The keyboard-wedge decoder: key events in, scanned codes out (pure, no I/O).

A HID scanner "types" its code as a US keyboard would, then Enter. The decoder is
fed the device's input events (``evdev.InputEvent`` or anything with ``type``,
``code``, ``value`` and ``timestamp()``) and returns a :class:`ScanRead` when a code
ends. Rules:

* Only key-downs (value 1) make characters; repeats (2) and releases (0) are
  ignored, except that Shift (and Ctrl, Alt, Meta) are tracked down and up.
  Shift gives upper case and the shifted symbols; Caps Lock toggles letters' case.
  Keypad digits and operators count as the characters they show.
* Enter or keypad Enter ends a code; a lone Enter is nothing.
* Timing tells a scanner from a person: a scanner sends a character every few
  milliseconds, a person one every 150 ms or more. A code whose median gap between
  key-downs (Enter included) is over :data:`KEY_GAP` was typed, and is returned as
  :attr:`ReadKind.TYPED`, never as a code: a keyboard configured as the scanner, or
  a person typing into it, must not open a patient's session (the page has a form
  for typed patients).
* A key outside the table (Tab, Backspace, F-keys, a character with Ctrl or Alt
  held) makes the code :attr:`ReadKind.UNREADABLE`: a code missing a character
  could name another patient.
* ``SYN_DROPPED`` (the kernel lost events) makes the code being read unreadable.
* More than ``max_length`` characters: :attr:`ReadKind.TOO_LONG` (keys are still
  swallowed until Enter). Keys after a pause of more than :data:`PAUSE` start a new
  code; the abandoned one is :attr:`ReadKind.INCOMPLETE`, as is what
  :meth:`WedgeDecoder.flush` finds pending (the caller flushes after a quiet spell).

Key codes are Linux's (``linux/input-event-codes.h``, a stable ABI), so the decoder
does not import evdev; a unit test checks them against ``evdev.ecodes``.
"""

from __future__ import annotations

import statistics
from typing import Protocol

from gateway.context.barcode.read import MAX_CODE, ReadKind, ScanRead

__all__ = [
    "EV_KEY",
    "EV_SYN",
    "KEYS",
    "KEY_GAP",
    "PAUSE",
    "SYN_DROPPED",
    "KeyEvent",
    "WedgeDecoder",
]

KEY_GAP = 0.05
"""Seconds: a code whose median gap between key-downs is longer was typed by a person."""
PAUSE = 1.0
"""Seconds without a key after which pending characters are an abandoned code."""

EV_SYN, EV_KEY = 0, 1
SYN_DROPPED = 3
KEY_DOWN, KEY_UP = 1, 0

_ENTER, _KPENTER = 28, 96
_LEFTSHIFT, _RIGHTSHIFT = 42, 54
_CAPSLOCK, _NUMLOCK = 58, 69
_SHIFTS = frozenset({_LEFTSHIFT, _RIGHTSHIFT})
# Ctrl, Alt, Meta (left and right): a character typed while one is held is no character.
_OTHER_MODIFIERS = frozenset({29, 97, 56, 100, 125, 126})

# Main block: code -> (unshifted, shifted), US layout.
_ROWS = (
    (2, "1234567890-=", "!@#$%^&*()_+"),
    (16, "qwertyuiop[]", "QWERTYUIOP{}"),
    (30, "asdfghjkl;'`", 'ASDFGHJKL:"~'),
    (43, "\\zxcvbnm,./", "|ZXCVBNM<>?"),
)
KEYS: dict[int, tuple[str, str]] = {
    first + i: (plain, shifted)
    for first, plains, shifteds in _ROWS
    for i, (plain, shifted) in enumerate(zip(plains, shifteds, strict=True))
}
"""Key code → (character, character with Shift) on a US keyboard."""
KEYS[57] = (" ", " ")  # KEY_SPACE
_KEYPAD = {
    71: "7", 72: "8", 73: "9", 74: "-", 75: "4", 76: "5", 77: "6", 78: "+",
    79: "1", 80: "2", 81: "3", 82: "0", 83: ".", 55: "*", 98: "/", 117: "=", 121: ",",
}  # fmt: skip
KEYS.update({code: (char, char) for code, char in _KEYPAD.items()})

_UNKNOWN = "\ufffd"


class KeyEvent(Protocol):
    """An input event as python-evdev's ``InputEvent`` has it."""

    @property
    def type(self) -> int:
        """Event type (``EV_KEY`` = 1 for keys)."""
        ...

    @property
    def code(self) -> int:
        """Key code."""
        ...

    @property
    def value(self) -> int:
        """1 down, 0 up, 2 auto-repeat."""
        ...

    def timestamp(self) -> float:
        """Seconds (the kernel's time of the event)."""
        ...


class WedgeDecoder:
    """Turns one keyboard-wedge scanner's key events into reads (one per device)."""

    def __init__(
        self, *, max_length: int = MAX_CODE, key_gap: float = KEY_GAP, pause: float = PAUSE
    ) -> None:
        """A decoder with no key pending, Shift up and Caps Lock off."""
        self.max_length = max_length
        self.key_gap = key_gap
        self.pause = pause
        self._held: set[int] = set()
        self._caps = False
        self._chars: list[str] = []
        self._times: list[float] = []
        self._unknown = False

    @property
    def pending(self) -> bool:
        """Keys of a code not yet ended."""
        return bool(self._times)

    def feed(self, event: KeyEvent) -> ScanRead | None:
        """Take one event; the read it ends, if any (at most one per event)."""
        if event.type == EV_SYN and event.code == SYN_DROPPED:
            # The kernel's buffer overflowed: keys were lost, and with them perhaps a
            # Shift release. The code being read (or, between codes, the next one) is
            # missing characters.
            self._held.clear()
            self._unknown = True
            if len(self._chars) <= self.max_length:
                self._chars.append(_UNKNOWN)
            return None
        if event.type != EV_KEY:
            return None
        code, value = event.code, event.value
        if code in _SHIFTS or code in _OTHER_MODIFIERS:
            if value == KEY_DOWN:
                self._held.add(code)
            elif value == KEY_UP:
                self._held.discard(code)
            return None
        if value != KEY_DOWN:
            return None
        at = event.timestamp()
        abandoned = None
        if self._times and at - self._times[-1] > self.pause:
            abandoned = self.flush()
        if code in (_ENTER, _KPENTER):
            if not self._times:
                return abandoned
            self._times.append(at)
            return self._end()
        if code == _CAPSLOCK:
            self._caps = not self._caps
            return abandoned
        if code == _NUMLOCK:  # scanners in keypad mode assume Num Lock on
            return abandoned
        self._times.append(at)
        char = self._char(code)
        if char is None:
            self._unknown = True
            char = _UNKNOWN
        if len(self._chars) <= self.max_length:  # one more marks it too long
            self._chars.append(char)
        return abandoned

    def flush(self) -> ScanRead | None:
        """End the pending characters, if any, as an :attr:`ReadKind.INCOMPLETE` read."""
        if not self._times:
            return None
        text = "".join(self._chars[: self.max_length])
        self._reset()
        return ScanRead(ReadKind.INCOMPLETE, text)

    def _char(self, code: int) -> str | None:
        if self._held & _OTHER_MODIFIERS:
            return None
        pair = KEYS.get(code)
        if pair is None:
            return None
        shifted = bool(self._held & _SHIFTS)
        plain, upper = pair
        if self._caps and plain.isalpha():
            shifted = not shifted
        return upper if shifted else plain

    def _end(self) -> ScanRead:
        gaps = [b - a for a, b in zip(self._times, self._times[1:], strict=False)]
        if len(self._chars) > self.max_length:
            kind = ReadKind.TOO_LONG
        elif statistics.median(gaps) > self.key_gap:
            kind = ReadKind.TYPED
        elif self._unknown:
            kind = ReadKind.UNREADABLE
        else:
            kind = ReadKind.CODE
        text = "".join(self._chars[: self.max_length])
        self._reset()
        return ScanRead(kind, text)

    def _reset(self) -> None:
        self._chars.clear()
        self._times.clear()
        self._unknown = False
