"""A stop (SIGTERM) of a real ``dermgate run`` with ``[mqtt]`` finishes promptly and
tells the broker ``offline`` whether the broker is up, down (connection refused) or
slow (accepts TCP and never answers, or answers the CONNECT and then nothing).

"Promptly" is told by the log, not by a clock: a stage still stopping after a few
seconds is named (``... is slow to stop``) and a stop past ``stop_timeout`` says
``stopping took longer``. The gateway runs under the descriptor limit systemd gives a
service (1024).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.demo.local_orthanc import free_port
from tests.support.gateway_process import GatewayProcess, gateway_config
from tests.support.mqtt import Mosquitto, Recorder
from tests.support.photo_folder import photo_folder_toml
from tests.support.waiting import wait_for

GID = "test-box-01"
STATUS = f"dermgate/{GID}/status"
EVENTS = f"dermgate/{GID}/events"
SLOW = ("slow to stop", "stopping took longer")


def _config(tmp_path: Path, mqtt_port: int) -> Path:
    """A gateway with ``[mqtt]``, a PACS that is not there and three cameras' folders
    (each READY, so each stop sends ``device_gone`` events just as MQTT stops)."""
    folders = [tmp_path / f"camera{n}" for n in range(3)]
    for folder in folders:
        folder.mkdir()
    devices = "".join(photo_folder_toml(f, name=f.name) for f in folders)
    config = gateway_config(tmp_path, pacs_port=free_port(), devices=devices)
    with config.open("a", encoding="utf-8") as fh:
        fh.write(
            "\n[supervision]\nstop_timeout = 15\n"
            "\n[mqtt]\n"
            'host = "127.0.0.1"\n'
            f"port = {mqtt_port}\n"
            "keepalive = 5\n"
            "state_min_interval = 0\n"
            "reconnect_max = 0.5\n"
        )
    return config


def _count(rec: Recorder, topic: str, payload: bytes) -> int:
    return len([m for m in rec.on(topic) if m.payload == payload])


def _kinds(rec: Recorder) -> list[str]:
    return [m.json()["kind"] for m in rec.on(EVENTS)]


def _slow_lines(gw: GatewayProcess) -> list[str]:
    return [line for line in gw.log().splitlines() if any(s in line for s in SLOW)]


def _stop_after_ready(
    gateway: GatewayProcess,
    rec: Recorder,
    run: int,
    broker: Mosquitto,
    recorder_factory: Callable[..., Recorder],
) -> None:
    """Wait for the ``run``-th ``online`` and the cameras READY, stop, check the stop."""
    rec.wait(lambda: _count(rec, STATUS, b"online") >= run, 30, f"online (run {run})")
    rec.wait(lambda: _kinds(rec).count("device_connected") >= 3 * run, 30, "cameras READY")
    assert gateway.stop(timeout=60) == 0, gateway.log()[-4000:]
    assert _slow_lines(gateway) == [], f"run {run}:\n{gateway.log()[-6000:]}"
    assert "did not take 'offline'" not in gateway.log()
    # A subscriber arriving now sees "offline", retained.
    late = recorder_factory(broker, [STATUS])
    late.wait(lambda: late.on(STATUS), 15, "the retained status")
    assert late.on(STATUS)[-1].payload == b"offline", (run, late.all())
    assert late.on(STATUS)[-1].retain


def test_ten_stops_with_a_broker_up_each_say_offline_and_none_is_slow(
    tmp_path: Path,
    mosquitto: Mosquitto,
    recorder_factory: Callable[..., Recorder],
    gateway_factory: Callable[[Path], GatewayProcess],
) -> None:
    config = _config(tmp_path, mosquitto.port)
    rec = recorder_factory(mosquitto, [STATUS, EVENTS])
    gateway = gateway_factory(config)
    for run in range(1, 11):
        if run > 1:
            gateway.start()
        gateway.wait_running()
        _stop_after_ready(gateway, rec, run, mosquitto, recorder_factory)
    assert gateway.log().count(" running as ") == 10


def test_a_stop_with_the_broker_down_is_not_slow(
    tmp_path: Path, gateway_factory: Callable[[Path], GatewayProcess]
) -> None:
    gateway = gateway_factory(_config(tmp_path, free_port()))
    gateway.wait_running()
    wait_for(lambda: "MQTT broker" in gateway.log(), 30, "the broker to be found missing")
    assert gateway.stop(timeout=60) == 0
    assert _slow_lines(gateway) == [], gateway.log()[-6000:]
    assert "stopped" in gateway.log().splitlines()[-1]


class StallingBroker:
    """A raw TCP server that accepts, reads whatever comes and answers nothing, or
    (``connack``) answers the CONNECT and then nothing (a broker that hangs)."""

    CONNACK = bytes([0x20, 0x02, 0x00, 0x00])

    def __init__(self, *, connack: bool) -> None:
        self.connack = connack
        self.port = free_port()
        self.connections = 0
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stalling-broker", daemon=True)
        self._stop: asyncio.Event | None = None

    def _run(self) -> None:
        self._loop.run_until_complete(self._serve())
        self._loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._client, "127.0.0.1", self.port)
        self._started.set()
        async with server:
            await self._stop.wait()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        answered = not self.connack
        try:
            while data := await reader.read(4096):
                if not answered and data[0] >> 4 == 1:  # CONNECT
                    writer.write(self.CONNACK)
                    answered = True
        except ConnectionError:
            pass
        finally:
            writer.close()

    def __enter__(self) -> StallingBroker:
        self._thread.start()
        assert self._started.wait(10)
        return self

    def __exit__(self, *_: object) -> None:
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


@pytest.mark.parametrize("connack", [False, True], ids=["silent", "connack-then-silent"])
def test_a_stop_with_a_broker_that_stalls_is_not_slow(
    tmp_path: Path, gateway_factory: Callable[[Path], GatewayProcess], connack: bool
) -> None:
    with StallingBroker(connack=connack) as broker:
        gateway = gateway_factory(_config(tmp_path, broker.port))
        gateway.wait_running()
        wait_for(lambda: broker.connections >= 1, 30, "the gateway to connect")
        if connack:  # stop in the session, with "online" waiting for its PUBACK
            wait_for(lambda: "MQTT connected" in gateway.log(), 30, "the CONNACK")
        assert gateway.stop(timeout=60) == 0
        assert _slow_lines(gateway) == [], gateway.log()[-6000:]
