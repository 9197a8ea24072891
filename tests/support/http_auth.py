"""HTTP scaffolding for the DICOMweb auth tests: an OAuth2 token endpoint
(client credentials grant, RFC 6749 §4.4) that counts its calls and can answer badly
on purpose, a reverse proxy that lets requests through to Orthanc only with a bearer
token it accepts, and ways to serve aiohttp apps on loopback ports (in the test's loop,
with TLS if asked, or on a thread of their own for tests that wait synchronously).

The token endpoint is test scaffolding, as is the bearer proxy of the e2e tests; the
code under test is DermGate's :mod:`gateway.forward.http_auth`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import ssl
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import aiohttp
import pytest
from aiohttp import web

CLIENT_ID = "dermgate-box-7"
CLIENT_SECRET = "cs-Zq8~v.Xk!secret"


@dataclass
class TokenCall:
    """One request the token endpoint received."""

    authorization: str | None
    form: dict[str, str]
    client_auth: str  # "basic", "post" or "none"


@dataclass
class TokenEndpoint:
    """An OAuth2 token endpoint. ``answer`` picks what it says:

    ``"ok"`` a Bearer token ``{prefix}N`` with ``expires_in`` (left out when None);
    ``"not-json"``; ``"no-token"``; ``"mac"`` (a token of another type); ``"error"``
    (400 ``invalid_scope`` with a description that repeats the secret); ``"huge"``
    (a 1 MB answer); ``"slow"`` (answers after 5 s); ``"redirect"`` (302 elsewhere).
    ``accepts`` is which client authentication it takes: "basic", "post" or "both".
    """

    secret: str = CLIENT_SECRET
    expires_in: Any = 3600
    answer: str = "ok"
    accepts: str = "both"
    prefix: str = "tok-"
    calls: list[TokenCall] = field(default_factory=list)
    issued: dict[str, float] = field(default_factory=dict)  # token -> monotonic expiry
    revoked: set[str] = field(default_factory=set)
    _numbers: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def app(self) -> web.Application:
        """The aiohttp app: POST /token (and /elsewhere, the redirect's target)."""
        app = web.Application()
        app.router.add_post("/token", self._token)
        app.router.add_post("/elsewhere", self._token)
        return app

    def valid(self, token: str) -> bool:
        """Whether ``token`` was issued here, is not revoked and has not expired."""
        expiry = self.issued.get(token)
        return expiry is not None and token not in self.revoked and time.monotonic() < expiry

    def _client(self, request: web.Request, form: dict[str, str]) -> str | None:
        """Which client authentication the request used, or None when it is wrong."""
        header = request.headers.get("Authorization", "")
        if header.startswith("Basic "):
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            if "client_secret" in form:
                return None  # RFC 6749 §2.3: one method per request
            ok = unquote_plus(user) == CLIENT_ID and unquote_plus(password) == self.secret
            return "basic" if ok and self.accepts in ("basic", "both") else None
        if form.get("client_id") == CLIENT_ID and form.get("client_secret") == self.secret:
            return "post" if self.accepts in ("post", "both") else None
        return None

    async def _token(self, request: web.Request) -> web.StreamResponse:
        form = {k: str(v) for k, v in (await request.post()).items()}
        client = self._client(request, form)
        self.calls.append(TokenCall(request.headers.get("Authorization"), form, client or "none"))
        if request.content_type != "application/x-www-form-urlencoded":
            return web.json_response({"error": "invalid_request"}, status=400)
        if form.get("grant_type") != "client_credentials":
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        if client is None:
            return web.json_response(
                {"error": "invalid_client", "error_description": f"bad secret {self.secret}"},
                status=401,
                headers={"WWW-Authenticate": 'Basic realm="token"'},
            )
        match self.answer:
            case "not-json":
                return web.Response(text="<html>maintenance</html>", content_type="text/html")
            case "no-token":
                return web.json_response({"token_type": "Bearer", "expires_in": 60})
            case "mac":
                return web.json_response(
                    {"access_token": "mac-token-1", "token_type": "mac", "expires_in": 60}
                )
            case "error":
                return web.json_response(
                    {"error": "invalid_scope", "error_description": f"for {self.secret}"},
                    status=400,
                )
            case "huge":
                return web.json_response(
                    {"access_token": "x" * 10, "token_type": "Bearer", "pad": "y" * 1_000_000}
                )
            case "slow":
                await asyncio.sleep(5)
            case "redirect":
                raise web.HTTPFound("/elsewhere")
        token = f"{self.prefix}{next(self._numbers)}"
        lifetime = 3600.0 if self.expires_in is None else float(self.expires_in)
        self.issued[token] = time.monotonic() + lifetime
        body: dict[str, Any] = {"access_token": token, "token_type": "bearer"}
        if self.expires_in is not None:
            body["expires_in"] = self.expires_in
        return web.json_response(body)


@contextlib.asynccontextmanager
async def serving(
    app: web.Application, host: str = "127.0.0.1", ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[str]:
    """Serve ``app`` on a free port of ``host``; yield its base URL."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, host, 0, ssl_context=ssl_context)
    await site.start()
    assert runner.addresses, "the site did not bind"
    port = runner.addresses[0][1]
    scheme = "https" if ssl_context is not None else "http"
    try:
        yield f"{scheme}://{host}:{port}"
    finally:
        await runner.cleanup()


def server_tls(cert: Path, key: Path) -> ssl.SSLContext:
    """A server TLS context with ``cert`` and ``key``."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


def secret_file(path: Path, text: str) -> Path:
    """Write a secret file as the README says (mode 0600)."""
    path.write_text(text, encoding="utf-8")
    path.chmod(0o600)
    return path


@dataclass
class ProxiedRequest:
    """One request the bearer proxy saw: what was asked, with which token, the answer."""

    method: str
    path: str
    token: str
    status: int


@dataclass
class BearerProxy:
    """A reverse proxy that lets a request through to ``upstream`` (Orthanc) only with a
    bearer token ``accepts`` says yes to; any other is answered 401. Bodies are
    streamed both ways (a STOW-RS request can be large)."""

    upstream: str
    accepts: Callable[[str], bool]
    seen: list[ProxiedRequest] = field(default_factory=list)

    def app(self) -> web.Application:
        """The aiohttp app: every method and path."""
        app = web.Application(client_max_size=1 << 34)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        app.cleanup_ctx.append(self._client)
        return app

    async def _client(self, app: web.Application) -> AsyncIterator[None]:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:
            app[_SESSION] = session
            yield

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        header = request.headers.get("Authorization", "")
        token = header[7:] if header[:7].lower() == "bearer " else ""
        if not token or not self.accepts(token):
            async for _ in request.content.iter_chunked(1 << 16):
                pass  # read what the client sends, then refuse, as a gateway does
            self.seen.append(ProxiedRequest(request.method, request.path, token, 401))
            return web.Response(
                status=401, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}
            )
        headers = {
            name: request.headers[name]
            for name in ("Content-Type", "Content-Length", "Accept")
            if name in request.headers
        }
        session: aiohttp.ClientSession = request.app[_SESSION]
        async with session.request(
            request.method,
            self.upstream + request.path_qs,
            data=request.content if request.body_exists else None,
            headers=headers,
        ) as upstream:
            answer = web.StreamResponse(status=upstream.status)
            if "Content-Type" in upstream.headers:
                answer.headers["Content-Type"] = upstream.headers["Content-Type"]
            await answer.prepare(request)
            async for chunk in upstream.content.iter_chunked(1 << 16):
                await answer.write(chunk)
            await answer.write_eof()
        self.seen.append(ProxiedRequest(request.method, request.path, token, upstream.status))
        return answer


_SESSION = web.AppKey("session", aiohttp.ClientSession)


class ServedInThread:
    """aiohttp apps served from an event loop on a thread of their own, for tests that
    wait synchronously (on ``dermgate run`` and the simulator)."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._runners: list[web.AppRunner] = []

    def serve(
        self,
        app: web.Application,
        host: str = "127.0.0.1",
        ssl_context: ssl.SSLContext | None = None,
    ) -> str:
        """Serve ``app`` on a free port of ``host`` (over TLS with ``ssl_context``);
        return its base URL."""

        async def start() -> str:
            runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
            await runner.setup()
            await web.TCPSite(runner, host, 0, ssl_context=ssl_context).start()
            self._runners.append(runner)
            scheme = "https" if ssl_context is not None else "http"
            return f"{scheme}://{host}:{runner.addresses[0][1]}"

        return asyncio.run_coroutine_threadsafe(start(), self._loop).result(30)

    def close(self) -> None:
        """Stop every app, then the loop and its thread."""

        async def stop() -> None:
            for runner in self._runners:
                await runner.cleanup()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)
        self._loop.close()


@pytest.fixture
def served_in_thread() -> Iterator[ServedInThread]:
    """A :class:`ServedInThread`, closed at the end of the test."""
    servers = ServedInThread()
    yield servers
    servers.close()
