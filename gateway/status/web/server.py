"""The local page for technicians: an aiohttp application run as a gateway stage.

Routes (everything but ``/healthz``, ``/static/`` and ``/login`` — and ``/metrics``
with ``metrics_public`` — needs a session; without one a GET is sent to the login
page and anything else gets 401):

=============================  ==================================================
``GET /healthz``               ``ok``: liveness only, no data, no login
``GET /metrics``               Prometheus text (:mod:`gateway.status.web.metrics`)
``GET/POST /login``            log in (CSRF token bound to a pre-login cookie)
``POST /logout``               end the session
``GET /``                      overview; live updates from ``GET /events`` (SSE)
``GET /why``                   "Why isn't it sending?": runs the checks now
``GET /spool``                 captures with state, age, device, reason
``GET /spool/ID``              one capture, patient data masked
``POST /spool/ID/reveal``      show its patient data, read from its DICOM file;
                               audited first (no audit line, no data)
``GET/POST /spool/ID/retry``   confirmation, then :func:`admin.retry_capture`
``GET/POST /spool/ID/resolve`` confirmation, then :func:`admin.resolve_capture`
``POST /spool/ID/sensitive``   flag (or unflag) a capture as sensitive; a flagged
                               capture's reveal asks for a reason category
``POST /spool/ID/download``    a quarantined capture's DICOM (or raw) file as an
                               attachment named by its spool id; audited first
                               (:mod:`.download_routes`)
``GET/POST /devices/D/start``  start a patient on device D (worklist, scan, typed,
                               unidentified) through the context desk
``GET /sessions/ID``           a session: patient, lesion, sensitive flag, End
``POST /sessions/ID/end``      end it
``GET/POST /sessions/ID/lesion`` body map and site list; choose or add a lesion
``POST /sessions/ID/sensitive``  flag the session's following captures
``GET/POST /sessions/ID/move`` move its unsent captures to another session
                               (confirmation, audited)
``POST /worklist/refresh``     ask the worklist server now
``POST /destinations/N/send-now`` send what waits for destination N's send window
                               now (audited; :mod:`.window_routes`)
``GET /held``                  captures held for want of a patient
``GET/POST /held/start``       start a patient for the chosen held captures
``POST /held/assign``          assign them (to an open session or a new one)
``/api/v1/...``                the integration API (:mod:`.api_routes`): JSON,
                               bearer tokens or the session + ``X-CSRF-Token``
=============================  ==================================================

The patient routes (devices, sessions, held) exist only with a context desk
(:mod:`gateway.context.desk`); they are in :mod:`.session_routes` and
:mod:`.held_routes`.

Every POST must carry the session's CSRF token (see :mod:`.auth`). Every request
but the open routes first looks at the users file (:mod:`.logins`): a changed file
ends the sessions it no longer backs, a missing or damaged one gets a 503 page that
says so. A spool id is ASCII digits up to SQLite's largest integer; anything else
is 404. Responses are
``Cache-Control: no-store`` (a revealed page never lands in a browser cache), with
a strict Content-Security-Policy (scripts and styles from ``/static`` only).
Ledger writes (retry, resolve) use their own connection with ``BEGIN IMMEDIATE``,
exactly as the ``dermgate spool`` commands do beside the service. Connections come in
through :mod:`.gate` (connection caps, the request deadline, the redirect of plain
HTTP on the TLS port); ``/events`` streams are capped per login and in all.

The routes live in :mod:`.login_routes`, :mod:`.overview_routes` and
:mod:`.spool_routes`, over the state they share (:mod:`.page_state`); this module
assembles them into the application, with its middleware and open routes, and
serves it.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web, web_response

from gateway.status.web import pages
from gateway.status.web.api_routes import API_PREFIX, ApiRoutes
from gateway.status.web.auth import SESSION_COOKIE, same_token
from gateway.status.web.download_routes import DownloadRoutes
from gateway.status.web.gate import Gate, Limits, default_max_connections, listen_sockets
from gateway.status.web.header import BOX_LINE, BoxLine, software_version
from gateway.status.web.held_routes import HeldRoutes
from gateway.status.web.login_routes import LoginRoutes
from gateway.status.web.logins import Unavailable
from gateway.status.web.metrics import CONTENT_TYPE
from gateway.status.web.overview_routes import (
    EVENT_STREAMS_PER_SESSION,
    EVENT_STREAMS_TOTAL,
    LIVE_INTERVAL,
    OverviewRoutes,
)
from gateway.status.web.page_state import SESSION_KEY, _html
from gateway.status.web.spool_routes import MAX_SPOOL_ID, SpoolRoutes
from gateway.status.web.window_routes import WindowRoutes

__all__ = [
    "EVENT_STREAMS_PER_SESSION",
    "EVENT_STREAMS_TOTAL",
    "HSTS",
    "LIVE_INTERVAL",
    "MAX_SPOOL_ID",
    "SESSION_KEY",
    "STATIC",
    "WebServer",
]

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
_OPEN = ("/healthz", "/login", "/favicon.ico")
_SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; form-action 'self'",
}
#: Browsers that saw the page over valid TLS keep to https for a year.
HSTS = "max-age=31536000"


class WebServer(
    LoginRoutes, OverviewRoutes, SpoolRoutes, DownloadRoutes, HeldRoutes, WindowRoutes, ApiRoutes
):
    """The page's state (sessions, lockout) and its aiohttp application."""

    # ----------------------------------------------------------------- app

    def app(self) -> web.Application:
        """The aiohttp application."""
        app = web.Application(
            middlewares=[
                self._api_errors,
                self._bounded,
                self._headers,
                self._box_line,
                self._api_auth,
                self._guard,
            ],
            client_max_size=64 * 1024,
        )
        app.on_response_prepare.append(self._identity_headers)
        r = app.router
        r.add_get("/healthz", self.healthz)
        r.add_get("/favicon.ico", self.no_favicon)
        r.add_get("/metrics", self.metrics_view)
        r.add_get("/login", self.login_form)
        r.add_post("/login", self.login)
        r.add_post("/logout", self.logout)
        r.add_get("/", self.overview)
        r.add_get("/events", self.events)
        r.add_get("/why", self.why)
        r.add_get("/spool", self.spool)
        r.add_get(r"/spool/{sid:[0-9]{1,19}}", self.capture)
        r.add_post(r"/spool/{sid:[0-9]{1,19}}/reveal", self.reveal)
        r.add_get(r"/spool/{sid:[0-9]{1,19}}/{action:retry|resolve}", self.confirm)
        r.add_post(r"/spool/{sid:[0-9]{1,19}}/retry", self.retry)
        r.add_post(r"/spool/{sid:[0-9]{1,19}}/resolve", self.resolve)
        r.add_post(r"/spool/{sid:[0-9]{1,19}}/sensitive", self.flag_capture)
        r.add_post(r"/spool/{sid:[0-9]{1,19}}/download", self.download)
        r.add_get("/devices/{device}/start", self.start_form)
        r.add_post("/devices/{device}/start", self.start)
        session = r"/sessions/{session:[0-9]{1,19}}"
        r.add_get(session, self.session_view)
        r.add_post(session + "/end", self.end)
        r.add_get(session + "/lesion", self.lesion_form)
        r.add_post(session + "/lesion", self.lesion)
        r.add_post(session + "/sensitive", self.flag)
        r.add_get(session + "/move", self.move_form)
        r.add_post(session + "/move", self.move)
        r.add_post("/worklist/refresh", self.refresh)
        r.add_post("/destinations/{name:[A-Za-z0-9_-]{1,32}}/send-now", self.send_now)
        r.add_get("/held", self.held)
        r.add_get("/held/start", self.held_start)
        r.add_post("/held/start", self.held_start)
        r.add_post("/held/assign", self.held_assign)
        r.add_static("/static/", STATIC)
        self.add_api_routes(app)  # /api/v1/...: .api_routes (its own authentication)
        return app

    @web.middleware
    async def _bounded(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """The body is read under the connection's request deadline (a trickled body
        is cut off like a trickled head); the handler then runs without it."""
        connection = None if self.gate is None else self.gate.connection_of(request.protocol)
        if connection is None:
            return await handler(request)
        if request.body_exists:
            await request.read()  # bounded by client_max_size
        connection.request_started(stream=request.path == "/events")
        try:
            return await handler(request)
        finally:
            connection.waiting()

    async def _identity_headers(self, request: web.Request, response: web.StreamResponse) -> None:
        """No ``Server`` header naming aiohttp and Python; HSTS when served over TLS."""
        response.headers.popall("Server", None)
        if self.tls:
            response.headers["Strict-Transport-Security"] = HSTS

    @web.middleware
    async def _headers(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            response = exc
        if not response.prepared:
            for key, value in _SECURITY_HEADERS.items():
                if key == "Cache-Control" and request.path.startswith("/static/"):
                    continue
                response.headers.setdefault(key, value)
        if isinstance(response, web.HTTPException):
            raise response
        return response

    @web.middleware
    async def _box_line(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Every page's header says which box, which DermGate and when it was made."""
        BOX_LINE.set(BoxLine(self.config.gateway.id, software_version(), time.time()))
        return await handler(request)

    @web.middleware
    async def _guard(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        path = request.path
        if path in _OPEN or path.startswith("/static/") or path.startswith(API_PREFIX):
            return await handler(request)  # the API authenticates in ApiRoutes._api_auth
        if path == "/metrics" and self.web.metrics_public:
            return await handler(request)
        users = self._users()
        if isinstance(users, Unavailable):
            return self._unavailable(users)
        session = self.sessions.get(request.cookies.get(SESSION_COOKIE))
        if session is None:
            if request.method == "GET" and path != "/events":
                raise web.HTTPSeeOther("/login")
            return web.Response(status=401, text="log in first\n")
        if request.method not in ("GET", "HEAD"):
            form = await request.post()
            token = form.get("csrf")
            if not same_token(token if isinstance(token, str) else None, session.csrf):
                log.warning("refused a %s to %s without a valid CSRF token", request.method, path)
                return _html(
                    pages.message_page(
                        "Refused",
                        "This form was not sent from this page (or it expired). Go back, "
                        "reload the page and try again.",
                    ),
                    403,
                )
        request[SESSION_KEY] = session
        return await handler(request)

    # ----------------------------------------------------------------- open routes

    async def healthz(self, request: web.Request) -> web.Response:
        """Liveness only."""
        return web.Response(text="ok\n")

    async def no_favicon(self, request: web.Request) -> web.Response:
        """No icon (and no redirect to the login page for the browser's icon request)."""
        return web.Response(status=404)

    async def metrics_view(self, request: web.Request) -> web.Response:
        """Prometheus text format."""
        body = await self.metrics.render()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    # ----------------------------------------------------------------- stage

    def ssl_context(self) -> ssl.SSLContext | None:
        """TLS for the page when ``tls_cert``/``tls_key`` are set."""
        if self.web.tls_cert is None or self.web.tls_key is None:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.web.tls_cert, self.web.tls_key)
        return ctx

    def url(self) -> str:
        """Where the page is served."""
        host, port = self.web.host_port()
        return f"{'https' if self.tls else 'http'}://{host}:{port}/"

    def limits(self) -> Limits:
        """The page's connection limits (``max_connections`` 0: from RLIMIT_NOFILE)."""
        return Limits(
            max_connections=self.web.max_connections or default_max_connections(),
            per_client=self.web.max_connections_per_client,
            request_timeout=self.web.request_timeout,
        )

    async def run(self, ready: Callable[[], None]) -> None:
        """Serve until cancelled (the gateway's supervisor runs this as a stage).

        Connections are accepted by a :class:`.gate.Gate` (caps, deadlines, the
        redirect of plain HTTP on the TLS port), which hands them to aiohttp."""
        # aiohttp's own answers to malformed requests bypass on_response_prepare:
        # keep versions out of their Server header too.
        web_response.SERVER_SOFTWARE = "DermGate"  # type: ignore[attr-defined]
        host, port = self.web.host_port()
        runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        try:
            assert runner.server is not None
            limits = self.limits()
            self.gate = Gate(runner.server, limits, self.ssl_context(), self.conditions)
            listeners = listen_sockets(host, port)
            log.info(
                "local page at %s (at most %d connections, %d per client address)",
                self.url(),
                limits.max_connections,
                limits.per_client,
            )
            ready()
            await self.gate.serve(listeners)
        finally:
            self._closing.set()
            await runner.cleanup()
