"""The technicians' local page (aiohttp, server-rendered): see :mod:`.server`."""

__all__ = [
    "audit",
    "auth",
    "checks",
    "data",
    "gate",
    "live",
    "login_routes",
    "logins",
    "metrics",
    "overview_routes",
    "page_state",
    "pages",
    "server",
    "spool_routes",
    "users",
]
