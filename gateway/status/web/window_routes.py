"""The page's "Send now" (``POST /destinations/NAME/send-now``): see :mod:`.server`.

Outside a destination's send windows its captures wait; a logged-in technician
can override that from the destination's row on the overview. The override is
written where ``dermgate spool send-now`` writes it (:mod:`gateway.spool.send_now`),
after its audit line (no line, no override), and the forwarders are woken at
once. It holds until nothing waits for that destination any more or a window
opens, whichever comes first; the state document shows it (``send_now``).
"""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from gateway.spool.send_now import SendNowStore
from gateway.status.web import pages
from gateway.status.web.page_state import SESSION_KEY, PageState, _html, log


class WindowRoutes(PageState):
    """Send now."""

    async def send_now(self, request: web.Request) -> web.Response:
        """Send what waits for the destination's window now."""
        s = request[SESSION_KEY]
        name = request.match_info["name"]
        dest = next((d for d in self.config.destinations if d.name == name), None)
        if dest is None:
            raise web.HTTPNotFound(text=f"no destination named {name}\n")
        windows = dest.windows()
        if windows.is_open(time.time()):
            text = (
                f"{name} has no send windows: it always sends."
                if windows.always
                else f"The send window of {name} is open: it is sending already."
            )
            return _html(pages.message_page("Already sending", text, s.user, s.csrf), 409)
        store = SendNowStore(self.config.gateway.state_dir)
        try:
            await asyncio.to_thread(
                self.audit.append_fields, s.user, "send-now", {"destination": name}
            )
            await asyncio.to_thread(store.request, name, s.user)
        except OSError as err:
            log.error("send now to %s not recorded: %s", name, err)
            return _html(
                pages.message_page(
                    "Not done",
                    "The audit log or the state folder cannot be written, so nothing was "
                    "changed. See the log.",
                    s.user,
                    s.csrf,
                ),
                500,
            )
        log.info("user %s: send now to %s, outside its send windows (audited)", s.user, name)
        self.poke()
        return _html(
            pages.message_page(
                "Sending now",
                f"The captures waiting for {name} are being sent now, outside its send "
                f"windows ({windows}). Once none is left, or when a window opens, the "
                "windows rule again.",
                s.user,
                s.csrf,
            )
        )
