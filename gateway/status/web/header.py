"""The line under the page's title: which box, which DermGate, how fresh the page is.

The server sets :data:`BOX_LINE` for each request (a middleware of
:mod:`.server`); :func:`gateway.status.web.pages.layout` renders it into every page.
The time is rendered by the server ("updated 19:20:05"), so the line holds without
JavaScript; ``static/live.js`` turns it into "updated N s ago" and restarts it on
each live update of the overview.
"""

from __future__ import annotations

import functools
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from importlib.metadata import PackageNotFoundError, version


@functools.cache
def software_version() -> str:
    """The installed DermGate version (looked up once)."""
    try:
        return version("dermgate")
    except PackageNotFoundError:
        return "0+unknown"


@dataclass(frozen=True, slots=True)
class BoxLine:
    """The box's fleet id, the DermGate version and when the page was made (epoch s)."""

    box_id: str
    version: str
    at: float

    def html(self, logged_in: bool = True) -> str:
        """``<p class="box">`` with the three facts (the time as a ``<time>``). The
        version only for a logged-in user: the login page, open to anyone on the
        network, does not tell which release (and its known flaws) runs here."""
        when = datetime.fromtimestamp(self.at, UTC)
        local = when.astimezone().strftime("%H:%M:%S")
        release = f'<span id="version">DermGate {escape(self.version)}</span> ' if logged_in else ""
        return (
            f'<p class="box"><span id="box-id">Box {escape(self.box_id)}</span> {release}'
            f'<span id="updated" aria-live="off">updated <time datetime="'
            f'{when.strftime("%Y-%m-%dT%H:%M:%SZ")}" data-epoch="{self.at:.0f}">'
            f"{local}</time></span></p>"
        )


#: The current request's box line (None outside a request: no line).
BOX_LINE: ContextVar[BoxLine | None] = ContextVar("box_line", default=None)
