"""Forwarding: delivering spooled DICOM objects to each destination (C-STORE) and
having the PACS confirm it keeps them (Storage Commitment), behind the listener
front that bounds every inbound connection; over TLS where configured
(:mod:`.association` opens every outbound association).
"""

__all__ = [
    "association",
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
