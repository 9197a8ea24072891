"""The local page's patient routes: starting, showing and ending a device's session,
its lesion and its sensitive flag (see :mod:`.server` for the table of routes).

Everything goes through the context stage's :class:`~gateway.context.desk.ContextDesk`
(``self.desk``); a refused request (:class:`~gateway.context.desk.ContextError`)
becomes a plain message on the page, never a 500. Without a desk these routes are 404.
"""

from __future__ import annotations

import re
import time
from urllib.parse import urlencode

from aiohttp import web
from multidict import MultiDictProxy

from gateway.context.desk import (
    Actor,
    ContextDesk,
    ContextError,
    ContextErrorCode,
    LesionRequest,
    PickItem,
    Scanned,
    SessionRequest,
    TypedPatient,
    Unidentified,
)
from gateway.core.capture import Laterality, PatientContext
from gateway.status.web import context_pages, lesion_pages, pages
from gateway.status.web.page_state import SESSION_KEY, PageState, _html, log

_NOT_FOUND = (ContextErrorCode.NO_SUCH_SESSION, ContextErrorCode.UNKNOWN_DEVICE)
_DATE = re.compile(r"(\d{4})-?(\d{2})-?(\d{2})")

FormData = MultiDictProxy[str | bytes | bytearray | web.FileField]


def actor_of(request: web.Request) -> Actor:
    """The logged-in user, who is also recorded as the operator."""
    user = request[SESSION_KEY].user
    return Actor("user", user, user)


def _text(form: FormData, key: str, limit: int = 64) -> str:
    value = form.get(key)
    return value.strip()[:limit] if isinstance(value, str) else ""


def _typed(form: FormData) -> TypedPatient:
    pid = _text(form, "patient_id")
    if not pid:
        raise ContextError(ContextErrorCode.BAD_PATIENT, "A Patient ID is required.")
    family = _text(form, "family").replace("^", " ")
    given = _text(form, "given").replace("^", " ")
    name = f"{family}^{given}" if given else family
    birth = _text(form, "birth_date")
    if birth:
        match = _DATE.fullmatch(birth)
        if match is None:
            raise ContextError(ContextErrorCode.BAD_PATIENT, "The birth date is not a date.")
        birth = "".join(match.groups())
    sex = _text(form, "sex").upper()
    if sex not in ("", "F", "M", "O"):
        raise ContextError(ContextErrorCode.BAD_PATIENT, "Sex must be female, male or other.")
    issuer = _text(form, "issuer")
    return TypedPatient(PatientContext(name, pid, issuer, birth, sex))


def _new_lesion(form: FormData) -> LesionRequest:
    side = _text(form, "laterality")
    if side and side not in Laterality._value2member_map_:
        raise ContextError(ContextErrorCode.BAD_LESION, "Choose a side.")
    return LesionRequest(
        site=_text(form, "site") or None,
        laterality=Laterality(side) if side else None,
        description=_text(form, "description"),
    )


async def session_request(desk: ContextDesk, form: FormData) -> SessionRequest:
    """The start-a-patient form as a desk request (``mode``: pick, scan, typed,
    unidentified). A scan that equals a worklist item's accession number is one;
    anything else scanned is a patient ID."""
    mode = _text(form, "mode")
    if mode == "pick":
        key = _text(form, "item", 256)
        if not key:
            raise ContextError(ContextErrorCode.BAD_REQUEST, "No worklist item was chosen.")
        return PickItem(item_key=key)
    if mode == "scan":
        code = _text(form, "code", 128)
        if not code:
            raise ContextError(ContextErrorCode.BAD_REQUEST, "Nothing was scanned.")
        try:  # the cache, even while no worklist client runs
            entries = await desk.worklist(code)
        except ContextError:
            entries = []
        if any(e.accession_number == code for e in entries):
            return Scanned(accession_number=code)
        return Scanned(patient_id=code)
    if mode == "typed":
        return _typed(form)
    if mode == "unidentified":
        return Unidentified()
    raise ContextError(ContextErrorCode.BAD_REQUEST, "Choose how to start the patient.")


def _session_id(request: web.Request) -> int:
    sid = int(request.match_info["session"])
    if sid > 2**63 - 1:
        raise web.HTTPNotFound(text="no such session\n")
    return sid


class SessionRoutes(PageState):
    """Start a patient, the session page, End, lesions, the sensitive flag."""

    def _desk(self) -> ContextDesk:
        if self.desk is None:
            page = pages.message_page(
                "No patient sessions",
                "Patient sessions are not set up on this box: captures are sent as they come.",
            )
            raise web.HTTPNotFound(text=page, content_type="text/html")
        return self.desk

    def _refused(self, request: web.Request, err: ContextError, back: str = "/") -> web.Response:
        """A refused context request as a plain page (404 for unknown things, else 409)."""
        s = request[SESSION_KEY]
        log.info("page request refused: %s", err.code)
        status = 404 if err.code in _NOT_FOUND else 409
        body = (
            f"<section><h2>Not possible</h2><p>{pages._e(err.message)}</p>"
            f'<p><a class="button" href="{pages._e(back)}">Back</a></p></section>'
        )
        return _html(pages.layout("Not possible", body, s.user, s.csrf), status)

    async def _start_page(
        self,
        request: web.Request,
        device: str,
        *,
        action: str,
        search_action: str,
        hidden: list[tuple[str, str]],
        title: str = "",
        message: str = "",
        status: int = 200,
    ) -> web.Response:
        desk = self._desk()
        s = request[SESSION_KEY]
        try:
            open_now = await desk.sessions(open_only=True)
        except ContextError:
            open_now = []
        current = next((v for v in open_now if v.device == device), None)
        search = request.query.get("q", "").strip()[:64]
        worklist = desk.worklist_status()
        entries = []
        try:  # a cache may hold items even while no worklist client runs
            entries = (await desk.worklist(search))[:50]
        except ContextError as err:
            message = message or err.message
        shown = len(entries) + (current is not None)
        if not await self.audited_view(s.user, "worklist", shown, device=device):
            entries, current = [], None
            message = "The audit log cannot be written, so no patient is shown. See the log."
        page = context_pages.start_page(
            device,
            action=action,
            search_action=search_action,
            hidden=hidden,
            search=search,
            entries=entries,
            status=worklist,
            now=time.time(),
            user=s.user,
            csrf=s.csrf,
            title=title,
            message=message,
            back=f"{search_action}?{urlencode(hidden)}" if hidden else search_action,
            current=current,
        )
        return _html(page, status)

    def _device(self, request: web.Request) -> str:
        device = request.match_info["device"]
        if device not in self._desk().devices():
            raise web.HTTPNotFound(text="no such device\n")
        return device

    async def start_form(self, request: web.Request) -> web.Response:
        """Start a patient on a device: worklist search, scan, type in, unidentified."""
        device = self._device(request)
        path = context_pages.device_path(device)
        return await self._start_page(request, device, action=path, search_action=path, hidden=[])

    async def start(self, request: web.Request) -> web.StreamResponse:
        """Open the device's session from the submitted form."""
        desk = self._desk()
        device = self._device(request)
        form = await request.post()
        try:
            view = await desk.open_session(
                device, await session_request(desk, form), actor_of(request)
            )
        except ContextError as err:
            path = context_pages.device_path(device)
            return await self._start_page(
                request,
                device,
                action=path,
                search_action=path,
                hidden=[],
                message=err.message,
                status=409,
            )
        log.info("user %s opened session %d on %s", request[SESSION_KEY].user, view.id, device)
        raise web.HTTPSeeOther(f"/sessions/{view.id}")

    async def refresh(self, request: web.Request) -> web.StreamResponse:
        """Ask the worklist server now; back to the page the button was on."""
        form = await request.post()
        back = _text(form, "back", 256)
        if not back.startswith("/") or back.startswith("//"):
            back = "/"
        try:
            await self._desk().refresh_worklist()
        except ContextError as err:
            return self._refused(request, err, back)
        raise web.HTTPSeeOther(back)

    async def session_view(self, request: web.Request) -> web.Response:
        """One session: patient, lesion, sensitive flag, move, End."""
        desk = self._desk()
        s = request[SESSION_KEY]
        sid = _session_id(request)
        try:
            view = await desk.session(sid)
        except ContextError as err:
            return self._refused(request, err)
        if not await self.audited_view(s.user, "session", 1, session=sid):
            return self._refused(
                request,
                ContextError(
                    ContextErrorCode.BAD_REQUEST,
                    "The audit log cannot be written, so the patient is not shown. See the log.",
                ),
            )
        try:
            lesions = await desk.lesions(sid)
            note = ""
        except ContextError as err:  # the patient is still shown, with why no lesions
            lesions, note = [], err.message
        return _html(lesion_pages.session_page(view, lesions, s.user, s.csrf, lesion_note=note))

    async def end(self, request: web.Request) -> web.StreamResponse:
        """End a session; back to the overview."""
        sid = _session_id(request)
        try:
            await self._desk().end_session(sid, actor_of(request))
        except ContextError as err:
            return self._refused(request, err)
        log.info("user %s ended session %d", request[SESSION_KEY].user, sid)
        raise web.HTTPSeeOther("/")

    async def lesion_form(self, request: web.Request) -> web.Response:
        """Add a lesion: body map and site list; with ``site`` the confirmation form."""
        s = request[SESSION_KEY]
        sid = _session_id(request)
        try:
            view = await self._desk().session(sid)
        except ContextError as err:
            return self._refused(request, err)
        q = request.query
        page = lesion_pages.lesion_page(
            view,
            q.get("find", "").strip()[:64],
            q.get("site") or None,
            q.get("laterality", ""),
            s.user,
            s.csrf,
        )
        return _html(page)

    async def lesion(self, request: web.Request) -> web.StreamResponse:
        """Choose an existing lesion (``tracking_id``) or add one (``site``, ...)."""
        sid = _session_id(request)
        form = await request.post()
        tracking = _text(form, "tracking_id")
        try:
            req = LesionRequest(tracking_id=tracking) if tracking else _new_lesion(form)
            await self._desk().set_lesion(sid, req, actor_of(request))
        except ContextError as err:
            return self._refused(request, err, f"/sessions/{sid}")
        raise web.HTTPSeeOther(f"/sessions/{sid}")

    async def flag(self, request: web.Request) -> web.StreamResponse:
        """Flag (or unflag) the session's following captures as sensitive."""
        sid = _session_id(request)
        form = await request.post()
        try:
            await self._desk().flag_session(sid, _text(form, "sensitive") == "1", actor_of(request))
        except ContextError as err:
            return self._refused(request, err, f"/sessions/{sid}")
        raise web.HTTPSeeOther(f"/sessions/{sid}")
