"""The technicians' local page (aiohttp, server-rendered): see :mod:`.server`."""

__all__ = [
    "audit",
    "auth",
    "check_result",
    "checks",
    "data",
    "fleet",
    "gate",
    "health_card",
    "live",
    "login_routes",
    "logins",
    "metrics",
    "overview_routes",
    "page_state",
    "pages",
    "server",
    "spool_routes",
    "tls_checks",
    "users",
]
