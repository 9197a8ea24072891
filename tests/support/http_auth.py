"""Real HTTP peers for the DICOMweb auth tests: an OAuth2 token endpoint
(client credentials grant, RFC 6749 §4.4) that counts its calls and can answer badly
on purpose, and a way to serve any aiohttp app on a loopback port, with TLS if asked.

The token endpoint is test scaffolding, as is the bearer proxy of the e2e tests; the
code under test is DermGate's :mod:`gateway.forward.http_auth`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

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

    ``"ok"`` a Bearer token ``tok-N`` with ``expires_in`` (left out when None);
    ``"not-json"``; ``"no-token"``; ``"mac"`` (a token of another type); ``"error"``
    (400 ``invalid_scope`` with a description that repeats the secret); ``"huge"``
    (a 1 MB answer); ``"slow"`` (answers after 5 s); ``"redirect"`` (302 elsewhere).
    ``accepts`` is which client authentication it takes: "basic", "post" or "both".
    """

    secret: str = CLIENT_SECRET
    expires_in: Any = 3600
    answer: str = "ok"
    accepts: str = "both"
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
        token = f"tok-{next(self._numbers)}"
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
