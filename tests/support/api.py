"""Helpers for tests of the integration API against a real ``dermgate run``: a
configuration with the page on, tokens made by the CLI, and JSON requests that
return (status, headers, parsed body) and check every answer is the API's JSON."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from gateway.demo.local_orthanc import free_port
from tests.support.gateway_process import GatewayProcess
from tests.support.waiting import wait_for
from tests.support.web import run_cli


def api_config(tmp_path: Path, *, extra: str = "", web_keys: str = "") -> tuple[Path, str]:
    """A gateway with the page on, ``extra`` TOML (devices, worklist, context) and a
    PACS nobody listens on unless ``extra`` says otherwise; returns (path, base URL)."""
    port = free_port()
    text = f"""
[gateway]
id = "api-test"
ae_title = "DERMGATE"
state_dir = "{tmp_path / "state"}"
listen_address = "127.0.0.1"
listen_port = {free_port()}
log_level = "DEBUG"

[web]
listen = "127.0.0.1:{port}"
{web_keys}
{extra}
"""
    if "[[destinations]]" not in extra:
        text += f"""
[[destinations]]
name = "pacs"
kind = "dicom"
ae_title = "ORTHANC"
host = "127.0.0.1"
port = {free_port()}
connect_timeout = 2
"""
    path = tmp_path / "dermgate.toml"
    path.write_text(text, encoding="utf-8")
    return path, f"http://127.0.0.1:{port}"


def token_add(config: Path, name: str, *extra: str) -> str:
    """``dermgate token add NAME``: it must succeed; returns the token it printed."""
    result = run_cli("token", "add", name, "--config", str(config), *extra)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1, "the token alone on stdout"
    return lines[0]


def start_service(
    gateway_factory: Callable[[Path], GatewayProcess], config: Path, base: str
) -> GatewayProcess:
    """Start ``dermgate run`` and wait until the page answers."""
    gateway = gateway_factory(config)
    gateway.wait_running()

    async def up() -> bool:
        try:
            async with aiohttp.ClientSession() as s, s.get(f"{base}/healthz") as r:
                return r.status == 200
        except aiohttp.ClientError:
            return False

    wait_for(lambda: asyncio.run(up()), 30, "the page to answer")
    return gateway


@dataclass
class Answer:
    """One API answer."""

    status: int
    headers: dict[str, str]
    body: Any
    text: str

    @property
    def code(self) -> str:
        """The error code of a refusal."""
        return str(self.body["error"]["code"])


async def call(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    token: str | None = None,
    body: Any = None,
    data: bytes | str | None = None,
    headers: dict[str, str] | None = None,
) -> Answer:
    """One request (``body`` as JSON, or raw ``data``); every answer must be JSON with
    no-store, and a refusal must have the API's error shape and no traceback."""
    sent = dict(headers or {})
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    if body is not None:
        data = json.dumps(body)
        sent.setdefault("Content-Type", "application/json")
    async with session.request(method, url, data=data, headers=sent, allow_redirects=False) as r:
        text = await r.text()
        answer = Answer(r.status, dict(r.headers), None, text)
    assert answer.status != 500, f"{method} {url}: 500\n{text}"
    assert "Traceback" not in text
    assert answer.headers.get("Content-Type", "").startswith("application/json"), (
        method, url, answer.status, text[:200])  # fmt: skip
    assert answer.headers.get("Cache-Control") == "no-store"
    answer.body = json.loads(text)
    if answer.status >= 400:
        assert set(answer.body) == {"error"}, text
        assert set(answer.body["error"]) == {"code", "message"}, text
    return answer
