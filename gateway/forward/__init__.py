"""Forwarding: delivering spooled DICOM objects to each destination (C-STORE) and
having the PACS confirm it keeps them (Storage Commitment), behind the listener
front that bounds every inbound connection.
"""

__all__ = [
    "commitment",
    "compatible_copies",
    "contexts",
    "cstore",
    "forwarder",
    "http_auth",
    "listener_front",
    "overdue",
    "peer_check",
    "refusals",
    "stream",
]
