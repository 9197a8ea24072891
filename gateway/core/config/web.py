"""``[web]``: the local page."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import (
    AfterValidator,
    Field,
    model_validator,
)

from gateway.core.config.base import _Strict


def _check_listen(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError('use "HOST:PORT", e.g. "127.0.0.1:8080"')
    return value


def _check_url(value: str | None) -> str | None:
    if value is None:
        return None
    if not value.startswith(("http://", "https://")) or len(value) <= len("https://"):
        raise ValueError('use an http:// or https:// address, e.g. "https://box.clinic.lan:8443/"')
    return value if value.endswith("/") else value + "/"


class WebSettings(_Strict):
    """``[web]``: the technicians' local page, ``/healthz`` and ``/metrics``.

    Decision: the page is off unless the file has a ``[web]`` section (an empty one
    is enough: every key has a default). A box that nobody configured for it opens
    no HTTP port, and two gateways on one machine never fight over 8080. The
    default listen address is loopback: expose it to the clinic network only on
    purpose (and then preferably with ``tls_cert``/``tls_key``).

    Users are added with ``dermgate user add NAME --config FILE``; without any user
    nobody can log in (``/healthz`` and ``/metrics`` still answer).
    """

    listen: Annotated[str, AfterValidator(_check_listen)] = Field(
        default="127.0.0.1:8080",
        description="`HOST:PORT` the page listens on; loopback by default.",
    )
    public_url: Annotated[str | None, AfterValidator(_check_url)] = Field(
        default=None,
        description="The page's address as people and Home Assistant reach it, e.g. "
        '`"https://derm-box-01.clinic.lan:8443/"` (a reverse proxy, a DNS name): Home '
        "Assistant's link to the box. Without it a `listen` address naming one host "
        "(not `0.0.0.0`, `::` nor loopback) is used, else no link is given.",
    )
    users_file: Path | None = Field(
        default=None,
        description="Logins (name + salted scrypt hash; written by `dermgate user add`).",
        json_schema_extra={"doc_default": "`STATE_DIR/web/users.json`"},
    )
    audit_log: Path | None = Field(
        default=None,
        description="Append-only log of patient-data reveals and `dermgate spool show "
        "--reveal` / `export` (who, when, spool id; never the data).",
        json_schema_extra={"doc_default": "`STATE_DIR/web/audit.log`"},
    )
    session_lifetime: float = Field(
        default=8 * 3600.0,
        gt=0,
        description="Seconds a login stays valid (sessions live in memory: a restart of "
        "the gateway logs everybody out).",
    )
    lockout_failures: int = Field(
        default=5,
        ge=1,
        description="Failed logins (per user name, and per client address) within "
        "`lockout_window` after which further attempts are refused for `lockout_duration`.",
    )
    lockout_window: float = Field(
        default=900.0, gt=0, description="Seconds over which failed logins are counted."
    )
    lockout_duration: float = Field(
        default=900.0, gt=0, description="Seconds logins stay refused after a lockout."
    )
    metrics_public: bool = Field(
        default=True,
        description="Serve `/metrics` without a login (it holds no patient data) so that "
        "Prometheus can scrape it; `false`: only with a session.",
    )
    tls_cert: Path | None = Field(
        default=None,
        description="PEM certificate: with `tls_key`, serve HTTPS (the session cookie is then "
        "marked Secure).",
    )
    tls_key: Path | None = Field(default=None, description="PEM private key of `tls_cert`.")
    request_timeout: float = Field(
        default=10.0,
        gt=0,
        description="Seconds a client has to send a complete request (TLS handshake, "
        "head and body) on a new or idle connection; then the connection is closed.",
    )
    max_connections: int = Field(
        default=0,
        ge=0,
        description="Connections the page holds at once, all clients together; past it "
        "new ones are closed at once. 0: a quarter of the process's file-descriptor "
        "limit, at most 256 (the rest stays for the devices, the spool and the PACS).",
    )
    max_connections_per_client: int = Field(
        default=32, ge=1, description="Connections one client address may hold at once."
    )

    @model_validator(mode="after")
    def _tls_pair(self) -> WebSettings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        return self

    def host_port(self) -> tuple[str, int]:
        """``listen`` split into host and port."""
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)
