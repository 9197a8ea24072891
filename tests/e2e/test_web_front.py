"""The page's front door on its real aiohttp server over real TLS sockets: plain HTTP
on the TLS port is redirected to https, answers carry HSTS and no Server header naming
aiohttp or Python, a trickled request body is cut off after ``request_timeout``, and one
login gets a bounded number of live overview streams."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp

from gateway.status.web.server import EVENT_STREAMS_PER_SESSION, WebServer
from tests.support.web import add_user, client_tls, login, self_signed, web_config


@contextlib.asynccontextmanager
async def _running(tmp_path: Path, keys: str = "") -> AsyncIterator[tuple[WebServer, int]]:
    cert, key = self_signed(tmp_path)
    config = web_config(tmp_path, f'tls_cert = "{cert}"\ntls_key = "{key}"\n{keys}')
    add_user(config)
    server = WebServer(config)
    started = asyncio.Event()
    task = asyncio.create_task(server.run(started.set))
    await asyncio.wait_for(started.wait(), 10)
    try:
        yield server, server.web.host_port()[1]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _raw(port: int, data: bytes, tls: ssl.SSLContext | None = None) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls)
    try:
        writer.write(data)
        return await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.transport.abort()


def test_plain_http_on_the_tls_port_gets_a_redirect_to_https(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with _running(tmp_path) as (_, port):
            answer = await _raw(
                port,
                f"GET /spool?state=QUARANTINED HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                "Connection: close\r\n\r\n".encode(),
            )
            head = answer.split(b"\r\n\r\n")[0].decode()
            assert head.startswith("HTTP/1.1 301"), answer[:200]
            assert f"\r\nLocation: https://127.0.0.1:{port}/spool?state=QUARANTINED\r\n" in head
            # The name the browser used is kept; the port is the page's.
            answer = await _raw(port, b"GET / HTTP/1.1\r\nHost: dermgate.local:80\r\n\r\n")
            assert f"\r\nLocation: https://dermgate.local:{port}/\r\n".encode() in answer
            # Nothing to inject through Host.
            answer = await _raw(port, b"GET / HTTP/1.1\r\nHost: a\rSet-Cookie: x\r\n\r\n")
            assert f"\r\nLocation: https://127.0.0.1:{port}/\r\n".encode() in answer

    asyncio.run(scenario())


def test_answers_over_tls_carry_hsts_and_name_no_software_versions(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with _running(tmp_path) as (_, port):
            trust = client_tls(tmp_path / "page.crt")
            base = f"https://127.0.0.1:{port}"
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=trust)) as s:
                for path in ("/login", "/healthz", "/no-such-page", "/static/style.css"):
                    async with s.get(base + path, allow_redirects=False) as r:
                        await r.read()
                        assert r.headers["Strict-Transport-Security"] == "max-age=31536000"
                        assert "Server" not in r.headers, (path, r.headers["Server"])
            # A malformed request gets aiohttp's own 400: no versions there either.
            answer = await _raw(port, b"GET / HTTP/1.1\r\nBad Header\r\n\r\n", trust)
            assert answer.split(b"\r\n")[0].endswith(b" 400 Bad Request"), answer[:100]
            head = answer.split(b"\r\n\r\n")[0].lower()
            assert b"aiohttp" not in head, head
            assert b"python" not in head, head

    asyncio.run(scenario())


def test_a_trickled_request_body_is_cut_off(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with _running(tmp_path, "request_timeout = 2") as (_, port):
            trust = client_tls(tmp_path / "page.crt")
            reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=trust)
            try:
                writer.write(
                    b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n"
                    b"Content-Type: application/x-www-form-urlencoded\r\n\r\nuser=te"
                )
                await writer.drain()
                # The page closes the connection; it does not wait for the rest.
                rest = await asyncio.wait_for(reader.read(), 30)
                assert not rest.startswith(b"HTTP/1.1 200"), rest[:100]
            finally:
                writer.transport.abort()

    asyncio.run(scenario())


def test_one_login_gets_a_bounded_number_of_live_streams(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with _running(tmp_path) as (_, port):
            trust = client_tls(tmp_path / "page.crt")
            base = f"https://127.0.0.1:{port}"
            jar = aiohttp.CookieJar(unsafe=True)
            connector = aiohttp.TCPConnector(ssl=trust, limit=0)
            async with aiohttp.ClientSession(cookie_jar=jar, connector=connector) as s:
                assert (await login(s, base)).status == 200
                streams = []
                for _ in range(EVENT_STREAMS_PER_SESSION):
                    live = await s.get(f"{base}/events")
                    assert live.status == 200
                    first = await asyncio.wait_for(live.content.readuntil(b"\n\n"), 10)
                    assert first.startswith(b"event: overview\n")
                    streams.append(live)
                for _ in range(3):
                    async with s.get(f"{base}/events") as extra:
                        assert extra.status == 429
                        assert "close another tab" in await extra.text()
                # The first streams still work: ending the session reaches them all.
                async with s.get(f"{base}/") as page:
                    token = (await page.text()).split('name="csrf" value="')[1].split('"')[0]
                async with s.post(f"{base}/logout", data={"csrf": token}) as r:
                    assert r.status == 200
                for live in streams:
                    ended = b""
                    while b"event: logout" not in ended:
                        ended = await asyncio.wait_for(live.content.readuntil(b"\n\n"), 10)
                    live.release()
                # Their slots are free again: a new login gets its streams.
                assert (await login(s, base)).status == 200
                async with s.get(f"{base}/events") as live:
                    assert live.status == 200

    asyncio.run(scenario())
