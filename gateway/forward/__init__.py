"""Forwarding: delivering spooled DICOM objects to each destination (C-STORE, or
STOW-RS to a DICOMweb store through :mod:`.senders`) and having the receiver confirm
it keeps them (Storage Commitment; QIDO-RS read-back in :mod:`.readback`), behind
the listener front that bounds every inbound connection; over TLS where configured
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
    "readback",
    "refusals",
    "senders",
    "stow",
    "stow_answer",
    "stow_plan",
    "stream",
]
