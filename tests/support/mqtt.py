"""A real Mosquitto broker for tests, and a recording MQTT subscriber.

``mosquitto`` starts Debian's broker (/usr/sbin/mosquitto) on a free loopback port
(anonymous, no persistence); ``mosquitto_secure`` adds a TLS listener that wants a
user name + password (file made with ``mosquitto_passwd``) and a client
certificate, from a throw-away CA made with the ``openssl`` command. Brokers can be
stopped and started again on the same port (outage tests). :class:`Recorder` is a
paho client on its own thread that keeps every message it receives, retained flag
included. A missing broker or tool fails the test (no skips).
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest

from gateway.demo.local_mosquitto import MosquittoProcess

PASSWORD = "s3cret-broker-pw"
USER = "dermgate"


@dataclass
class TlsFiles:
    """A CA, a server certificate for 127.0.0.1 and a client certificate."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_tls(folder: Path) -> TlsFiles:
    """Make a CA and sign a server (SAN IP 127.0.0.1) and a client certificate."""
    folder.mkdir(parents=True, exist_ok=True)
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-keyout", "ca.key", "-out", "ca.pem", "-subj", "/CN=DermGate test CA",
        cwd=folder,
    )  # fmt: skip
    for name, ext in (
        ("server", "subjectAltName=IP:127.0.0.1,DNS:localhost"),
        ("client", "extendedKeyUsage=clientAuth"),
    ):
        (folder / f"{name}.ext").write_text(ext + "\n", encoding="ascii")
        _openssl(
            "req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
            "-out", f"{name}.csr", "-subj", f"/CN={name}",
            cwd=folder,
        )  # fmt: skip
        _openssl(
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-out", f"{name}.pem", "-extfile", f"{name}.ext",
            cwd=folder,
        )  # fmt: skip
    return TlsFiles(
        folder / "ca.pem",
        folder / "server.pem",
        folder / "server.key",
        folder / "client.pem",
        folder / "client.key",
    )


@dataclass
class Mosquitto(MosquittoProcess):
    """The product's private broker, plus what the tests need: TLS and passwords."""

    tls: TlsFiles | None = None
    password_file: Path | None = None

    def security_lines(self) -> list[str]:
        """Password file and TLS listener settings when the test asks for them."""
        lines = (
            ["allow_anonymous false", f"password_file {self.password_file}"]
            if self.password_file is not None
            else ["allow_anonymous true"]
        )
        if self.tls is not None:
            lines += [
                f"cafile {self.tls.ca}",
                f"certfile {self.tls.server_cert}",
                f"keyfile {self.tls.server_key}",
                "require_certificate true",
            ]
        return lines

    def config_section(self, **extra: Any) -> str:
        """A ``[mqtt]`` TOML section for a gateway using this broker."""
        lines = [
            "[mqtt]",
            'host = "127.0.0.1"',
            f"port = {self.port}",
            'topic_prefix = "dermgate"',
            "homeassistant_discovery = true",
            "keepalive = 5",
            "state_min_interval = 0.5",
            "reconnect_max = 2",
        ]
        for key, value in extra.items():
            lines.append(f"{key} = {json.dumps(value)}")
        return "\n".join(lines) + "\n"


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """An anonymous broker on a free loopback port."""
    broker = Mosquitto(tmp_path / "mosquitto")
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def mosquitto_secure(tmp_path: Path) -> Iterator[Mosquitto]:
    """A TLS broker wanting user/password and a client certificate."""
    folder = tmp_path / "mosquitto-tls"
    tls = make_tls(folder / "pki")
    passwords = folder / "passwords"
    subprocess.run(
        ["mosquitto_passwd", "-c", "-b", str(passwords), USER, PASSWORD],
        check=True,
        capture_output=True,
    )
    broker = Mosquitto(folder, tls=tls, password_file=passwords)
    broker.start()
    yield broker
    broker.stop()


@dataclass(frozen=True)
class Received:
    """One message as the subscriber saw it."""

    topic: str
    payload: bytes
    retain: bool

    def json(self) -> Any:
        """The payload parsed as JSON."""
        return json.loads(self.payload)


class Recorder:
    """A paho subscriber on its own thread that keeps every message."""

    def __init__(
        self,
        broker: Mosquitto,
        topics: list[str],
        *,
        username: str | None = None,
        password: str | None = None,
        client_id: str = "",
        clean_session: bool = True,
    ) -> None:
        self.broker = broker
        self.topics = topics
        self.messages: list[Received] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = paho.Client(
            paho.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean_session
        )
        self.client.reconnect_delay_set(0.2, 1)
        if username is not None:
            self.client.username_pw_set(username, password)
        if broker.tls is not None:
            self.client.tls_set(
                ca_certs=str(broker.tls.ca),
                certfile=str(broker.tls.client_cert),
                keyfile=str(broker.tls.client_key),
            )
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_: self._subscribed.set()

    def _on_connect(self, client: paho.Client, *_: Any) -> None:
        client.subscribe([(t, 1) for t in self.topics])

    def _on_message(self, _client: paho.Client, _userdata: Any, msg: paho.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(Received(msg.topic, bytes(msg.payload), bool(msg.retain)))

    def start(self) -> Recorder:
        """Connect, subscribe, and wait until the subscription is in place."""
        self.client.connect("127.0.0.1", self.broker.port, keepalive=10)
        self.client.loop_start()
        assert self._subscribed.wait(15), f"no SUBACK: {self.broker.log()}"
        return self

    def stop(self) -> None:
        """Disconnect."""
        self.client.disconnect()
        self.client.loop_stop()

    def on(self, topic: str) -> list[Received]:
        """Messages received on ``topic``, in order."""
        with self._lock:
            return [m for m in self.messages if m.topic == topic]

    def all(self) -> list[Received]:
        """Every message received."""
        with self._lock:
            return list(self.messages)

    def publish(self, topic: str, payload: str, *, retain: bool = False) -> None:
        """Publish (e.g. Home Assistant's birth message)."""
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(10)

    def wait(self, predicate: Callable[[], Any], timeout: float, what: str) -> Any:
        """Wait until ``predicate()`` is truthy; fail naming ``what``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = predicate()
            if result:
                return result
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}; got {self.all()[-10:]}")


@pytest.fixture
def recorder_factory() -> Iterator[Callable[..., Recorder]]:
    """Start recorders; all are stopped at the end."""
    started: list[Recorder] = []

    def start(broker: Mosquitto, topics: list[str], **kwargs: Any) -> Recorder:
        rec = Recorder(broker, topics, **kwargs).start()
        started.append(rec)
        return rec

    yield start
    for rec in started:
        rec.stop()
