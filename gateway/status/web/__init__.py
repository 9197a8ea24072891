"""The technicians' local page (aiohttp, server-rendered): see :mod:`.server`."""

__all__ = [
    "audit",
    "auth",
    "checks",
    "data",
    "download_routes",
    "fleet",
    "gate",
    "header",
    "health_card",
    "live",
    "login_routes",
    "logins",
    "metrics",
    "next_step",
    "overview_routes",
    "page_state",
    "pages",
    "server",
    "spool_routes",
    "users",
]
