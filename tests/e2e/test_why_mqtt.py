"""The "why" page of a real ``dermgate run`` tells whether the MQTT broker accepts the
box: failing, with the reason and what to do, when nothing listens at ``[mqtt]`` host
and port (or the broker refuses the password); passing with a real Mosquitto."""

from __future__ import annotations

import asyncio
import html
import re
from collections.abc import Callable
from pathlib import Path

import aiohttp

from tests.support.gateway_process import GatewayProcess
from tests.support.mqtt import PASSWORD as BROKER_PASSWORD
from tests.support.mqtt import USER, Mosquitto
from tests.support.waiting import wait_for
from tests.support.web import PASSWORD, cookie_client, login_status, service_config, user_add

_ROW = re.compile(r'<tr class="(\w+)"><td[^>]*>(MQTT broker \([^<]*)</td>.*?</tr>', re.S)


def _with_mqtt(config: Path, host_port: tuple[str, int], extra: str = "") -> None:
    with config.open("a", encoding="utf-8") as fh:
        host, port = host_port
        fh.write(f'\n[mqtt]\nhost = "{host}"\nport = {port}\nreconnect_max = 1\n{extra}')


def _mqtt_row(
    gateway_factory: Callable[[Path], GatewayProcess], config: Path, base: str
) -> tuple[str, str]:
    """Start the gateway, log in, open the why page: the MQTT row's status and text."""
    user_add(config, "tech", PASSWORD)
    gateway = gateway_factory(config)
    gateway.wait_running()

    async def up() -> bool:
        try:
            async with aiohttp.ClientSession() as s, s.get(f"{base}/healthz") as r:
                return r.status == 200
        except aiohttp.ClientError:
            return False

    wait_for(lambda: asyncio.run(up()), 30, "the page to answer")

    async def why() -> str:
        async with cookie_client() as tech:
            assert await login_status(tech, base, "tech", PASSWORD) == 303
            async with tech.get(f"{base}/why") as r:
                assert r.status == 200
                return await r.text()

    page = asyncio.run(why())
    assert gateway.stop() == 0, gateway.log()[-4000:]
    rows = _ROW.findall(page)
    assert len(rows) == 1, page
    status, _name = rows[0]
    row = _ROW.search(page)
    assert row is not None
    text = html.unescape(re.sub(r"<[^>]+>", " ", row.group(0)))
    return status, " ".join(text.split())


def test_a_broker_nobody_listens_for_fails_the_mqtt_check_with_the_reason(
    tmp_path: Path, mosquitto: Mosquitto, gateway_factory: Callable[[Path], GatewayProcess]
) -> None:
    mosquitto.stop()  # a real port that was a broker's: nothing listens now
    config, base = service_config(tmp_path)
    _with_mqtt(config, ("127.0.0.1", mosquitto.port))
    status, text = _mqtt_row(gateway_factory, config, base)
    assert status == "fail", text
    assert "nothing accepts connections at the broker's address" in text
    assert "host and port" in text  # what to do


def test_a_refused_password_fails_the_mqtt_check_without_showing_it(
    tmp_path: Path, mosquitto_secure: Mosquitto, gateway_factory: Callable[[Path], GatewayProcess]
) -> None:
    broker = mosquitto_secure
    assert broker.tls is not None
    wrong = "not-the-broker-password"
    password_file = tmp_path / "mqtt-password"
    password_file.write_text(wrong + "\n", encoding="utf-8")
    config, base = service_config(tmp_path)
    _with_mqtt(
        config,
        ("127.0.0.1", broker.port),
        f'username = "{USER}"\npassword_file = "{password_file}"\n'
        f'tls_ca = "{broker.tls.ca}"\ntls_cert = "{broker.tls.client_cert}"\n'
        f'tls_key = "{broker.tls.client_key}"\n',
    )
    status, text = _mqtt_row(gateway_factory, config, base)
    assert status == "fail", text
    assert "refused the user name or password" in text
    assert wrong not in text
    assert BROKER_PASSWORD not in text


def test_a_real_broker_passes_the_mqtt_check(
    tmp_path: Path, mosquitto: Mosquitto, gateway_factory: Callable[[Path], GatewayProcess]
) -> None:
    config, base = service_config(tmp_path)
    _with_mqtt(config, ("127.0.0.1", mosquitto.port))
    status, text = _mqtt_row(gateway_factory, config, base)
    assert status == "ok", text
    assert "Accepts this box" in text
