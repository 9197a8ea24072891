"""An idle box's MQTT state poll (every 5 s) judges the verdict — which reads the ledger
on a connection of its own — only for a state document it publishes: an unchanged
document opens nothing (each such read dirtied a page of the ledger's ``-shm`` on the
disk, 4 KiB a minute on an SD card). The publisher runs in-process against a real
Mosquitto with the page's real verdict (:func:`document_verdict`) for a real ledger."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.core.config import DermGateConfig, MqttSettings
from gateway.core.events import EventBus
from gateway.devices.status import StatusBoard
from gateway.spool.dirs import SpoolDirs
from gateway.spool.ledger import Ledger
from gateway.spool.space import SpaceGuard
from gateway.status.mqtt import MqttPublisher
from gateway.status.snapshot import GatewayState
from gateway.status.web.fleet import document_verdict
from tests.support.mqtt import Mosquitto, Recorder

STATE = "dermgate/idle-box/state"


def test_an_unchanged_state_is_not_judged_again_and_a_change_is(
    tmp_path: Path, mosquitto: Mosquitto, recorder_factory: Callable[..., Recorder]
) -> None:
    config = DermGateConfig.model_validate(
        {
            "gateway": {"id": "idle-box", "ae_title": "DERMGATE", "state_dir": str(tmp_path)},
            "mqtt": {"host": "127.0.0.1", "port": mosquitto.port},
        }
    )
    assert config.mqtt is not None
    settings: MqttSettings = config.mqtt.model_copy(update={"homeassistant_discovery": False})
    SpoolDirs(config.spool_dir()).create()
    ledger = Ledger(config.ledger_path())
    ledger.start()
    rec = recorder_factory(mosquitto, [STATE])
    judged: list[float] = []
    judge = document_verdict(config)

    async def counted(document: dict[str, Any]) -> dict[str, Any]:
        judged.append(asyncio.get_running_loop().time())
        return await judge(document)

    async def scenario() -> tuple[int, int, int]:
        bus = EventBus()
        bus.bind(asyncio.get_running_loop())
        board = StatusBoard(None, bus)
        state = GatewayState(
            gateway_id="idle-box",
            software="test",
            ledger=ledger,
            space=SpaceGuard(config.spool_dir(), 0),
            board=board,
            forwarders=[],
            bus=bus,
        )
        publisher = MqttPublisher(settings, state, bus, verdict=counted)
        task = asyncio.create_task(publisher.run(lambda: None))
        try:
            while not rec.on(STATE):
                await asyncio.sleep(0.1)
            at_connect = len(judged)
            await asyncio.sleep(11)  # two state polls of an unchanged document
            idle = len(judged) - at_connect
            board.add("camera", "photo-folder", detail="watching")  # the document changes
            while len(rec.on(STATE)) < 2:
                await asyncio.sleep(0.1)
            return at_connect, idle, len(judged)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    try:
        at_connect, idle, after_change = asyncio.run(scenario())
    finally:
        ledger.close()
    assert at_connect == 1  # the state published at connect carries its verdict
    assert idle == 0  # polls of an unchanged document judged nothing
    assert after_change == 2  # the changed document was judged, and published
    states = rec.on(STATE)
    assert len(states) == 2
    assert all("verdict" in m.json() for m in states)
    assert [d["name"] for d in states[-1].json()["devices"]] == ["camera"]
