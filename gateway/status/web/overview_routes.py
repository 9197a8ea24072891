"""The local page's overview (``/``, live from ``/events``) and ``/why``: see :mod:`.server`.

The overview is re-rendered every :data:`LIVE_INTERVAL` seconds and sent over
server-sent events when it changed; a stream ends when its session does.
"""

from __future__ import annotations

import asyncio
import hashlib
import time

from aiohttp import web

from gateway.context.desk import ContextError
from gateway.status.web import context_pages, pages
from gateway.status.web.auth import SESSION_COOKIE
from gateway.status.web.checks import run_checks
from gateway.status.web.data import verdict
from gateway.status.web.gate import Condition
from gateway.status.web.health_card import health_card
from gateway.status.web.page_state import SESSION_KEY, PageState, _html, log

LIVE_INTERVAL = 2.0
#: Live overview streams (``/events``) one login may hold, and all logins together.
EVENT_STREAMS_PER_SESSION = 4
EVENT_STREAMS_TOTAL = 32


class OverviewRoutes(PageState):
    """The overview, its live updates and the checks."""

    async def _fragment(self, csrf: str, user: str, shown: set[int] | None = None) -> str:
        fig = await self.figures()
        sessions = await self._sessions_fragment(csrf, user, shown)
        return sessions + pages.overview_fragment(fig, verdict(fig), csrf) + health_card(fig.health)

    async def _sessions_fragment(self, csrf: str, user: str, shown: set[int] | None) -> str:
        """Per device the open session (patient data: this page is for a logged-in
        user only, and each page or live stream showing patients writes an audit line
        when the patients it shows change; ``shown``: the session ids a live stream
        showed already) or "Start a patient"; empty without a context desk."""
        if self.desk is None:
            return ""
        try:
            sessions = await self.desk.sessions(open_only=True)
            held = len(await self.desk.held())
        except ContextError as err:
            return context_pages.sessions_fragment(self.desk.devices(), [], 0, csrf, err.message)
        ids = {v.id for v in sessions}
        if shown is None or not ids <= shown:
            if not await self.audited_view(user, "sessions", len(sessions)):
                return context_pages.sessions_fragment(
                    self.desk.devices(),
                    [],
                    held,
                    csrf,
                    "The audit log cannot be written, so open patients are not shown. See the log.",
                )
            if shown is not None:
                shown |= ids
        return context_pages.sessions_fragment(
            self.desk.devices(),
            sessions,
            held,
            csrf,
            worklist=self.desk.worklist_status(),
            now=time.time(),
            scans=self.scans() if self.scans is not None else (),
        )

    # ----------------------------------------------------------------- pages

    async def overview(self, request: web.Request) -> web.Response:
        """The at-a-glance page."""
        s = request[SESSION_KEY]
        return _html(pages.overview_page(await self._fragment(s.csrf, s.user), s.user, s.csrf))

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
        shown: set[int] = set()  # patients this stream showed (and audited) already
        while not self._closing.is_set():
            if request.transport is None or request.transport.is_closing():
                log.debug("live overview: the browser left")
                return
            self._users()  # ends this session at once if its user changed
            session = self.sessions.get(token)
            if session is None:
                await self._send(response, b"event: logout\ndata: \n\n")
                return
            fragment = await self._fragment(session.csrf, session.user, shown)
            if fragment != last:
                data = "".join(f"data: {line}\n" for line in fragment.splitlines())
                await self._send(response, f"event: overview\n{data}\n".encode())
                last, quiet = fragment, 0.0
            elif quiet >= 15:
                await self._send(response, b"event: alive\ndata: \n\n")  # also "updated"
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
