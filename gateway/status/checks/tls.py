"""The "why" panel's DICOM TLS lines: a refused handshake with a PACS, and the
listener's TLS port. (Certificate expiry lines: :mod:`.certificates`.)"""

from __future__ import annotations

import socket

from gateway.core.config import DermGateConfig
from gateway.core.errors import DeliveryError
from gateway.status.checks.result import FAIL, OK, CheckResult

__all__ = ["check_tls_listener", "tls_refused"]


def tls_refused(name: str, error: DeliveryError) -> CheckResult:
    """The line of a destination whose TLS handshake failed (``error.detail`` says why)."""
    return CheckResult(
        name,
        FAIL,
        f"{error.detail}.",
        "Check tls_ca (the CA that signed the PACS's certificate), the name in the "
        "certificate against host (or tls_server_name), and that the PACS trusts our "
        "tls_cert; the certificate lines show their expiry.",
    )


def check_tls_listener(config: DermGateConfig, timeout: float = 5.0) -> CheckResult | None:
    """The TLS port of our listener takes connections (None: no TLS listener).

    Only TCP: a handshake would need a certificate from ``listen_tls_ca``; a PACS's
    failed handshakes are in the log, with OpenSSL's reason. Blocking.
    """
    g = config.gateway
    if not g.listen_tls:
        return None
    host = "127.0.0.1" if g.listen_address in ("0.0.0.0", "", "::") else g.listen_address
    name = f"Commitment listener, TLS (port {g.listen_tls_port})"
    try:
        with socket.create_connection((host, g.listen_tls_port), timeout=timeout):
            pass
    except OSError as err:
        problem = "refused" if isinstance(err, ConnectionRefusedError) else str(err.strerror)
        return CheckResult(
            name,
            FAIL,
            f"Not reachable ({problem or type(err).__name__}).",
            "Restart the DermGate service; if it stays, another program may use port "
            f"{g.listen_tls_port}.",
        )
    return CheckResult(
        name, OK, "Takes connections; a PACS whose certificate is refused is named in the log."
    )
