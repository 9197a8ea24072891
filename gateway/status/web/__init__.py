"""The technicians' local page (aiohttp, server-rendered): see :mod:`.server`."""

__all__ = [
    "audit",
    "auth",
    "checks",
    "data",
    "gate",
    "live",
    "logins",
    "metrics",
    "pages",
    "server",
    "users",
]
