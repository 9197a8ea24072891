"""Certificates for DICOM TLS tests, made with the ``openssl`` command, and a TLS-only
Orthanc (``DicomTlsEnabled``, client certificates required) that reports storage
commitment over TLS to the gateway's TLS listener."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from gateway.demo.local_orthanc import OrthancProcess, free_port
from tests.support.gateway_process import GATEWAY_AE


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@dataclass(frozen=True)
class Pki:
    """A test CA and the certificates signed by it, plus a stranger CA."""

    folder: Path

    def cert(self, name: str) -> Path:
        """The certificate (PEM) ``name``."""
        return self.folder / f"{name}.pem"

    def key(self, name: str) -> Path:
        """The private key (PEM) of ``name``."""
        return self.folder / f"{name}.key"

    @property
    def ca(self) -> Path:
        """The CA that signed everything here (but ``stranger``'s)."""
        return self.cert("ca")

    @property
    def stranger_ca(self) -> Path:
        """A CA that signed nothing here."""
        return self.cert("stranger-ca")


def _ca(folder: Path, name: str) -> None:
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3",
        "-keyout", f"{name}.key", "-out", f"{name}.pem", "-subj", f"/CN=DermGate {name}",
        cwd=folder,
    )  # fmt: skip


def _signed(folder: Path, name: str, ext: str, days: int = 3, ca: str = "ca") -> None:
    (folder / f"{name}.ext").write_text(ext + "\n", encoding="ascii")
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
        "-out", f"{name}.csr", "-subj", f"/CN={name}",
        cwd=folder,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
        "-CAcreateserial", "-days", str(days), "-out", f"{name}.pem", "-extfile",
        f"{name}.ext",
        cwd=folder,
    )  # fmt: skip


def make_pki(folder: Path) -> Pki:
    """A CA; the PACS's certificate (``pacs``: IP 127.0.0.1 and localhost), one that
    names only ``pacs.example`` (``pacs-named``), the gateway's client and listener
    certificates (``gateway``, ``listener``), an expired client certificate
    (``gateway-expired``), and an unrelated CA (``stranger-ca``) with a certificate it
    signed (``stranger``)."""
    folder.mkdir(parents=True, exist_ok=True)
    _ca(folder, "ca")
    _ca(folder, "stranger-ca")
    both = "extendedKeyUsage=serverAuth,clientAuth"
    _signed(folder, "pacs", f"subjectAltName=IP:127.0.0.1,DNS:localhost\n{both}")
    _signed(folder, "pacs-named", f"subjectAltName=DNS:pacs.example\n{both}")
    _signed(folder, "gateway", f"subjectAltName=DNS:dermgate.example\n{both}")
    _signed(folder, "listener", f"subjectAltName=IP:127.0.0.1,DNS:localhost\n{both}")
    _signed(folder, "gateway-expired", f"subjectAltName=DNS:dermgate.example\n{both}", -1)
    _signed(folder, "stranger", f"subjectAltName=DNS:stranger.example\n{both}", ca="stranger-ca")
    return Pki(folder)


def tls_orthanc(
    workdir: Path, pki: Pki, *, server: str = "pacs", listen_tls_port: int | None = None
) -> OrthancProcess:
    """An Orthanc that speaks DICOM only over TLS, wants a client certificate signed by
    ``pki``'s CA, and knows the gateway (with ``UseDicomTls``) at ``listen_tls_port``."""
    port = listen_tls_port or free_port()
    return OrthancProcess(
        workdir,
        extra={
            "DicomTlsEnabled": True,
            "DicomTlsCertificate": str(pki.cert(server)),
            "DicomTlsPrivateKey": str(pki.key(server)),
            "DicomTlsTrustedCertificates": str(pki.ca),
            "DicomTlsRemoteCertificateRequired": True,
            "DicomModalities": {
                "dermgate": {
                    "AET": GATEWAY_AE,
                    "Host": "127.0.0.1",
                    "Port": port,
                    "UseDicomTls": True,
                }
            },
        },
        modalities={"dermgate": (GATEWAY_AE, "127.0.0.1", port)},
    )
