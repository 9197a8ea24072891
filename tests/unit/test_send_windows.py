"""Send windows: parsing, midnight, several windows, DST, and the stuck clock."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from gateway.core.config import DicomDestination
from gateway.core.windows import SendWindows, parse_window

BERLIN = ZoneInfo("Europe/Berlin")


def at(text: str, tz: ZoneInfo = BERLIN) -> float:
    """Epoch of a local wall time in ``tz`` (first occurrence)."""
    return datetime.fromisoformat(text).replace(tzinfo=tz).timestamp()


def local(epoch: float | None, tz: ZoneInfo = BERLIN) -> str:
    assert epoch is not None
    return datetime.fromtimestamp(epoch, tz).isoformat(timespec="minutes")


# ------------------------------------------------------------------ parsing


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("19:00", 'write it as "HH:MM-HH:MM"'),
        ("7:00-19:00", 'write it as "HH:MM-HH:MM"'),
        ("", 'write it as "HH:MM-HH:MM"'),
        ("24:00-07:00", "24:00 is not a time of day"),
        ("19:60-07:00", "19:60 is not a time of day"),
        ("19:00-19:00", "start and end are the same; for no limit leave send_windows empty"),
    ],
)
def test_bad_windows_are_refused_with_a_plain_message(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_window(text)


def test_config_refuses_a_bad_window_and_normalises_good_ones() -> None:
    base = {"kind": "dicom", "name": "pacs", "ae_title": "PACS", "host": "h", "port": 104}
    dest = DicomDestination.model_validate(
        {**base, "send_windows": [" 19:00 - 07:00", "12:00-13:30"]}
    )
    assert dest.send_windows == ["19:00-07:00", "12:00-13:30"]
    assert dest.max_mbps == 0
    with pytest.raises(ValidationError, match="start and end are the same"):
        DicomDestination.model_validate({**base, "send_windows": ["08:00-08:00"]})
    with pytest.raises(ValidationError, match="greater than or equal to 0"):
        DicomDestination.model_validate({**base, "max_mbps": -1})
    with pytest.raises(ValidationError, match=r"0 \(no limit\) or at least 0\.1"):
        DicomDestination.model_validate({**base, "max_mbps": 0.05})


# ------------------------------------------------------------------ matching


def test_no_windows_is_always_open() -> None:
    w = SendWindows([], BERLIN)
    now = at("2026-03-10T12:00")
    assert w.always
    assert w.is_open(now)
    assert w.next_open(now) is None
    assert w.open_since(now, 3600) == now - 3600


def test_a_window_crossing_midnight() -> None:
    w = SendWindows(["19:00-07:00"], BERLIN)
    assert not w.is_open(at("2026-03-10T18:59"))
    assert w.is_open(at("2026-03-10T19:00"))
    assert w.is_open(at("2026-03-10T23:59"))
    assert w.is_open(at("2026-03-11T00:00"))
    assert w.is_open(at("2026-03-11T06:59"))
    assert not w.is_open(at("2026-03-11T07:00"))  # the end is not in the window
    assert local(w.next_open(at("2026-03-11T07:00"))) == "2026-03-11T19:00+01:00"
    assert local(w.next_open(at("2026-03-10T12:00"))) == "2026-03-10T19:00+01:00"
    assert local(w.closes_at(at("2026-03-10T23:00"))) == "2026-03-11T07:00+01:00"
    assert local(w.closes_at(at("2026-03-11T03:00"))) == "2026-03-11T07:00+01:00"
    assert w.closes_at(at("2026-03-11T12:00")) is None


def test_midnight_as_an_end() -> None:
    w = SendWindows(["22:00-00:00"], BERLIN)
    assert w.is_open(at("2026-03-10T23:59"))
    assert not w.is_open(at("2026-03-11T00:00"))


def test_several_windows_and_overlaps() -> None:
    w = SendWindows(["12:00-13:30", "19:00-07:00", "06:00-08:00"], BERLIN)
    assert w.is_open(at("2026-03-10T12:30"))
    assert not w.is_open(at("2026-03-10T13:30"))
    assert local(w.next_open(at("2026-03-10T13:30"))) == "2026-03-10T19:00+01:00"
    assert local(w.next_open(at("2026-03-10T09:00"))) == "2026-03-10T12:00+01:00"
    # 19:00-07:00 and 06:00-08:00 overlap: open until 08:00
    assert local(w.closes_at(at("2026-03-10T22:00"))) == "2026-03-11T08:00+01:00"
    assert w.is_open(at("2026-03-11T07:30"))


def test_the_night_the_clocks_go_forward() -> None:
    # Europe/Berlin: 2026-03-29 02:00 CET → 03:00 CEST.
    w = SendWindows(["19:00-07:00"], BERLIN)
    opens, closes = at("2026-03-28T19:00"), at("2026-03-29T07:00")
    assert closes - opens == 11 * 3600  # an hour shorter that night
    assert w.is_open(at("2026-03-29T06:59"))
    assert not w.is_open(at("2026-03-29T07:00"))
    assert local(w.next_open(at("2026-03-29T07:00"))) == "2026-03-29T19:00+02:00"
    # A window starting in the skipped hour opens as many minutes after the jump.
    gap = SendWindows(["02:30-05:00"], BERLIN)
    assert local(gap.next_open(at("2026-03-29T00:00"))) == "2026-03-29T03:30+02:00"
    assert not gap.is_open(at("2026-03-29T03:29"))
    assert gap.is_open(at("2026-03-29T03:30"))
    # A window wholly in the skipped hour moves with it, an hour later.
    moved = SendWindows(["02:10-02:50"], BERLIN)
    assert local(moved.next_open(at("2026-03-29T00:00"))) == "2026-03-29T03:10+02:00"
    assert local(moved.closes_at(at("2026-03-29T03:10"))) == "2026-03-29T03:50+02:00"
    # One that would end (03:00) before it starts (02:30 read as 03:30) is skipped.
    lost = SendWindows(["02:30-03:00"], BERLIN)
    assert local(lost.next_open(at("2026-03-29T00:00"))) == "2026-03-30T02:30+02:00"


def test_the_night_the_clocks_go_back() -> None:
    # Europe/Berlin: 2026-10-25 03:00 CEST → 02:00 CET.
    w = SendWindows(["19:00-07:00"], BERLIN)
    assert at("2026-10-25T07:00") - at("2026-10-24T19:00") == 13 * 3600  # an hour longer
    assert w.is_open(at("2026-10-25T06:59"))
    assert local(w.closes_at(at("2026-10-25T01:00"))) == "2026-10-25T07:00+01:00"
    day = SendWindows(["08:00-17:00"], BERLIN)
    assert local(day.next_open(at("2026-10-25T01:00"))) == "2026-10-25T08:00+01:00"


def test_other_zones_keep_their_own_wall_clock() -> None:
    ny = ZoneInfo("America/New_York")
    w = SendWindows(["19:00-07:00"], ny)
    assert w.is_open(at("2026-11-01T20:00", ny))
    assert not w.is_open(at("2026-11-01T20:00", BERLIN))  # 15:00 in New York


# ------------------------------------------------------------------ stuck clock


def test_stuck_time_counts_only_inside_the_windows() -> None:
    w = SendWindows(["19:00-07:00"], BERLIN)
    # At 15:00, an hour of open window lies back at 06:00 this morning.
    assert local(w.open_since(at("2026-03-11T15:00"), 3600)) == "2026-03-11T06:00+01:00"
    # 13 h: the 12 h of last night and one more hour from the night before.
    assert local(w.open_since(at("2026-03-11T15:00"), 13 * 3600)) == "2026-03-10T06:00+01:00"
    # Inside a window, the time since it opened counts first.
    assert local(w.open_since(at("2026-03-11T20:00"), 1800)) == "2026-03-11T19:30+01:00"
    # Overlapping windows count once.
    both = SendWindows(["19:00-07:00", "06:00-08:00"], BERLIN)
    assert local(both.open_since(at("2026-03-11T12:00"), 4 * 3600)) == "2026-03-11T04:00+01:00"
