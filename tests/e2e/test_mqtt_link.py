"""The MQTT link as the state document shows it (the local page reads this): a broker
that refuses our password, or is not there, is reported as a code and a plain phrase,
and the link recovers by itself once the broker accepts us — with the events of the
outage sent. The publisher runs in-process here against a real Mosquitto; its state
comes from a real ledger, disk guard and status board."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.core.config import MqttSettings
from gateway.core.events import CaptureSaved, EventBus
from gateway.devices.status import StatusBoard
from gateway.spool.ledger import Ledger
from gateway.spool.space import SpaceGuard
from gateway.status.mqtt import MqttPublisher
from gateway.status.snapshot import GatewayState
from tests.support.mqtt import PASSWORD, USER, Mosquitto, Recorder


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    """A real, empty ledger."""
    led = Ledger(tmp_path / "ledger.sqlite3")
    led.start()
    yield led
    led.close()


def _state(tmp_path: Path, ledger: Ledger, bus: EventBus) -> GatewayState:
    return GatewayState(
        gateway_id="link-box",
        software="test",
        ledger=ledger,
        space=SpaceGuard(tmp_path, 0),
        board=StatusBoard(None),
        forwarders=[],
        bus=bus,
    )


async def _until(predicate: Callable[[], Any], timeout: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


def test_refused_password_is_shown_then_recovery_sends_the_waiting_events(
    tmp_path: Path,
    ledger: Ledger,
    mosquitto_secure: Mosquitto,
    recorder_factory: Callable[..., Recorder],
) -> None:
    broker = mosquitto_secure
    assert broker.tls is not None
    password_file = tmp_path / "pw"
    password_file.write_text("not-the-password\n", encoding="utf-8")
    settings = MqttSettings(
        host="127.0.0.1",
        port=broker.port,
        username=USER,
        password_file=password_file,
        tls_ca=broker.tls.ca,
        tls_cert=broker.tls.client_cert,
        tls_key=broker.tls.client_key,
        reconnect_max=0.5,
        homeassistant_discovery=False,
    )
    rec = recorder_factory(broker, ["dermgate/link-box/#"], username=USER, password=PASSWORD)

    async def scenario() -> dict[str, Any]:
        bus = EventBus()
        bus.bind(asyncio.get_running_loop())
        state = _state(tmp_path, ledger, bus)
        publisher = MqttPublisher(settings, state, bus)
        task = asyncio.create_task(publisher.run(lambda: None))
        try:
            await _until(lambda: publisher.last_error is not None, 20, "a connection error")
            refused = (await state.snapshot())["mqtt"]
            bus.publish(CaptureSaved(spool_id=7, driver="d", device_class="camera", bytes=1))
            await asyncio.sleep(0.2)
            waiting = (await state.snapshot())["mqtt"]["events_waiting"]
            password_file.write_text(PASSWORD + "\n", encoding="utf-8")  # read per attempt
            await _until(lambda: publisher.connected, 20, "the connection")
            await _until(lambda: len(publisher.outbox) == 0, 20, "the outbox drained")
            return {"refused": refused, "waiting": waiting, "after": await state.snapshot()}
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    result = asyncio.run(scenario())
    refused = result["refused"]
    assert refused["connected"] is False
    assert refused["last_error"]["code"] == "not_authorised", refused
    assert result["waiting"] == 1
    after = result["after"]["mqtt"]
    assert after["connected"] is True
    assert after["last_error"] is None
    assert after["events_dropped"] == 0
    rec.wait(lambda: rec.on("dermgate/link-box/events"), 10, "the waiting event")
    event = rec.on("dermgate/link-box/events")[0].json()
    assert event["kind"] == "capture_saved"
    assert event["spool_id"] == 7
    assert event["seq"] == 1
    # A clean stop leaves "offline" (a clean DISCONNECT does not fire the Will).
    rec.wait(lambda: rec.on("dermgate/link-box/status")[-1].payload == b"offline", 10, "offline")


def test_a_broker_that_is_not_there_is_shown_as_refused(
    tmp_path: Path, ledger: Ledger, mosquitto: Mosquitto
) -> None:
    mosquitto.stop()
    settings = MqttSettings(host="127.0.0.1", port=mosquitto.port, reconnect_max=0.5)

    async def scenario() -> dict[str, Any]:
        bus = EventBus()
        bus.bind(asyncio.get_running_loop())
        state = _state(tmp_path, ledger, bus)
        publisher = MqttPublisher(settings, state, bus)
        task = asyncio.create_task(publisher.run(lambda: None))
        try:
            await _until(lambda: publisher.last_error is not None, 20, "a connection error")
            document = await state.snapshot()
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        return document

    document = asyncio.run(scenario())
    assert document["mqtt"]["connected"] is False
    assert document["mqtt"]["last_error"] == {
        "code": "refused",
        "message": "nothing accepts connections at the broker's address",
    }
