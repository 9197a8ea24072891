"""Downloading a capture set aside (``POST /spool/ID/download``): see :mod:`.server`.

A quarantined capture's file — its DICOM file, or the device's raw file when it never
became DICOM — is patient data, so it is handed out like a reveal: to a logged-in
user, after one audit line (``action=download spool_id=ID kind=dicom``) is written
and synced; when the audit log cannot be written, nothing is sent.

It is a POST carrying the session's CSRF token rather than a GET link: the session
cookie is SameSite=Strict, but a link can still be prefetched, crawled or opened
from a bookmark or history, and every such request would write an audit line and
hand out patient data nobody meant to take. A form the technician presses on the
page is the one deliberate act that does. The file is streamed (never read into
memory) with ``Content-Disposition: attachment`` and a name made of the spool id
only (``dermgate-capture-12.dcm``): no patient data in the name, the browser's
download list or the log.
"""

from __future__ import annotations

import asyncio
import functools

from aiohttp import web

from gateway.spool import admin
from gateway.spool.ledger import open_ledger
from gateway.spool.states import CaptureState
from gateway.status.web import pages
from gateway.status.web.page_state import SESSION_KEY, PageState, _html, log

MAX_SPOOL_ID = 2**63 - 1  # SQLite's largest INTEGER


def download_name(spool_id: int, export_name: str) -> str:
    """The file name offered to the browser: the spool id and the file's suffix."""
    suffix = export_name[export_name.rfind(".") :] if "." in export_name else ""
    return f"dermgate-capture-{spool_id}{suffix}"


class DownloadRoutes(PageState):
    """The audited download of a quarantined capture's file."""

    def _source(self, sid: int) -> admin.ExportSource:
        conn = open_ledger(self.config.ledger_path(), readonly=True)
        try:
            entry = admin.find_entry(conn, sid)
        finally:
            conn.close()
        if entry.state is not CaptureState.QUARANTINED:
            raise admin.NotPossible(
                f"capture {sid} is {entry.state}, not set aside: only a capture set aside "
                "can be downloaded here"
            )
        return admin.export_source(entry, self.dirs)

    async def download(self, request: web.Request) -> web.StreamResponse:
        """The file of a quarantined capture, after its audit line (no line, no file)."""
        s = request[SESSION_KEY]
        sid = int(request.match_info["sid"])
        if sid > MAX_SPOOL_ID:  # beyond SQLite's integers: no such capture
            raise web.HTTPNotFound(text=f"no capture with spool id {sid}\n")
        try:
            source = await asyncio.to_thread(functools.partial(self._source, sid))
        except admin.NoSuchCapture as err:
            raise web.HTTPNotFound(text=f"{err}\n") from err
        except admin.NotPossible as err:
            return _html(pages.message_page("Not possible", str(err), s.user, s.csrf), 409)
        try:
            await asyncio.to_thread(
                self.audit.append, s.user, "download", sid, {"kind": source.kind}
            )
        except OSError as err:
            log.error("audit log %s not writable (%s): download refused", self.audit.path, err)
            text = "The audit log cannot be written, so the file is not handed out. See the log."
            return _html(pages.message_page("Refused", text, s.user, s.csrf), 500)
        name = download_name(sid, source.name)
        log.info(
            "user %s downloaded the %s file of spool id %d (audited)", s.user, source.kind, sid
        )
        return web.FileResponse(
            source.path,
            headers={
                "Content-Disposition": f'attachment; filename="{name}"',
                "Content-Type": "application/dicom"
                if source.kind == "dicom"
                else "application/octet-stream",
            },
        )
