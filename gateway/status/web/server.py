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
=============================  ==================================================

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
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import hashlib
import hmac
import logging
import re
import secrets
import sqlite3
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web, web_response

from gateway.core.config import DermGateConfig, WebSettings
from gateway.spool import admin
from gateway.spool.dirs import SpoolDirs
from gateway.spool.ledger import open_ledger
from gateway.spool.states import CaptureState
from gateway.status.web import pages
from gateway.status.web.audit import AuditLog
from gateway.status.web.auth import (
    LOGIN_COOKIE,
    SESSION_COOKIE,
    Lockout,
    Session,
    Sessions,
    same_token,
)
from gateway.status.web.checks import run_checks
from gateway.status.web.data import Figures, read_figures, read_spool, verdict
from gateway.status.web.gate import (
    Condition,
    ConditionLog,
    Gate,
    Limits,
    default_max_connections,
    listen_sockets,
)
from gateway.status.web.logins import LoginFile, Unavailable, Why
from gateway.status.web.metrics import CONTENT_TYPE, Metrics
from gateway.status.web.users import Users

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
LIVE_INTERVAL = 2.0
MAX_SPOOL_ID = 2**63 - 1  # SQLite's largest INTEGER
_OPEN = ("/healthz", "/login", "/favicon.ico")
_SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; form-action 'self'",
}
SESSION_KEY = web.RequestKey("session", Session)
#: Live overview streams (``/events``) one login may hold, and all logins together.
EVENT_STREAMS_PER_SESSION = 4
EVENT_STREAMS_TOTAL = 32
#: Browsers that saw the page over valid TLS keep to https for a year.
HSTS = "max-age=31536000"


def _html(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")


def _spool_id(request: web.Request) -> int:
    """The spool id in the path (ASCII digits by the route); beyond SQLite's
    integers it can name no capture: 404, like any unknown id."""
    sid = int(request.match_info["sid"])
    if sid > MAX_SPOOL_ID:
        raise web.HTTPNotFound(text=f"no capture with spool id {sid}\n")
    return sid


class WebServer:
    """The page's state (sessions, lockout) and its aiohttp application."""

    def __init__(
        self,
        config: DermGateConfig,
        snapshot: Callable[[], Awaitable[dict[str, Any]]] | None = None,
        poke: Callable[[], None] = lambda: None,
    ) -> None:
        """``snapshot``: devices, destinations and alarms as in the gateway state
        document (:func:`.live.live_view`); ``poke`` wakes the wrapper and the
        forwarders after a retry."""
        assert config.web is not None
        self.config = config
        self.web: WebSettings = config.web
        self.snapshot = snapshot
        self.poke = poke
        self.dirs = SpoolDirs(config.spool_dir())
        self.sessions = Sessions(self.web.session_lifetime)
        self.lockout = Lockout(
            self.web.lockout_failures, self.web.lockout_window, self.web.lockout_duration
        )
        self.audit = AuditLog(config.audit_path())
        self.logins = LoginFile(config.users_path())
        self._logins_generation = 0
        self.tls = self.web.tls_cert is not None
        self.metrics = Metrics(self.figures)
        self._login_key = secrets.token_bytes(32)
        self._closing = asyncio.Event()
        self.conditions = ConditionLog()
        self.gate: Gate | None = None
        self._streams: collections.Counter[str] = collections.Counter()

    # ----------------------------------------------------------------- data

    async def figures(self) -> Figures:
        """Ledger, disk, devices and alarms now."""
        dests = [(d.name, d.host, d.port, d.storage_commitment) for d in self.config.destinations]
        fig = await asyncio.to_thread(
            read_figures,
            self.config.ledger_path(),
            self.config.spool_dir(),
            self.config.spool.reserve_mb * 1024 * 1024,
            dests,
        )
        if self.snapshot is None:
            return fig
        doc = await self.snapshot()
        known = {str(d.get("name")): d for d in doc.get("destinations", [])}
        overlaid = []
        for dest in fig.destinations:
            state = known.get(dest.name, {})
            error = state.get("last_error")
            overlaid.append(
                dataclasses.replace(
                    dest,
                    reachable=state.get("reachable"),
                    last_error=error.get("message") if isinstance(error, dict) else dest.last_error,
                )
            )
        return dataclasses.replace(
            fig,
            destinations=overlaid,
            devices=list(doc.get("devices", [])),
            alarms=list(doc.get("alarms", [])),
        )

    async def _fragment(self) -> str:
        fig = await self.figures()
        return pages.overview_fragment(fig, verdict(fig))

    # ----------------------------------------------------------------- logins

    def _users(self) -> Users | Unavailable:
        """The logins now. When the users file changed, the sessions it no longer
        backs (new password, user removed, no users at all) end here, at once."""
        current = self.logins.current()
        if self.logins.generation == self._logins_generation:
            return current
        self._logins_generation = self.logins.generation
        if isinstance(current, Users):
            users = current
            ended = self.sessions.retain(lambda s: users.fingerprint(s.user) == s.fingerprint)
        elif current.why is Why.NO_USERS:
            ended = self.sessions.retain(lambda s: False)
        else:
            ended = []  # cannot tell who changed: pages refuse until it is readable
        for name in sorted(set(ended)):
            log.info("sessions of user %s ended: new password or user removed", name)
        return current

    def _unavailable(self, problem: Unavailable) -> web.Response:
        """The page shown instead of any other while nobody can log in."""
        if problem.why is Why.UNREADABLE:
            title = "Logins unavailable"
            text = (
                "The users file of this page cannot be read (it is damaged, or the service "
                "may not read it), so nobody can log in. On the box, run dermgate "
                "check-config with the configuration file: it names the file and what is "
                "wrong with it."
            )
        else:
            title = "No logins yet"
            text = (
                "Nobody can log in: no login has been set up. On the box, run "
                "dermgate user add NAME --config FILE to add one."
            )
        return _html(pages.message_page(title, text), 503)

    # ----------------------------------------------------------------- app

    def app(self) -> web.Application:
        """The aiohttp application."""
        app = web.Application(
            middlewares=[self._bounded, self._headers, self._guard], client_max_size=64 * 1024
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
        r.add_static("/static/", STATIC)
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
    async def _guard(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        path = request.path
        if path in _OPEN or path.startswith("/static/"):
            return await handler(request)
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

    def _login_token(self, nonce: str) -> str:
        return hmac.new(self._login_key, nonce.encode(), hashlib.sha256).hexdigest()

    def _login_response(
        self, request: web.Request, message: str = "", status: int = 200
    ) -> web.Response:
        # Keep a nonce the browser already has: a second login page (another tab, a
        # redirected favicon request) must not invalidate the form on screen.
        nonce = request.cookies.get(LOGIN_COOKIE, "")
        if not re.fullmatch(r"[A-Za-z0-9_-]{32}", nonce):
            nonce = secrets.token_urlsafe(24)
        response = _html(pages.login_page(self._login_token(nonce), message), status)
        response.set_cookie(
            LOGIN_COOKIE,
            nonce,
            httponly=True,
            samesite="Strict",
            secure=self.tls,
            path="/login",
            max_age=3600,
        )
        return response

    async def login_form(self, request: web.Request) -> web.StreamResponse:
        """The login page (or the overview when already logged in)."""
        users = self._users()
        if isinstance(users, Unavailable):
            return self._unavailable(users)
        if self.sessions.get(request.cookies.get(SESSION_COOKIE)) is not None:
            raise web.HTTPSeeOther("/")
        return self._login_response(request)

    def _refused_login(self, request: web.Request, locked_for: float) -> web.Response:
        if locked_for:
            minutes = max(1, round(locked_for / 60))
            text = (
                f"Too many failed logins. Logins are blocked for {minutes} more minute(s); "
                "wait, then try again."
            )
        else:
            text = "Too many login attempts at once. Wait a minute, then try again."
        return self._login_response(request, text, 429)

    async def login(self, request: web.Request) -> web.StreamResponse:
        """Check the form token, the lockout and the password; start a session."""
        users = self._users()
        if isinstance(users, Unavailable):
            return self._unavailable(users)
        form = await request.post()
        nonce = request.cookies.get(LOGIN_COOKIE, "")
        token = form.get("csrf")
        if not nonce or not same_token(
            token if isinstance(token, str) else None, self._login_token(nonce)
        ):
            return self._login_response(request, "The login form expired. Please try again.", 403)
        user = str(form.get("user") or "").strip()
        password = str(form.get("password") or "")
        addr = request.remote or "unknown"
        keys = [f"user:{user.lower()}", f"addr:{addr}"]
        # The attempt counts from here on, before the slow hash: parallel guesses
        # cannot all pass the check while none of them has failed yet.
        attempt = self.lockout.begin(keys)
        if not attempt.admitted:
            log.debug("login refused for %r from %s: locked out", user, addr)
            return self._refused_login(request, attempt.locked_for)
        try:
            good = await asyncio.to_thread(users.verify, user, password)
        finally:
            self.lockout.release(attempt)
        if self._users() is not users:  # changed during the check: its verdict is stale
            return self._login_response(request, "The logins changed meanwhile; try again.", 409)
        if not good:
            if self.lockout.fail(attempt.keys):
                log.warning(
                    "failed login for %r from %s: logins locked for %.0f s",
                    user,
                    addr,
                    self.web.lockout_duration,
                )
            else:
                log.warning("failed login for %r from %s", user, addr)
            return self._login_response(request, "Wrong user name or password.", 401)
        self.lockout.succeed(attempt.keys)
        cookie, _ = self.sessions.create(user, fingerprint=users.fingerprint(user) or "")
        log.info("user %s logged in from %s", user, addr)
        response = web.HTTPSeeOther("/")
        response.set_cookie(
            SESSION_COOKIE,
            cookie,
            httponly=True,
            samesite="Strict",
            secure=self.tls,
            path="/",
            max_age=int(self.web.session_lifetime),
        )
        response.del_cookie(LOGIN_COOKIE, path="/login")
        raise response

    async def logout(self, request: web.Request) -> web.StreamResponse:
        """End the session."""
        self.sessions.end(request.cookies.get(SESSION_COOKIE))
        response = web.HTTPSeeOther("/login")
        response.del_cookie(SESSION_COOKIE, path="/")
        raise response

    # ----------------------------------------------------------------- pages

    async def overview(self, request: web.Request) -> web.Response:
        """The at-a-glance page."""
        s = request[SESSION_KEY]
        return _html(pages.overview_page(await self._fragment(), s.user, s.csrf))

    async def events(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: the overview fragment whenever it changes. At most
        :data:`EVENT_STREAMS_PER_SESSION` per login and :data:`EVENT_STREAMS_TOTAL`
        in all; past that 429."""
        token = request.cookies.get(SESSION_COOKIE)
        key = hashlib.sha256((token or "").encode()).hexdigest()
        if (
            self._streams[key] >= EVENT_STREAMS_PER_SESSION
            or sum(self._streams.values()) >= EVENT_STREAMS_TOTAL
        ):
            self.conditions.note(Condition.EVENT_STREAMS, f"user {request[SESSION_KEY].user}")
            return web.Response(
                status=429,
                text="Too many live overviews open: close another tab of this page.\n",
            )
        self._streams[key] += 1
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"}
        )
        try:
            await response.prepare(request)
            await self._stream(request, response, token)
        except (ConnectionError, TimeoutError):
            # The browser left (another page, a closed tab) or stopped reading.
            log.debug("live overview: the browser left")
        finally:
            self._streams[key] -= 1
            if self._streams[key] <= 0:
                del self._streams[key]
        return response

    async def _stream(
        self, request: web.Request, response: web.StreamResponse, token: str | None
    ) -> None:
        last = ""
        quiet = 0.0
        while not self._closing.is_set():
            if request.transport is None or request.transport.is_closing():
                log.debug("live overview: the browser left")
                return
            self._users()  # ends this session at once if its user changed
            if self.sessions.get(token) is None:
                await self._send(response, b"event: logout\ndata: \n\n")
                return
            fragment = await self._fragment()
            if fragment != last:
                data = "".join(f"data: {line}\n" for line in fragment.splitlines())
                await self._send(response, f"event: overview\n{data}\n".encode())
                last, quiet = fragment, 0.0
            elif quiet >= 15:
                await self._send(response, b": keep-alive\n\n")
                quiet = 0.0
            try:
                async with asyncio.timeout(LIVE_INTERVAL):  # not wait_for (3.11)
                    await self._closing.wait()
            except TimeoutError:
                quiet += LIVE_INTERVAL

    async def _send(self, response: web.StreamResponse, data: bytes) -> None:
        """One write to a live stream; a browser that stops reading is dropped."""
        async with asyncio.timeout(self.web.request_timeout):
            await response.write(data)

    async def why(self, request: web.Request) -> web.Response:
        """Run the checks now."""
        s = request[SESSION_KEY]
        fig = await self.figures()
        results = await asyncio.to_thread(run_checks, self.config, fig)
        return _html(pages.why_page(results, s.user, s.csrf))

    async def spool(self, request: web.Request) -> web.Response:
        """The spool view."""
        s = request[SESSION_KEY]
        state = request.query.get("state") or None
        if state is not None and state not in CaptureState.__members__:
            state = None
        rows = await asyncio.to_thread(read_spool, self.config.ledger_path(), state)
        return _html(pages.spool_page(rows, state, s.user, s.csrf))

    def _read_details(self, sid: int) -> dict[str, Any]:
        from gateway.spool.details import capture_details

        conn = open_ledger(self.config.ledger_path(), readonly=True)
        try:
            entry = admin.find_entry(conn, sid)
            records = admin.deliveries(conn, entry.spool_id)
        finally:
            conn.close()
        return capture_details(entry, records, self.dirs)

    async def _details(self, request: web.Request) -> tuple[int, dict[str, Any]]:
        sid = _spool_id(request)
        try:
            return sid, await asyncio.to_thread(self._read_details, sid)
        except admin.NoSuchCapture as err:
            raise web.HTTPNotFound(text=f"{err}\n") from err

    async def capture(self, request: web.Request) -> web.Response:
        """One capture, patient data masked."""
        s = request[SESSION_KEY]
        _, details = await self._details(request)
        return _html(pages.capture_page(details, None, s.user, s.csrf))

    def _read_patient(self, sid: int) -> dict[str, str] | None:
        from gateway.spool.details import patient_of

        conn = open_ledger(self.config.ledger_path(), readonly=True)
        try:
            entry = admin.find_entry(conn, sid)
        finally:
            conn.close()
        found = patient_of(entry, self.dirs)
        return None if found is None else found[0]

    async def reveal(self, request: web.Request) -> web.Response:
        """Patient data of one capture, from its DICOM file; audited before it is shown."""
        s = request[SESSION_KEY]
        sid, details = await self._details(request)
        try:
            await asyncio.to_thread(self.audit.append, s.user, "reveal", sid)
        except OSError as err:
            log.error("audit log %s not writable (%s): reveal refused", self.audit.path, err)
            return _html(
                pages.message_page(
                    "Refused",
                    "The audit log cannot be written, so patient data is not shown. See the log.",
                    s.user,
                    s.csrf,
                ),
                500,
            )
        try:
            patient = await asyncio.to_thread(self._read_patient, sid)
        except Exception as err:  # pydicom raises several kinds for a damaged file
            log.error("spool id %d: cannot read its DICOM file: %s", sid, type(err).__name__)
            patient = None
        if patient is None:
            return _html(
                pages.capture_page(
                    details,
                    None,
                    s.user,
                    s.csrf,
                    "No readable DICOM file and no patient data from the device: nothing to show.",
                )
            )
        log.info("user %s revealed the patient data of spool id %d (audited)", s.user, sid)
        return _html(pages.capture_page(details, patient, s.user, s.csrf))

    async def confirm(self, request: web.Request) -> web.Response:
        """The confirmation step before retry or resolve."""
        s = request[SESSION_KEY]
        sid, details = await self._details(request)
        action = request.match_info["action"]
        return _html(pages.confirm_page(sid, action, details["reason"], s.user, s.csrf))

    def _write(self, op: Callable[[sqlite3.Connection], Any]) -> Any:
        conn = open_ledger(self.config.ledger_path())
        try:
            return op(conn)
        finally:
            conn.close()

    async def _act(
        self, request: web.Request, action: str, op: Callable[[sqlite3.Connection], Any]
    ) -> web.Response:
        s = request[SESSION_KEY]
        sid = _spool_id(request)
        try:
            outcome = await asyncio.to_thread(self._write, op)
        except admin.NoSuchCapture as err:
            raise web.HTTPNotFound(text=f"{err}\n") from err
        except admin.NotPossible as err:
            return _html(pages.message_page("Not possible", str(err), s.user, s.csrf), 409)
        log.info("user %s: %s of spool id %d", s.user, action, sid)
        self.poke()
        if action == "retry":
            state = outcome.state
            if state == CaptureState.CAPTURED:
                text = f"Retry requested: capture {sid} is now CAPTURED and will be wrapped again."
            elif state == CaptureState.WRAPPED:
                text = f"Retry requested: capture {sid} is now WRAPPED and will be sent again."
            else:
                text = f"Capture {sid} is now {state}: every destination already has it."
        else:
            text = f"Capture {sid} is marked as resolved."
        _, details = await self._details(request)
        return _html(pages.capture_page(details, None, s.user, s.csrf, text))

    async def retry(self, request: web.Request) -> web.Response:
        """Release a quarantined capture (after confirmation)."""
        sid = _spool_id(request)
        names = [d.name for d in self.config.destinations]
        return await self._act(
            request, "retry", lambda conn: admin.retry_capture(conn, self.dirs, sid, names)
        )

    async def resolve(self, request: web.Request) -> web.Response:
        """Mark a quarantined capture as resolved (after confirmation)."""
        s = request[SESSION_KEY]
        sid = _spool_id(request)
        form = await request.post()
        resolution = str(form.get("resolution") or "")
        return await self._act(
            request,
            "resolve",
            lambda conn: admin.resolve_capture(conn, sid, resolution, s.user),
        )

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
