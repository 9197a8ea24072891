"""The local page's spool routes (``/spool``, ``/spool/ID/...``): see :mod:`.server`.

The captures and one capture (patient data masked), the audited reveal of its
patient data, and retry and resolve after a confirmation page: ledger writes use
their own connection, as the ``dermgate spool`` commands do beside the service.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from gateway.context.desk import ContextError
from gateway.core.routing import RoutePlan
from gateway.spool import admin
from gateway.spool.capture_marks import flag_sensitive, is_sensitive
from gateway.spool.ledger import open_ledger
from gateway.spool.states import CaptureState, DeliveryState
from gateway.status.web import pages
from gateway.status.web.audit import REVEAL_REASONS
from gateway.status.web.data import read_spool
from gateway.status.web.next_step import next_step
from gateway.status.web.page_state import SESSION_KEY, PageState, _html, log
from gateway.status.web.session_routes import actor_of

MAX_SPOOL_ID = 2**63 - 1  # SQLite's largest INTEGER


def _spool_id(request: web.Request) -> int:
    """The spool id in the path (ASCII digits by the route); beyond SQLite's
    integers it can name no capture: 404, like any unknown id."""
    sid = int(request.match_info["sid"])
    if sid > MAX_SPOOL_ID:
        raise web.HTTPNotFound(text=f"no capture with spool id {sid}\n")
    return sid


def _flag(details: dict[str, Any]) -> dict[str, Any]:
    return {"sensitive": bool(details.get("sensitive"))}


class SpoolRoutes(PageState):
    """The spool view, one capture, reveal, retry and resolve."""

    async def spool(self, request: web.Request) -> web.Response:
        """The spool view."""
        s = request[SESSION_KEY]
        state = request.query.get("state") or None
        if state is not None and state not in CaptureState.__members__:
            state = None
        names = [d.name for d in self.config.destinations]
        rows = await asyncio.to_thread(
            functools.partial(read_spool, configured=names), self.config.ledger_path(), state
        )
        return _html(pages.spool_page(rows, state, s.user, s.csrf))

    def _read_details(self, sid: int) -> dict[str, Any]:
        from gateway.spool.details import capture_details

        conn = open_ledger(self.config.ledger_path(), readonly=True)
        try:
            entry = admin.find_entry(conn, sid)
            records = admin.deliveries(conn, entry.spool_id)
            sensitive = is_sensitive(conn, entry.spool_id)
        finally:
            conn.close()
        details = capture_details(
            entry, records, self.dirs, [d.name for d in self.config.destinations]
        )
        details["sensitive"] = sensitive
        if entry.state is CaptureState.QUARANTINED:  # what to do, in plain words
            codes = [r.error_code for r in records if r.state is DeliveryState.FAILED]
            details["next_step"] = next_step(entry.reason, codes)
        return details

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
        return _html(pages.capture_page(details, None, s.user, s.csrf, **_flag(details)))

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
        detail: dict[str, str | int] = {}
        if details["sensitive"]:
            form = await request.post()
            reason = form.get("reason")
            if not isinstance(reason, str) or reason not in REVEAL_REASONS:
                text = "This capture is sensitive: choose why you need to see it."
                page = pages.capture_page(details, None, s.user, s.csrf, text, sensitive=True)
                return _html(page, 400)
            detail["reason"] = reason
        try:
            await asyncio.to_thread(self.audit.append, s.user, "reveal", sid, detail)
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
                    **_flag(details),
                )
            )
        log.info("user %s revealed the patient data of spool id %d (audited)", s.user, sid)
        return _html(pages.capture_page(details, patient, s.user, s.csrf, **_flag(details)))

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
            elif state == CaptureState.QUARANTINED:  # still no route sends it anywhere
                text = (
                    f"Capture {sid} is still set aside: no [[routes]] entry sends it anywhere. "
                    "Add a route that matches it, then retry."
                )
            else:
                text = f"Capture {sid} is now {state}: every destination already has it."
        else:
            text = f"Capture {sid} is marked as resolved."
        _, details = await self._details(request)
        return _html(pages.capture_page(details, None, s.user, s.csrf, text, **_flag(details)))

    async def retry(self, request: web.Request) -> web.Response:
        """Release a quarantined capture (after confirmation)."""
        sid = _spool_id(request)
        names = RoutePlan.from_config(self.config)
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

    async def flag_capture(self, request: web.Request) -> web.Response:
        """Flag (or unflag) one capture as sensitive: marked in the spool list, and
        its reveal asks for a reason category."""
        s = request[SESSION_KEY]
        sid = _spool_id(request)
        form = await request.post()
        flag = form.get("sensitive") == "1"
        carried = False
        if self.desk is not None:  # the object carries it too, when it can still change
            try:
                carried = await self.desk.flag_capture(sid, flag, actor_of(request))
            except ContextError as err:
                raise web.HTTPNotFound(text=f"{err.message}\n") from err
        else:
            try:
                plan = RoutePlan.from_config(self.config)  # routes see the flag (not sent yet)
                await asyncio.to_thread(
                    self._write, lambda conn: flag_sensitive(conn, sid, flag, plan, time.time())
                )
            except admin.NoSuchCapture as err:
                raise web.HTTPNotFound(text=f"{err}\n") from err
        log.info("user %s: capture %d %s sensitive", s.user, sid, "flagged" if flag else "not")
        _, details = await self._details(request)
        text = f"Capture {sid} is {'now flagged as' if flag else 'no longer'} sensitive."
        if self.desk is not None:
            text += (
                " Its DICOM object says so too."
                if carried
                else " Its DICOM object was already sent or has no patient session: only "
                "this box marks it."
            )
        return _html(pages.capture_page(details, None, s.user, s.csrf, text, **_flag(details)))
