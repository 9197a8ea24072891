"""DICOM over TLS: the one place that builds the TLS contexts of the box's associations.

Profile: PS3.15 Annex B.12, the *BCP 195 RFC 8996, 9325 TLS Secure Transport
Connection Profile*: TLS 1.2 and 1.3 (1.3 offered and preferred, nothing older:
RFC 8996), certificates verified. No cipher list is set: OpenSSL 3's defaults for
TLS 1.2 and 1.3 are the forward-secret AEAD suites RFC 9325 recommends (plus a few
CBC suites it still allows). X.509 certificates on both ends when the peer asks for
ours.

As a client (C-STORE, C-ECHO, the storage commitment N-ACTION, towards a
``[[destinations]]`` entry with ``tls = true``) the PACS's certificate is always
verified: its chain up to ``tls_ca`` (else the system's CAs), its dates, and its
name. The name checked is ``tls_server_name``, else ``host``; Python's :mod:`ssl`
(OpenSSL's ``X509_VERIFY_PARAM_set1_host`` / ``_ip``) matches a host name against the
certificate's DNS subjectAltNames (wildcards in the left-most label), and an IP
address, written as such, only against its *IP* subjectAltNames: a PACS addressed by
``10.0.0.5`` needs ``IP:10.0.0.5`` in its certificate (the common name is never
used). ``tls_verify_hostname = false`` skips the name only (chain and dates are still
verified) and needs ``tls_ca``: for a PACS whose certificate names neither its
address nor a name the box can use. Our certificate (``tls_cert`` + ``tls_key``) is
presented when the PACS asks for one.

As a server (our storage commitment listener's TLS port,
:mod:`gateway.forward.listener_front`), ``listen_tls_cert`` + ``listen_tls_key`` are
presented, and with ``listen_tls_ca`` the PACS must present a certificate signed by
it (else the handshake fails).

pynetdicom catches every socket error of an association (it only logs them, and its
log is silenced by :mod:`.network`), so a refused handshake would look like an
unreachable PACS. The client context made here (one per association:
:func:`client_tls`) therefore keeps the first TLS error its socket met, and
:func:`tls_failure` turns it into a plain reason: not trusted (unknown CA, expired,
wrong name) or refused by the peer (our certificate, the TLS version).
"""

from __future__ import annotations

import enum
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.core.config import DermGateConfig, DicomDestination
from gateway.core.config.tls_files import no_passphrase

__all__ = [
    "MINIMUM_VERSION",
    "ClientTls",
    "TlsFailure",
    "certificate_expired",
    "certificate_files",
    "client_tls",
    "server_context",
    "tls_failure",
]

MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2
"""The oldest TLS version offered or accepted (BCP 195)."""

# OpenSSL verify results (X509_V_ERR_*) that say the peer's certificate is out of date.
_EXPIRED = {9, 10}  # not yet valid, has expired
_NAME_MISMATCH = {62, 63, 64}  # host name, e-mail, IP address mismatch


class TlsFailure(enum.Enum):
    """Why a TLS handshake with a PACS failed (the value is the plain reason)."""

    UNTRUSTED = "its certificate is not signed by a trusted CA (check tls_ca)"
    EXPIRED = "its certificate has expired or is not valid yet"
    NAME_MISMATCH = "its certificate does not name the address we connect to"
    CLIENT_CERT_REFUSED = (
        "it refused our client certificate (missing, expired, or not signed by a CA it "
        "trusts; check tls_cert)"
    )
    CLIENT_CERT_EXPIRED = "our client certificate (tls_cert) has expired; install a new one"
    VERSION = "it speaks no TLS version we accept (TLS 1.2 or newer)"
    NOT_TLS = (
        "it closed the connection during the TLS handshake (not its TLS port, or it "
        "refused our client certificate: check tls_cert)"
    )
    OTHER = "the TLS handshake failed"

    @property
    def untrusted(self) -> bool:
        """True when *we* refused the PACS's certificate (else the PACS refused us)."""
        return self in (TlsFailure.UNTRUSTED, TlsFailure.EXPIRED, TlsFailure.NAME_MISMATCH)


class _ClientContext(ssl.SSLContext):
    """A client context that keeps the first TLS error of the association it serves."""

    failure: ssl.SSLError | None = None


class _RecordingSocket(ssl.SSLSocket):
    """An SSLSocket that tells its context about a TLS error before pynetdicom hides it."""

    def _note(self, err: ssl.SSLError) -> None:
        context = self.context
        if isinstance(context, _ClientContext) and context.failure is None:
            context.failure = err

    def connect(self, address: Any) -> None:
        """Connect and hand-shake (noting a TLS failure)."""
        try:
            super().connect(address)
        except ssl.SSLError as err:
            self._note(err)
            raise

    def send(self, data: Any, flags: int = 0) -> int:
        """Write (noting a TLS alert)."""
        try:
            return super().send(data, flags)
        except ssl.SSLError as err:
            self._note(err)
            raise

    def recv(self, buflen: int = 1024, flags: int = 0) -> bytes:
        """Read (noting a TLS alert: TLS 1.3 peers refuse our certificate after the
        handshake, on the first read)."""
        try:
            return super().recv(buflen, flags)
        except ssl.SSLError as err:
            self._note(err)
            raise


@dataclass(frozen=True, slots=True)
class ClientTls:
    """The TLS of one association: pynetdicom's ``tls_args`` and what went wrong."""

    context: _ClientContext
    server_hostname: str

    @property
    def tls_args(self) -> tuple[ssl.SSLContext, str]:
        """``(ssl_context, server_hostname)`` for ``AE.associate(tls_args=...)``."""
        return self.context, self.server_hostname

    @property
    def failure(self) -> ssl.SSLError | None:
        """The first TLS error of this association (None: none, or not yet)."""
        return self.context.failure


def _client_context(
    ca: Path | None, cert: Path | None, key: Path | None, verify_hostname: bool
) -> _ClientContext:
    context = _ClientContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED, check_hostname
    context.minimum_version = MINIMUM_VERSION
    if ca is not None:
        context.load_verify_locations(cafile=str(ca))
    else:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if cert is not None and key is not None:
        context.load_cert_chain(str(cert), str(key), password=no_passphrase)
    context.check_hostname = verify_hostname
    context.verify_mode = ssl.CERT_REQUIRED
    context.sslsocket_class = _RecordingSocket
    return context


def client_tls(destination: DicomDestination) -> ClientTls | None:
    """A fresh TLS client context for one association to ``destination`` (None
    without ``tls``); blocking (reads the files). Raises OSError / ssl.SSLError if
    they cannot be read any more (they were checked when the configuration loaded)."""
    if not destination.tls:
        return None
    d = destination
    context = _client_context(d.tls_ca, d.tls_cert, d.tls_key, d.tls_verify_hostname)
    return ClientTls(context, d.tls_server_name or d.host)


def certificate_expired(cert: Path) -> bool | None:
    """Whether the (first) certificate in ``cert`` has expired; None if unreadable.
    Blocking (runs ``openssl x509 -checkend 0``)."""
    try:
        done = subprocess.run(
            ["openssl", "x509", "-checkend", "0", "-noout", "-in", str(cert)],
            capture_output=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode not in (0, 1) or b"Certificate" not in done.stdout:
        return None
    return done.returncode == 1


def tls_failure(err: ssl.SSLError, client_cert: Path | None = None) -> TlsFailure:
    """Classify a TLS error met while associating (ours or the peer's alert).

    With ``client_cert`` (the certificate we presented): a peer that refused us, or
    closed the handshake without a word (DCMTK-based PACSs such as Orthanc do so for
    an expired one), is told apart when ours has expired. Blocking then.
    """
    kind = _classify(err)
    if (
        client_cert is not None
        and kind in (TlsFailure.CLIENT_CERT_REFUSED, TlsFailure.NOT_TLS, TlsFailure.OTHER)
        and certificate_expired(client_cert)
    ):
        return TlsFailure.CLIENT_CERT_EXPIRED
    return kind


def _classify(err: ssl.SSLError) -> TlsFailure:
    if isinstance(err, ssl.SSLCertVerificationError):
        code = err.verify_code
        if code in _EXPIRED:
            return TlsFailure.EXPIRED
        if code in _NAME_MISMATCH:
            return TlsFailure.NAME_MISMATCH
        return TlsFailure.UNTRUSTED
    reason = str(err.reason or "")
    if reason.startswith(("SSLV3_ALERT_", "TLSV1_ALERT_", "TLSV13_ALERT_")):
        if "PROTOCOL_VERSION" in reason:
            return TlsFailure.VERSION
        if "CERTIFICATE" in reason or "UNKNOWN_CA" in reason:
            return TlsFailure.CLIENT_CERT_REFUSED
        return TlsFailure.OTHER
    if reason in ("UNSUPPORTED_PROTOCOL", "NO_PROTOCOLS_AVAILABLE"):
        return TlsFailure.VERSION
    if isinstance(err, ssl.SSLEOFError | ssl.SSLZeroReturnError) or reason in (
        "WRONG_VERSION_NUMBER",
        "UNEXPECTED_EOF_WHILE_READING",
        "RECORD_LAYER_FAILURE",
        "PACKET_LENGTH_TOO_LONG",
    ):
        return TlsFailure.NOT_TLS
    return TlsFailure.OTHER


def server_context(cert: Path, key: Path, ca: Path | None) -> ssl.SSLContext:
    """The TLS context of our listener; blocking (reads the files). With ``ca`` the
    peer must present a certificate it signed."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = MINIMUM_VERSION
    context.load_cert_chain(str(cert), str(key), password=no_passphrase)
    if ca is not None:
        context.load_verify_locations(cafile=str(ca))
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def certificate_files(config: DermGateConfig) -> list[tuple[Path, str]]:
    """Every certificate file DICOM TLS (and HTTPS to a DICOMweb store) uses, with
    what it is, for expiry checks."""
    found: list[tuple[Path, str]] = []
    for d in config.dicom_destinations():
        if d.tls_ca is not None:
            found.append((d.tls_ca, f"PACS {d.name}: CA certificate"))
        if d.tls_cert is not None:
            found.append((d.tls_cert, f"PACS {d.name}: our client certificate"))
    for w in config.dicomweb_destinations():  # HTTPS to a DICOMweb store
        if w.tls_ca is not None:
            found.append((w.tls_ca, f"DICOMweb store {w.name}: CA certificate"))
    g = config.gateway
    if g.listen_tls_cert is not None:
        found.append((g.listen_tls_cert, "DICOM TLS listener certificate"))
    if g.listen_tls_ca is not None:
        found.append((g.listen_tls_ca, "DICOM TLS listener: PACS CA certificate"))
    return found
