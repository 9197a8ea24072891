"""Days to expiry of every certificate the box presents or trusts: the page's, MQTT's,
and DICOM TLS (each destination's CA and client certificate, our listener's
certificate and CA) and a DICOMweb store's ``tls_ca``. Blocking (``openssl``)."""

from __future__ import annotations

import math
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

from gateway.core.config import DermGateConfig
from gateway.dicom.tls import certificate_files
from gateway.status.checks.result import FAIL, OK, UNKNOWN, WARN, CheckResult

__all__ = [
    "certificate_checks",
    "certificate_days_left",
    "certificate_not_after",
    "check_certificate",
]


def certificate_not_after(path: Path) -> float:
    """When the first certificate in ``path`` (PEM) expires, as Unix time.
    Raises OSError, ValueError or subprocess.TimeoutExpired."""
    out = subprocess.run(
        ["openssl", "x509", "-enddate", "-noout", "-in", str(path)],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    if out.returncode != 0 or "=" not in out.stdout:
        raise ValueError(out.stderr.strip() or "not a PEM certificate")
    end = datetime.strptime(out.stdout.strip().split("=", 1)[1], "%b %d %H:%M:%S %Y %Z")
    return end.replace(tzinfo=UTC).timestamp()


def certificate_days_left(cert: Path) -> int:
    """Days until ``cert`` (PEM) expires (negative: expired). Raises OSError/ValueError."""
    return math.floor((certificate_not_after(cert) - time.time()) / 86400)


def check_certificate(cert: Path, what: str = "TLS certificate") -> CheckResult:
    """How long the certificate ``cert`` (PEM) stays valid."""
    name = f"{what} ({cert.name})"
    try:
        days = certificate_days_left(cert)
    except (OSError, ValueError, subprocess.TimeoutExpired) as err:
        return CheckResult(name, UNKNOWN, f"Cannot read it: {err}.", "Check the file path.")
    if days < 0:
        return CheckResult(name, FAIL, "Expired.", "Install a new certificate.")
    if days < 30:
        unit = "day" if days == 1 else "days"
        return CheckResult(name, WARN, f"Expires in {days} {unit}.", "Renew it soon.")
    return CheckResult(name, OK, f"Valid for {days} more days.")


def certificate_checks(config: DermGateConfig) -> list[CheckResult]:
    """Expiry of every certificate the box presents or trusts."""
    certs: list[tuple[Path | None, str]] = []
    if config.web is not None:
        certs.append((config.web.tls_cert, "TLS certificate"))
    if config.mqtt is not None:
        certs.append((config.mqtt.tls_cert, "MQTT client certificate"))
        certs.append((config.mqtt.tls_ca, "MQTT broker's CA certificate"))
    certs += certificate_files(config)
    return [check_certificate(path, what) for path, what in certs if path is not None]
