"""The keyboard-wedge decoder, fed the input events a US-layout HID scanner makes.

The events are python-evdev's own ``InputEvent`` values (there is no /dev/input or
/dev/uinput on a development machine to make real ones); what the decoder gets is
exactly what ``InputDevice.read()`` would hand it.
"""

from __future__ import annotations

import pytest
from evdev import InputEvent, ecodes
from hypothesis import given
from hypothesis import strategies as st

from gateway.context.barcode.read import MAX_CODE, ReadKind, ScanRead
from gateway.context.barcode.wedge import EV_KEY, EV_SYN, KEYS, SYN_DROPPED, WedgeDecoder
from tests.support.barcode import PERSON_GAP, Keyboard


def decode(events: list[InputEvent], decoder: WedgeDecoder | None = None) -> list[ScanRead]:
    decoder = decoder or WedgeDecoder()
    return [read for event in events if (read := decoder.feed(event)) is not None]


def test_the_key_table_is_linux_us_layout() -> None:
    names = {
        "KEY_1": ("1", "!"),
        "KEY_0": ("0", ")"),
        "KEY_MINUS": ("-", "_"),
        "KEY_EQUAL": ("=", "+"),
        "KEY_Q": ("q", "Q"),
        "KEY_P": ("p", "P"),
        "KEY_RIGHTBRACE": ("]", "}"),
        "KEY_A": ("a", "A"),
        "KEY_GRAVE": ("`", "~"),
        "KEY_BACKSLASH": ("\\", "|"),
        "KEY_Z": ("z", "Z"),
        "KEY_SLASH": ("/", "?"),
        "KEY_SPACE": (" ", " "),
        "KEY_KP0": ("0", "0"),
        "KEY_KP7": ("7", "7"),
        "KEY_KPMINUS": ("-", "-"),
        "KEY_KPSLASH": ("/", "/"),
        "KEY_KPASTERISK": ("*", "*"),
    }
    for name, pair in names.items():
        assert KEYS[ecodes.ecodes[name]] == pair, name
    assert (EV_KEY, EV_SYN, SYN_DROPPED) == (ecodes.EV_KEY, ecodes.EV_SYN, ecodes.SYN_DROPPED)
    assert len(KEYS) == 48 + 17  # the main block, space, the keypad


@pytest.mark.parametrize(
    "code", ["PID0001", "ACC-2026/0042_x", "a1!@#$%^&*()_+{}|:\"<>?~`-=[]\\;',./ Z", "0"]
)
def test_scanner_speed_codes_decode_exactly(code: str) -> None:
    assert decode(Keyboard().type(code)) == [ScanRead(ReadKind.CODE, code)]


def test_keypad_enter_ends_a_code_and_keypad_digits_count() -> None:
    kb = Keyboard()
    events = kb.press(ecodes.KEY_KP4) + kb.press(ecodes.KEY_KP2) + kb.press(ecodes.KEY_KPENTER)
    events += kb.type("X9", enter=ecodes.KEY_KPENTER)
    assert [(r.kind, r.text) for r in decode(events)] == [
        (ReadKind.CODE, "42"),
        (ReadKind.CODE, "X9"),
    ]


def test_one_decoder_reads_code_after_code() -> None:
    kb = Keyboard()
    events = kb.type("PID0001") + kb.type("ACC-2026/0042_x") + kb.type("PID0002")
    assert [r.text for r in decode(events)] == ["PID0001", "ACC-2026/0042_x", "PID0002"]


def test_a_code_typed_by_a_person_is_flagged_not_accepted() -> None:
    reads = decode(Keyboard().type("PID0001", gap=PERSON_GAP))
    assert reads == [ScanRead(ReadKind.TYPED, "PID0001")]


def test_one_slow_key_in_a_scan_is_still_a_scan() -> None:
    kb = Keyboard()
    events = kb.type("PID0", enter=None)
    kb.wait(0.3)  # the USB host stalled once
    events += kb.type("001")
    assert decode(events) == [ScanRead(ReadKind.CODE, "PID0001")]


def test_repeats_and_releases_add_nothing_and_shift_is_tracked() -> None:
    kb = Keyboard()
    events = kb.press(ecodes.KEY_P, shift=True, hold=5) + kb.press(ecodes.KEY_I)
    events += kb.press(ecodes.KEY_ENTER, hold=3)
    assert decode(events) == [ScanRead(ReadKind.CODE, "Pi")]


def test_caps_lock_toggles_letters_not_symbols() -> None:
    kb = Keyboard()
    events = kb.press(ecodes.KEY_CAPSLOCK) + kb.type("ab-1", enter=None)
    events += kb.press(ecodes.KEY_A, shift=True) + kb.press(ecodes.KEY_ENTER)
    assert decode(events) == [ScanRead(ReadKind.CODE, "AB-1a")]


def test_a_lone_enter_is_nothing() -> None:
    kb = Keyboard()
    assert decode(kb.press(ecodes.KEY_ENTER) + kb.press(ecodes.KEY_KPENTER)) == []


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        (["KEY_TAB"], "PID\ufffd01"),
        (["KEY_F5"], "PID\ufffd01"),
        (["KEY_BACKSPACE"], "PID\ufffd01"),
    ],
)
def test_a_code_with_an_unknown_key_is_unreadable(keys: list[str], expected: str) -> None:
    kb = Keyboard()
    events = kb.type("PID", enter=None)
    for name in keys:
        events += kb.press(ecodes.ecodes[name])
    events += kb.type("01")
    assert decode(events) == [ScanRead(ReadKind.UNREADABLE, expected)]


def test_events_the_kernel_dropped_make_the_code_unreadable() -> None:
    kb = Keyboard()
    events = kb.type("PID", enter=None)
    events.append(InputEvent(int(kb.now), 0, ecodes.EV_KEY, ecodes.KEY_LEFTSHIFT, 1))
    events.append(InputEvent(int(kb.now), 0, ecodes.EV_SYN, ecodes.SYN_DROPPED, 0))
    # ... the Shift release was among the lost events
    events += kb.type("001") + kb.type("PID0002")
    assert decode(events) == [
        ScanRead(ReadKind.UNREADABLE, "PID\ufffd001"),
        ScanRead(ReadKind.CODE, "PID0002"),
    ]


def test_a_character_with_ctrl_held_is_unreadable() -> None:
    kb = Keyboard()
    events = kb.type("AB", enter=None)
    events.append(InputEvent(int(kb.now), 0, ecodes.EV_KEY, ecodes.KEY_LEFTCTRL, 1))
    events += kb.press(ecodes.KEY_RIGHTBRACE)  # Ctrl+] = GS, as GS1 scanners send
    events.append(InputEvent(int(kb.now), 0, ecodes.EV_KEY, ecodes.KEY_LEFTCTRL, 0))
    events += kb.type("CD")
    assert decode(events) == [ScanRead(ReadKind.UNREADABLE, "AB\ufffdCD")]


def test_a_code_over_the_cap_is_dropped_and_the_next_one_reads() -> None:
    kb = Keyboard()
    events = kb.type("9" * (MAX_CODE + 50)) + kb.type("PID0001")
    reads = decode(events)
    assert [r.kind for r in reads] == [ReadKind.TOO_LONG, ReadKind.CODE]
    assert reads[0].text == "9" * MAX_CODE
    assert reads[1].text == "PID0001"


def test_a_code_of_exactly_the_cap_reads() -> None:
    assert decode(Keyboard().type("7" * MAX_CODE)) == [ScanRead(ReadKind.CODE, "7" * MAX_CODE)]


def test_keys_left_without_enter_are_incomplete() -> None:
    kb = Keyboard()
    decoder = WedgeDecoder()
    events = kb.type("PID00", enter=None)
    kb.wait(5)  # a scanner set up without its Enter suffix, then the next scan
    events += kb.type("PID0002")
    reads = decode(events, decoder)
    assert reads == [ScanRead(ReadKind.INCOMPLETE, "PID00"), ScanRead(ReadKind.CODE, "PID0002")]
    assert not decoder.pending
    decode(kb.type("PI", enter=None), decoder)
    assert decoder.pending
    assert decoder.flush() == ScanRead(ReadKind.INCOMPLETE, "PI")
    assert decoder.flush() is None


def test_other_event_types_are_ignored() -> None:
    events = [
        InputEvent(1, 0, ecodes.EV_LED, ecodes.LED_NUML, 1),
        InputEvent(1, 0, ecodes.EV_MSC, ecodes.MSC_SCAN, 458792),
        InputEvent(1, 0, ecodes.EV_SYN, ecodes.SYN_REPORT, 0),
        InputEvent(1, 0, ecodes.EV_REL, ecodes.REL_X, 5),
    ]
    decoder = WedgeDecoder()
    assert decode(events, decoder) == []
    assert not decoder.pending


def test_a_read_does_not_show_its_text_in_repr() -> None:
    (read,) = decode(Keyboard().type("PID0001"))
    assert "PID0001" not in repr(read)


@given(
    st.lists(
        st.tuples(
            st.integers(0, 0x20),
            st.integers(-5, 0x300),
            st.integers(-3, 3),
            st.floats(0, 3, allow_nan=False),
        ),
        max_size=400,
    )
)
def test_garbage_never_crashes_and_stays_bounded(
    raw: list[tuple[int, int, int, float]],
) -> None:
    decoder = WedgeDecoder(max_length=16)
    now = 1_780_000_000.0
    for type_, code, value, gap in raw:
        now += gap
        sec = int(now)
        read = decoder.feed(InputEvent(sec, int((now - sec) * 1e6), type_, code, value))
        if read is not None:
            assert len(read.text) <= 16
            assert read.kind in ReadKind
    flushed = decoder.flush()
    assert flushed is None or flushed.kind is ReadKind.INCOMPLETE
