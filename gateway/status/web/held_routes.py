"""The local page's held captures (``/held``) and the move of a session's unsent
captures to another session (``/sessions/ID/move``): see :mod:`.server`.

Held captures are listed without patient data and assigned in one action to an open
session or to a patient started right there (worklist, scan, typed, unidentified).
A move asks for confirmation and writes one audit line per capture (session ids
only) before the desk re-binds them; no audit line, no move.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from gateway.context.desk import ContextError, ContextErrorCode, SessionView
from gateway.spool.capture_marks import SessionCapture, unsent_of_session
from gateway.spool.ledger import open_ledger
from gateway.status.web import context_pages, pages
from gateway.status.web.page_state import SESSION_KEY, _html, log
from gateway.status.web.session_routes import (
    FormData,
    SessionRoutes,
    _session_id,
    actor_of,
    session_request,
)

_MAX_IDS = 500


def _ids(values: list[str]) -> list[int]:
    ids = []
    for v in values[:_MAX_IDS]:
        if v.isascii() and v.isdigit() and len(v) <= 18:
            ids.append(int(v))
    return sorted(set(ids))


def _form_ids(form: FormData) -> list[int]:
    return _ids([v for v in form.getall("spool", []) if isinstance(v, str)])


def _session_number(text: str) -> int:
    if not (text.isascii() and text.isdigit() and len(text) <= 18):
        raise ContextError(ContextErrorCode.NO_SUCH_SESSION, "No such session.")
    return int(text)


def _move_choice(
    form: FormData, view: SessionView, unsent: list[SessionCapture], targets: list[SessionView]
) -> tuple[list[int], SessionView]:
    """The chosen captures (all unsent captures of ``view``) and the target session."""
    chosen = _form_ids(form)
    ids = [c.spool_id for c in unsent if c.spool_id in chosen]
    if not ids or len(ids) != len(chosen):
        raise ContextError(
            ContextErrorCode.ALREADY_SENT, "Choose captures of this session that are not sent yet."
        )
    to = str(form.get("to") or "")
    target = next((t for t in targets if str(t.id) == to and t.id != view.id), None)
    if target is None:
        raise ContextError(ContextErrorCode.NO_SUCH_SESSION, "Choose an open session.")
    return ids, target


class HeldRoutes(SessionRoutes):
    """Held captures, their assignment, and moving captures between sessions."""

    async def _held_page(
        self, request: web.Request, message: str = "", status: int = 200
    ) -> web.Response:
        desk = self._desk()
        s = request[SESSION_KEY]
        try:
            held = await desk.held()
            sessions = await desk.sessions(open_only=True)
        except ContextError as err:
            return self._refused(request, err)
        if not await self.audited_view(s.user, "sessions", len(sessions) if held else 0):
            sessions = []
            message = message or "The audit log cannot be written, so open patients are not shown."
        return _html(context_pages.held_page(held, sessions, s.user, s.csrf, message), status)

    async def held(self, request: web.Request) -> web.Response:
        """Captures held for want of a patient."""
        return await self._held_page(request)

    async def held_start(self, request: web.Request) -> web.Response:
        """Start a patient for the chosen held captures (GET: search; POST: from /held)."""
        desk = self._desk()
        if request.method == "POST":
            form = await request.post()
            ids, device = _form_ids(form), str(form.get("device") or "")
        else:
            ids, device = _ids(request.query.getall("spool", [])), request.query.get("device", "")
        if not ids:
            return await self._held_page(request, "Choose at least one capture first.", 400)
        devices = desk.devices()
        if device not in devices:
            try:
                held = {h.spool_id: h.device for h in await desk.held()}
            except ContextError as err:
                return self._refused(request, err, "/held")
            device = next((held[i] for i in ids if held.get(i) in devices), "")
            device = device or (devices[0] if devices else "")
        hidden = [("spool", str(i)) for i in ids] + [("device", device)]
        return await self._start_page(
            request,
            device,
            action="/held/assign",
            search_action="/held/start",
            hidden=hidden,
            title=f"Start a patient on {device} for {len(ids)} held capture(s)",
        )

    async def held_assign(self, request: web.Request) -> web.Response:
        """Assign the chosen held captures to an open session or a new one, at once."""
        desk = self._desk()
        form = await request.post()
        ids = _form_ids(form)
        if not ids:
            return await self._held_page(request, "Choose at least one capture first.", 400)
        session = str(form.get("session") or "")
        try:
            if session:
                done = await desk.assign(ids, _session_number(session), None, actor_of(request))
            else:
                device = str(form.get("device") or "")
                req = await session_request(desk, form)
                done = await desk.assign(ids, None, (device, req), actor_of(request))
        except ContextError as err:
            return self._refused(request, err, "/held")
        log.info("user %s assigned %d held capture(s)", request[SESSION_KEY].user, len(done))
        self.poke()
        return await self._held_page(
            request, f"{len(done)} capture(s) assigned: they are wrapped and sent now."
        )

    def _read_unsent(self, session_id: int) -> list[SessionCapture]:
        path = self.config.ledger_path()
        if not path.exists():
            return []
        conn = open_ledger(path, readonly=True)
        try:
            return unsent_of_session(conn, session_id)
        finally:
            conn.close()

    async def _move_parts(
        self, request: web.Request
    ) -> tuple[SessionView, list[SessionCapture], list[SessionView]]:
        desk = self._desk()
        sid = _session_id(request)
        view = await desk.session(sid)
        unsent = await asyncio.to_thread(self._read_unsent, sid)
        return view, unsent, await desk.sessions(open_only=True)

    async def move_form(self, request: web.Request) -> web.Response:
        """The session's unsent captures, to hand to another open session."""
        s = request[SESSION_KEY]
        try:
            view, unsent, targets = await self._move_parts(request)
        except ContextError as err:
            return self._refused(request, err)
        if not await self.audited_view(s.user, "sessions", 1 + len(targets), session=view.id):
            return self._refused(
                request,
                ContextError(
                    ContextErrorCode.BAD_REQUEST,
                    "The audit log cannot be written, so the patients are not shown. See the log.",
                ),
            )
        return _html(context_pages.move_page(view, unsent, targets, s.user, s.csrf))

    async def move(self, request: web.Request) -> web.Response:
        """Confirm, then audit and move the chosen unsent captures to another session."""
        s = request[SESSION_KEY]
        form = await request.post()
        try:
            view, unsent, targets = await self._move_parts(request)
            ids, target = _move_choice(form, view, unsent, targets)
        except ContextError as err:
            return self._refused(request, err, f"/sessions/{_session_id(request)}")
        if form.get("confirm") != "yes":
            return _html(context_pages.move_confirm_page(view, ids, target, s.user, s.csrf))
        try:
            for sid in ids:
                detail = {"from_session": view.id, "to_session": target.id}
                await asyncio.to_thread(self.audit.append, s.user, "move", sid, detail)
        except OSError as err:
            log.error("audit log %s not writable (%s): move refused", self.audit.path, err)
            return _html(
                pages.message_page(
                    "Refused",
                    "The audit log cannot be written, so nothing was moved. See the log.",
                    s.user,
                    s.csrf,
                ),
                500,
            )
        try:
            done = await self._desk().assign(ids, target.id, None, actor_of(request))
        except ContextError as err:
            return self._refused(request, err, f"/sessions/{view.id}")
        log.info("user %s moved %d capture(s) between sessions (audited)", s.user, len(done))
        self.poke()
        raise web.HTTPSeeOther(f"/sessions/{target.id}")
