"""The integration API (``/api/v1/...``): JSON over HTTP for EHR launches, kiosks and
scanner apps, through the context stage's :class:`~gateway.context.desk.ContextDesk`.

=====================================  ===============================================
``GET /api/v1/worklist[?q=TEXT]``      cached worklist items (and the cache's state)
``POST /api/v1/sessions``              open (or switch) a device's session: 201
``GET /api/v1/sessions[?all=1]``       open sessions (``all``: closed ones too)
``GET /api/v1/sessions/ID``            one session
``DELETE /api/v1/sessions/ID``         end it: 200 with the ended session
``POST /api/v1/sessions/ID/lesion``    choose a lesion: 201 created, 200 found
``GET /api/v1/sessions/ID/lesions``    the registry of the session's patient
``GET /api/v1/held``                   captures held for want of a patient (no patient data)
``POST /api/v1/held/assign``           give held captures a session's context
=====================================  ===============================================

Who may ask: ``Authorization: Bearer TOKEN`` with a token of ``dermgate token add``
(:mod:`.tokens`, re-read when the file changes), or the page's login cookie, in which
case a state-changing request must carry the session's CSRF token in the
``X-CSRF-Token`` header (a foreign page cannot set it). Anything else is 401 with
``WWW-Authenticate: Bearer``, the same for a missing, unknown or wrong token; failed
token attempts are counted per client address and lock it out as failed logins do
(:class:`.auth.Lockout`, 429 while locked).

Every refusal is JSON ``{"error": {"code": ..., "message": ...}}`` with a 4xx status
(a 503 while a dependency is missing); messages never quote the request's values.
Every answer that shows patient data writes an audit line first (who, endpoint, how
many records; never the data): no line, no data. An assignment writes its spool ids
and session.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from gateway.context.desk import Actor, ContextDesk, ContextError
from gateway.status.web.api_requests import (
    ApiError,
    assign_request,
    from_context_error,
    held_json,
    lesion_json,
    lesion_request,
    parse_body,
    path_id,
    search_text,
    session_json,
    session_request,
    status_json,
    worklist_json,
)
from gateway.status.web.auth import SESSION_COOKIE, Lockout, same_token
from gateway.status.web.logins import Unavailable
from gateway.status.web.page_state import PageState
from gateway.status.web.tokens import MAX_TOKEN_LENGTH, TokenFile, TokensUnreadable

log = logging.getLogger(__name__)

API_PREFIX = "/api/"
CSRF_HEADER = "X-CSRF-Token"
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="DermGate API"'}
_NO_STORE = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
_ID = r"{sid:[0-9]{1,19}}"
_NO_TOKEN = "send a valid API token: Authorization: Bearer TOKEN"  # noqa: S105 - a message, not a secret


class _Who:
    """Who asks: ``kind`` "token" (its name) or "user" (the page login)."""

    __slots__ = ("kind", "name")

    def __init__(self, kind: str, name: str) -> None:
        self.kind = kind
        self.name = name

    def actor(self, operator: str = "") -> Actor:
        """The desk's actor. A token's operator is the one its request names ("" when
        none); a user's is the login (users have no other display name)."""
        if self.kind == "token":
            return Actor("token", self.name, operator_name=operator)
        return Actor("user", self.name, operator_name=self.name)

    @property
    def label(self) -> str:
        """``kind:name``, as the desk records who opened a session."""
        return f"{self.kind}:{self.name}"


WHO_KEY = web.RequestKey("api_who", _Who)


def api_json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON answer that no cache keeps."""
    return web.json_response(data, status=status, headers={**_NO_STORE, **(headers or {})})


def _error(err: ApiError, headers: dict[str, str] | None = None) -> web.Response:
    return api_json(err.body(), err.status, headers)


_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 413: "too_large", 415: "bad_request",
               429: "too_many"}  # fmt: skip


def _from_http(exc: web.HTTPException) -> web.Response:
    """aiohttp's own refusals (no route, wrong method, body too large) as JSON."""
    status = exc.status if 400 <= exc.status < 500 else 400
    messages = {404: "no such endpoint or id", 405: "method not allowed here",
                413: "the body is too large (at most 64 KiB)"}  # fmt: skip
    err = ApiError(status, _HTTP_CODES.get(status, "bad_request"),
                   messages.get(status, "the request was refused"))  # fmt: skip
    headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
    return _error(err, headers)


def _route(request: web.Request) -> str:
    """The route a request matched (its pattern, ``/api/v1/sessions/{sid}``), for the
    log: a path a client made up could carry anything, patient data included."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "an unknown API path"


class ApiRoutes(PageState):
    """The ``/api/v1`` routes and their front (authentication, JSON errors)."""

    @functools.cached_property
    def api_tokens(self) -> TokenFile:
        """The API tokens file, read again whenever it changes."""
        return TokenFile(self.config.tokens_path())

    @functools.cached_property
    def api_lockout(self) -> Lockout:
        """Failed token attempts per client address (the login's limits)."""
        return Lockout(
            self.web.lockout_failures, self.web.lockout_window, self.web.lockout_duration
        )

    def add_api_routes(self, app: web.Application) -> None:
        """Register the API's routes on ``app``."""
        r = app.router
        r.add_get("/api/v1/worklist", self.api_worklist)
        r.add_post("/api/v1/sessions", self.api_open_session)
        r.add_get("/api/v1/sessions", self.api_sessions)
        r.add_get(f"/api/v1/sessions/{_ID}", self.api_session)
        r.add_delete(f"/api/v1/sessions/{_ID}", self.api_end_session)
        r.add_post(f"/api/v1/sessions/{_ID}/lesion", self.api_lesion)
        r.add_get(f"/api/v1/sessions/{_ID}/lesions", self.api_lesions)
        r.add_get("/api/v1/held", self.api_held)
        r.add_post("/api/v1/held/assign", self.api_assign)

    # ----------------------------------------------------------------- front

    @web.middleware
    async def _api_errors(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """For ``/api/`` paths, the outermost layer: every refusal (ours, the context
        stage's, aiohttp's own such as a body over 64 KiB) as JSON, never a traceback."""
        if not request.path.startswith(API_PREFIX):
            return await handler(request)
        try:
            return await handler(request)
        except ApiError as err:
            return _error(err)
        except ContextError as err:
            return _error(from_context_error(err))
        except web.HTTPException as exc:
            return _from_http(exc)
        except Exception as err:  # a bug: no traceback to the client, none with data in the log
            frames = traceback.extract_tb(err.__traceback__)
            where = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?"
            # The type and the place only: an exception's message may quote data.
            log.error("API %s %s failed: %s at %s", request.method, _route(request),
                      type(err).__name__, where)  # fmt: skip
            return _error(ApiError(500, "internal", "the gateway failed; see its log"))

    @web.middleware
    async def _api_auth(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """For ``/api/`` paths, once the request is in (under the connection's
        deadline, as for the page): who asks, or a refusal."""
        if not request.path.startswith(API_PREFIX):
            return await handler(request)
        refused = self._api_authenticate(request)
        if refused is not None:
            return refused
        return await handler(request)

    def _api_authenticate(self, request: web.Request) -> web.Response | None:
        """Set :data:`WHO_KEY` from a bearer token or the page's session, else refuse."""
        header = request.headers.get("Authorization")
        if header is not None:
            return self._api_bearer(request, header)
        users = self._users()  # a changed users file ends the sessions it no longer backs
        session = self.sessions.get(request.cookies.get(SESSION_COOKIE))
        if session is None or isinstance(users, Unavailable):
            return _error(ApiError(401, "unauthorized", _NO_TOKEN), _CHALLENGE)
        if request.method not in ("GET", "HEAD") and not same_token(
            request.headers.get(CSRF_HEADER), session.csrf
        ):
            log.warning("refused an API %s to %s without a valid CSRF token", request.method,
                        _route(request))  # fmt: skip
            return _error(
                ApiError(403, "csrf", f"a page session's request needs the {CSRF_HEADER} header")
            )
        request[WHO_KEY] = _Who("user", session.user)
        return None

    def _api_bearer(self, request: web.Request, header: str) -> web.Response | None:
        addr = request.remote or "unknown"
        keys = [f"addr:{addr}"]
        attempt = self.api_lockout.begin(keys)
        if not attempt.admitted:
            wait = max(1, round(attempt.locked_for or self.web.lockout_window))
            return _error(
                ApiError(429, "too_many", "too many failed token attempts; wait, then retry"),
                {"Retry-After": str(wait)},
            )
        try:
            scheme, _, token = header.strip().partition(" ")
            tokens = self.api_tokens.current()
            if isinstance(tokens, TokensUnreadable):
                return _error(
                    ApiError(503, "tokens_unavailable", "the API tokens file cannot be read")
                )
            name = None
            if scheme.lower() == "bearer" and len(token) <= MAX_TOKEN_LENGTH:
                name = tokens.match(token.strip())
        finally:
            self.api_lockout.release(attempt)
        if name is None:
            if self.api_lockout.fail(keys):
                log.warning("refused API tokens from %s: locked out for %.0f s", addr,
                            self.web.lockout_duration)  # fmt: skip
            else:
                log.warning("refused an API request from %s: no valid token", addr)
            return _error(ApiError(401, "unauthorized", _NO_TOKEN), _CHALLENGE)
        self.api_lockout.succeed(keys)
        request[WHO_KEY] = _Who("token", name)
        return None

    def _api_desk(self) -> ContextDesk:
        if self.desk is None:
            raise ApiError(503, "no_context", "patient sessions are not set up on this gateway")
        return self.desk

    async def _api_audit(self, request: web.Request, action: str, **fields: int) -> None:
        """One audit line before patient data is shown: no line, no data."""
        who = request[WHO_KEY]
        try:
            await asyncio.to_thread(
                self.audit.append_fields, who.name, action, {"via": who.kind, **fields}
            )
        except OSError as err:
            log.error("audit log %s not writable (%s): API answer refused", self.audit.path,
                      err.strerror)  # fmt: skip
            raise ApiError(
                503, "audit_unavailable", "the audit log cannot be written; nothing is shown"
            ) from None

    # ----------------------------------------------------------------- worklist

    async def api_worklist(self, request: web.Request) -> web.Response:
        """Cached worklist items matching ``?q=`` (name, ID, birth date, accession)."""
        search = search_text(request.query.get("q"))
        desk = self._api_desk()
        items = await desk.worklist(search)
        status = status_json(desk.worklist_status(), time.time())
        await self._api_audit(request, "api.worklist", records=len(items))
        return api_json({"items": [worklist_json(i) for i in items], "status": status})

    # ----------------------------------------------------------------- sessions

    async def api_open_session(self, request: web.Request) -> web.Response:
        """Open (or switch) a device's session: 201 with the session."""
        new = session_request(parse_body(await request.read()))
        desk = self._api_desk()
        view = await desk.open_session(
            new.device, new.request, request[WHO_KEY].actor(new.operator)
        )
        await self._api_audit(request, "api.session.open", session=view.id, records=1)
        return api_json(session_json(view), 201)

    async def api_sessions(self, request: web.Request) -> web.Response:
        """Open sessions, newest first (``?all=1``: closed ones too)."""
        flag = request.query.get("all", "")
        if flag not in ("", "0", "1", "true", "false"):
            raise ApiError(422, "bad_request", "'all' must be 1 or 0")
        desk = self._api_desk()
        views = await desk.sessions(open_only=flag not in ("1", "true"))
        await self._api_audit(request, "api.sessions", records=len(views))
        return api_json({"sessions": [session_json(v) for v in views]})

    async def api_session(self, request: web.Request) -> web.Response:
        """One session."""
        sid = path_id(request.match_info["sid"], "no_such_session")
        view = await self._api_desk().session(sid)
        await self._api_audit(request, "api.session", session=view.id, records=1)
        return api_json(session_json(view))

    async def api_end_session(self, request: web.Request) -> web.Response:
        """End a session: 200 with it, ended."""
        sid = path_id(request.match_info["sid"], "no_such_session")
        desk = self._api_desk()
        view = await desk.end_session(sid, request[WHO_KEY].actor())
        await self._api_audit(request, "api.session.end", session=view.id, records=1)
        return api_json(session_json(view))

    async def api_lesion(self, request: web.Request) -> web.Response:
        """Choose the lesion of the session's following captures: 201 when it was
        created now, 200 when it was in the patient's registry already."""
        sid = path_id(request.match_info["sid"], "no_such_session")
        wanted = lesion_request(parse_body(await request.read()))
        desk = self._api_desk()
        before = {lesion.id for lesion in await desk.lesions(sid)}
        view = await desk.set_lesion(sid, wanted, request[WHO_KEY].actor())
        await self._api_audit(request, "api.lesion", session=sid, records=1)
        return api_json(lesion_json(view), 200 if view.id in before else 201)

    async def api_lesions(self, request: web.Request) -> web.Response:
        """The lesion registry of the session's patient."""
        sid = path_id(request.match_info["sid"], "no_such_session")
        views = await self._api_desk().lesions(sid)
        await self._api_audit(request, "api.lesions", session=sid, records=len(views))
        return api_json({"lesions": [lesion_json(v) for v in views]})

    # ----------------------------------------------------------------- held captures

    async def api_held(self, request: web.Request) -> web.Response:
        """Captures held for want of a patient (no patient data: not audited)."""
        views = await self._api_desk().held()
        return api_json({"held": [held_json(v) for v in views]})

    async def api_assign(self, request: web.Request) -> web.Response:
        """Give held (or wrapped, unsent) captures a session's context: 200 with the
        spool ids released to wrapping and the session."""
        who = request[WHO_KEY]
        job = assign_request(parse_body(await request.read()))
        desk = self._api_desk()
        if job.new is None:
            released = await desk.assign(job.spool_ids, job.session_id, None, who.actor())
            session_id = job.session_id
        else:
            new = job.new
            released = await desk.assign(
                job.spool_ids, None, (new.device, new.request), who.actor(new.operator)
            )
            opened = [s.id for s in await desk.sessions() if s.device == new.device]
            session_id = opened[0] if opened else None
        try:  # one line per capture, as the page's moves and reveals write them
            for spool_id in released:
                fields: dict[str, int | str] = {"via": who.kind, "spool_id": spool_id}
                if session_id is not None:
                    fields["session"] = session_id
                await asyncio.to_thread(self.audit.append_fields, who.name, "api.assign", fields)
        except OSError as err:  # done already: say so in the log, still answer
            log.error("audit log %s not writable (%s): assignment of spool ids %s not audited",
                      self.audit.path, err.strerror, released)  # fmt: skip
        log.info("%s assigned %d held capture(s) to session %s", who.label, len(released),
                 session_id)  # fmt: skip
        return api_json({"released": released, "session": session_id})
