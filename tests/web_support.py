"""Helpers for tests of the local page: a config with [web], users, a served app."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
from aiohttp import web

from gateway.core.config import DermGateConfig
from gateway.demo.local_orthanc import free_port
from gateway.service.config import parse_config
from gateway.status.web.server import WebServer
from gateway.status.web.users import Users

PASSWORD = "correct horse battery"
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def web_config(tmp_path: Path, web_keys: str = "", pacs_port: int | None = None) -> DermGateConfig:
    """A gateway configuration with a [web] section on a free loopback port."""
    text = f"""
[gateway]
id = "web-test"
state_dir = "{tmp_path / "state"}"
listen_address = "127.0.0.1"
listen_port = {free_port()}

[[destinations]]
name = "pacs"
kind = "dicom"
ae_title = "ORTHANC"
host = "127.0.0.1"
port = {pacs_port or free_port()}
connect_timeout = 2

[web]
listen = "127.0.0.1:{free_port()}"
{web_keys}
"""
    path = tmp_path / "dermgate.toml"
    path.write_text(text, encoding="utf-8")
    return parse_config(text, path)


def add_user(config: DermGateConfig, name: str = "tech", password: str = PASSWORD) -> None:
    """Store a login the way `dermgate user add` does."""
    users = Users.load(config.users_path())
    users.set_password(name, password)
    users.save(config.users_path())


def csrf_of(html: str) -> str:
    """The CSRF token in a page's first form."""
    match = _CSRF.search(html)
    assert match, "no CSRF field in the page"
    return match.group(1)


@contextlib.asynccontextmanager
async def served(server: WebServer) -> AsyncIterator[tuple[str, aiohttp.ClientSession]]:
    """Run ``server``'s app on its configured port; yield (base URL, client session)."""
    runner = web.AppRunner(server.app(), access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    host, port = server.web.host_port()
    site = web.TCPSite(runner, host, port)
    await site.start()
    jar = aiohttp.CookieJar(unsafe=True)  # keep cookies for 127.0.0.1
    try:
        async with aiohttp.ClientSession(cookie_jar=jar) as session:
            yield f"http://{host}:{port}", session
    finally:
        await runner.cleanup()


async def login(
    session: aiohttp.ClientSession, base: str, user: str = "tech", password: str = PASSWORD
) -> aiohttp.ClientResponse:
    """Fetch the login form and post it; returns the final response (after redirects)."""
    async with session.get(f"{base}/login") as page:
        token = csrf_of(await page.text())
    response = await session.post(
        f"{base}/login", data={"csrf": token, "user": user, "password": password}
    )
    await response.read()
    return response
