"""The event bus: numbered events, bounded buffers that count what they drop, an
allow-list of fields (no patient data by construction), thread-safe emitting, and
the state document's error codes that never pass a peer's free text on."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import ClassVar

import pytest

from gateway.core import events
from gateway.core.errors import DeliveryError, DeliveryErrorCode
from gateway.spool.schema import legacy_error
from gateway.status.snapshot import stable_part


def test_events_are_numbered_and_a_full_buffer_drops_the_oldest_and_counts() -> None:
    async def scenario() -> None:
        bus = events.EventBus()
        bus.bind(asyncio.get_running_loop())
        small = bus.subscribe(2)
        large = bus.subscribe(10)
        for spool_id in (1, 2, 3, 4):
            bus.publish(events.CaptureCommitted(spool_id=spool_id, destination="pacs"))
        got = [await large.get() for _ in range(4)]
        assert [seq for seq, _ in got] == [1, 2, 3, 4]
        assert [e["spool_id"] for _, e in got] == [1, 2, 3, 4]
        assert all(set(e) == {"seq", "kind", "time", "spool_id", "destination"} for _, e in got)
        assert large.dropped == 0
        assert small.dropped == 2
        assert small.take_drops() == 2
        assert small.take_drops() == 0
        seq, event = small.peek()
        assert seq == 3
        assert event["spool_id"] == 3
        small.pop(3)
        assert (await small.get())[0] == 4
        assert len(small) == 0
        assert bus.seq == 4

    asyncio.run(scenario())


def test_events_from_a_worker_thread_arrive_on_the_loop_in_order() -> None:
    async def scenario() -> list[int]:
        bus = events.EventBus()
        bus.bind(asyncio.get_running_loop())
        sub = bus.subscribe()
        await asyncio.to_thread(
            lambda: [
                bus.publish(events.CaptureCommitted(spool_id=i, destination="p")) for i in range(5)
            ]
        )
        return [(await sub.get())[1]["spool_id"] for _ in range(5)]

    assert asyncio.run(scenario()) == [0, 1, 2, 3, 4]


def test_only_listed_fields_and_json_scalars_are_accepted() -> None:
    bus = events.EventBus()
    with pytest.raises(TypeError, match="patient_name"):
        events.CaptureSaved(  # type: ignore[call-arg]
            spool_id=1, driver="d", device_class="camera", bytes=1, patient_name="Doe^Jane"
        )

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class CaptureViewed(events.Event):
        kind: ClassVar[str] = "capture_viewed"
        spool_id: int

    with pytest.raises(TypeError, match="unknown event kind"):
        bus.publish(CaptureViewed(spool_id=1))
    with pytest.raises(TypeError, match="JSON scalars"):
        bus.publish(
            events.CaptureSaved(
                spool_id=1,
                driver=["x"],  # type: ignore[arg-type]
                device_class="camera",
                bytes=1,
            )
        )
    assert bus.seq == 0
    # A stage built without a bus drops its events.
    events.NO_EVENTS.publish(events.CaptureCommitted(spool_id=1, destination="pacs"))
    assert events.EVENT_FIELDS["capture_saved"] == {"spool_id", "driver", "device_class", "bytes"}


def test_alarms_are_raised_once_and_cleared_once() -> None:
    bus = events.EventBus()
    sub = bus.subscribe()
    for _ in range(3):
        bus.publish(events.AlarmRaised(code="disk_full", subject="", message="disk below reserve"))
    bus.publish(events.AlarmCleared(code="stuck_captures", subject="pacs"))  # never raised
    assert list(bus.alarms) == [("disk_full", "")]
    bus.publish(events.AlarmCleared(code="disk_full", subject=""))
    bus.publish(events.AlarmCleared(code="disk_full", subject=""))
    assert bus.alarms == {}
    assert [sub.peek()[1]["kind"]] == ["alarm_raised"]
    assert len(sub) == 2


def test_delivery_errors_are_shown_as_codes_and_fixed_phrases() -> None:
    err = DeliveryError(DeliveryErrorCode.STORE_FAILED, "C-STORE status 0xA700", 0xA700)
    assert err.shown() == {
        "code": "store_failed",
        "message": "the PACS answered a store request with a failure status (0xA700)",
    }
    unreachable = DeliveryError(
        DeliveryErrorCode.UNREACHABLE, "could not open an association with PACS@10.0.0.5:104 (x)"
    )
    assert unreachable.shown() == {
        "code": "unreachable",
        "message": "cannot open a connection to the PACS (network, address or port)",
    }
    # Free text a peer sent is never passed on.
    other = DeliveryError(DeliveryErrorCode.OTHER, "Error Comment: Doe^Jane already exists")
    assert other.shown() == {"code": "other", "message": "delivery failed"}


def test_failures_recorded_before_codes_get_theirs_from_their_text() -> None:
    assert legacy_error(None) is None
    err = legacy_error("C-STORE status 0xA700")
    assert err is not None
    assert (err.code, err.status) == (DeliveryErrorCode.STORE_FAILED, 0xA700)
    unreachable = legacy_error("could not open an association with PACS@10.0.0.5:104 (x)")
    assert unreachable is not None
    assert unreachable.code is DeliveryErrorCode.UNREACHABLE
    other = legacy_error("Error Comment: Doe^Jane already exists")
    assert other is not None
    assert other.shown() == {"code": "other", "message": "delivery failed"}


def test_stable_part_ignores_clock_driven_fields() -> None:
    a = {
        "seq": 1,
        "generated": "t1",
        "uptime_s": 1.0,
        "spool": {"undelivered": 1, "oldest_undelivered_age_s": 3.0},
        "disk": {"free_mb": 100, "full": False},
    }
    b = {
        "seq": 2,
        "generated": "t2",
        "uptime_s": 9.0,
        "spool": {"undelivered": 1, "oldest_undelivered_age_s": 8.0},
        "disk": {"free_mb": 99, "full": False},
    }
    assert stable_part(a) == stable_part(b)
    b["spool"] = {"undelivered": 0, "oldest_undelivered_age_s": None}
    assert stable_part(a) != stable_part(b)


def test_an_entry_dropped_while_in_flight_is_not_counted_once_it_went_out() -> None:
    bus = events.EventBus()
    outbox = bus.subscribe(1)
    bus.publish(events.CaptureCommitted(spool_id=1, destination="pacs"))
    seq, _ = outbox.peek()  # being published...
    bus.publish(events.CaptureCommitted(spool_id=2, destination="pacs"))  # overflows meanwhile
    assert outbox.dropped == 1
    assert not outbox.pop(seq)
    outbox.undrop()
    assert outbox.dropped == 0
    assert outbox.take_drops() == 0
    assert outbox.peek()[0] == 2
