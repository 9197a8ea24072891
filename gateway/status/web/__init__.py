"""The technicians' local page (aiohttp, server-rendered): see :mod:`.server`."""

__all__ = [
    "audit",
    "auth",
    "check_result",
    "checks",
    "data",
    "download_routes",
    "gate",
    "header",
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
    "tls_checks",
    "users",
]
