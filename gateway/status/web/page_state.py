"""The local page's state, shared by its routes: see :mod:`.server`.

:class:`PageState` holds what the routes of :mod:`.login_routes`,
:mod:`.overview_routes` and :mod:`.spool_routes` share (settings, sessions, lockout,
audit log, the users file, the live streams) and what every one of them reads: the
figures now (ledger, disk, devices, alarms) and the logins now, which also end the
sessions a changed users file no longer backs.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import secrets
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiohttp import web

from gateway.context.barcode.stage import ScanNotice
from gateway.context.desk import ContextDesk
from gateway.core.config import DermGateConfig, WebSettings
from gateway.spool.dirs import SpoolDirs
from gateway.status.web import pages
from gateway.status.web.audit import AuditLog
from gateway.status.web.auth import Lockout, Session, Sessions
from gateway.status.web.data import Figures
from gateway.status.web.fleet import read_config_figures, with_state
from gateway.status.web.gate import ConditionLog, Gate
from gateway.status.web.logins import LoginFile, Unavailable, Why
from gateway.status.web.metrics import Metrics
from gateway.status.web.users import Users

#: The page logs under its server's name, wherever the route that logs now lives.
log = logging.getLogger("gateway.status.web.server")

SESSION_KEY = web.RequestKey("session", Session)


def _html(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")


class PageState:
    """The page's state (sessions, lockout, logins, audit log, live streams)."""

    def __init__(
        self,
        config: DermGateConfig,
        snapshot: Callable[[], Awaitable[dict[str, Any]]] | None = None,
        poke: Callable[[], None] = lambda: None,
        desk: ContextDesk | None = None,
        scans: Callable[[], Sequence[ScanNotice]] | None = None,
    ) -> None:
        """``snapshot``: devices, destinations and alarms as in the gateway state
        document (:func:`.live.live_view`); ``poke`` wakes the wrapper and the
        forwarders after a retry; ``desk`` the context stage (patient sessions, held
        captures, lesions; None: the page has no patient pages); ``scans`` the barcode
        scanners' recent scans (:meth:`BarcodeStage.recent`), shown when unused."""
        assert config.web is not None
        self.config = config
        self.desk = desk
        self.scans = scans
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

    async def audited_view(self, user: str, what: str, records: int, **fields: int | str) -> bool:
        """Record that ``user`` is shown ``records`` records of patient data (``what``:
        sessions, worklist, session), one audit line per page shown; False when the
        audit log cannot be written: the caller then shows no patient data."""
        if records <= 0:
            return True
        try:
            await asyncio.to_thread(
                self.audit.append_fields, user, f"view-{what}", {"records": records, **fields}
            )
        except OSError as err:
            log.error(
                "audit log %s not writable (%s): patient data not shown", self.audit.path, err
            )
            return False
        return True

    async def figures(self) -> Figures:
        """Ledger, disk, devices and alarms now."""
        fig = await read_config_figures(self.config)
        if self.snapshot is None:
            return fig
        return with_state(fig, await self.snapshot())

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
