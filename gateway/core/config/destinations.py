"""``[[destinations]]``: the PACS and DICOMweb stores captures go to."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    Discriminator,
    Field,
    Tag,
    ValidationInfo,
    field_validator,
    model_validator,
)

from gateway.core.config.base import _NAME, AETitle, Port, _Strict
from gateway.core.config.tls_files import check_certificate_file, paired_key
from gateway.core.windows import SendWindows, parse_window


class DestinationBase(_Strict):
    """What every ``[[destinations]]`` kind shares: a name, retries, parallel senders,
    the circuit breaker and the stuck alarm."""

    name: str = Field(
        description="Short name used in logs, listings and the ledger: 1–32 letters, digits, "
        "`_` or `-`; unique."
    )
    connect_timeout: float = Field(
        default=10.0, gt=0, description="Seconds to open the TCP connection."
    )
    retry_initial: float = Field(
        default=2.0, gt=0, description="First retry delay in seconds (doubles per failure)."
    )
    retry_max: float = Field(
        default=900.0,
        gt=0,
        description="Longest retry delay in seconds (each delay is drawn between half and all "
        "of it, so boxes do not retry in lockstep).",
    )
    batch_size: int = Field(
        default=20, ge=1, le=1000, description="Instances sent on one association."
    )
    associations: int = Field(
        default=2, ge=1, le=16, description="Associations used in parallel for sending."
    )
    breaker_threshold: int = Field(
        default=3,
        ge=1,
        description="Failed connection attempts in a row after which sending pauses and the "
        "PACS is probed with C-ECHO (a DICOMweb store: a QIDO-RS query) (every 1 s, backing "
        "off to 30 s); an answer sends "
        "everything waiting at once. Every 5th probe lets one real attempt through, for a "
        "PACS that refuses C-ECHO.",
    )
    stuck_after: float = Field(
        default=86400.0,
        gt=0,
        description="Seconds after arrival at which an undelivered (or, with commitment, "
        "unconfirmed) capture raises the `stuck_captures` alarm (it is still retried). "
        "With `send_windows`, only time inside the windows counts.",
    )
    max_mbps: float = Field(
        default=0.0,
        ge=0,
        description="Most megabits per second sent to this destination, all its "
        "associations together (a token bucket); 0: no limit, else at least 0.1.",
    )
    send_windows: list[str] = Field(
        default_factory=list,
        description='Local times of day sending is allowed, e.g. `["19:00-07:00"]` (a '
        "window may cross midnight; several may be given). Outside them captures wait, "
        'shown as "waiting for the send window"; "Send now" on the page (or `dermgate '
        "spool send-now`) sends the waiting ones at once. Empty: always.",
    )

    @field_validator("max_mbps")
    @classmethod
    def _rate(cls, value: float) -> float:
        if 0 < value < 0.1:
            raise ValueError("use 0 (no limit) or at least 0.1 megabits per second")
        return value

    @field_validator("send_windows")
    @classmethod
    def _windows(cls, value: list[str]) -> list[str]:
        return [str(parse_window(text)) for text in value]

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("use 1-32 letters, digits, '_' or '-'")
        return value

    @model_validator(mode="after")
    def _retry_order(self) -> DestinationBase:
        if self.retry_max < self.retry_initial:
            raise ValueError("retry_max must not be smaller than retry_initial")
        return self

    def windows(self) -> SendWindows:
        """``send_windows`` in the box's local time."""
        return SendWindows(self.send_windows)


class DicomDestination(DestinationBase):
    """``[[destinations]]`` with ``kind = "dicom"``: a PACS reached by C-STORE."""

    kind: Literal["dicom"] = Field(
        description='`"dicom"` (C-STORE) or `"dicomweb"` (STOW-RS, below).'
    )
    ae_title: AETitle = Field(description="The PACS's AE title (called AE).")
    host: str = Field(description="PACS host name or IP address.")
    port: Port = Field(description="PACS DICOM port.")
    fallback: Literal["quarantine", "compatible"] = Field(
        default="quarantine",
        description="What to do with a capture whose SOP class this PACS does not accept "
        '(no presentation context accepted for it): `"quarantine"` sets it aside for '
        "this destination with the reason (the class's name and UID), while the other "
        "destinations still get it; `dermgate spool retry` sends it again once the PACS "
        'administrator has added the class. `"compatible"` sends a derived object of a '
        "widely accepted class instead, with its own SOP Instance UID (the same at every "
        "retry) and a Source Image Sequence pointing at the original: Dermoscopic "
        "Photography as VL Photographic (the same JPEG), Confocal Microscopy (and Tiled "
        "Pyramidal) as Multi-frame Grayscale Byte Secondary Capture (the same frames); "
        "OBJ/MTL/STL have no lossless substitute and are set aside as with "
        '`"quarantine"`. `dermgate spool show` says which class went where.',
    )
    storage_commitment: bool = Field(
        default=True,
        description="Ask the PACS to confirm storage (Storage Commitment Push Model); local "
        "copies are purged only after its confirmation.",
    )
    acse_timeout: float = Field(
        default=30.0,
        gt=0,
        description="Seconds to wait for the association to be accepted or released.",
    )
    dimse_timeout: float = Field(
        default=60.0, gt=0, description="Seconds to wait for a C-STORE response."
    )
    network_timeout: float = Field(
        default=60.0,
        gt=0,
        description="Seconds of network silence before the association is dropped.",
    )
    commitment_batch_size: int = Field(
        default=50, ge=1, le=10000, description="Instances per commitment request."
    )
    commitment_batch_delay: float = Field(
        default=2.0,
        ge=0,
        description="Seconds to wait for a fuller commitment batch while more instances are "
        "still due to be sent to this destination (a batch nothing can add to is asked "
        "about at once).",
    )
    commitment_timeout: float = Field(
        default=600.0,
        gt=0,
        description="Seconds to wait for the PACS's commitment report before asking again.",
    )
    commitment_max_failures: int = Field(
        default=3,
        ge=1,
        description="Failed commitments of one instance (each followed by a re-send) "
        "before it is quarantined.",
    )
    commitment_from: list[str] = Field(
        default_factory=list,
        description="More IP addresses this PACS may send its commitment reports from "
        '(e.g. `["10.0.0.5"]` for a cluster node), besides the addresses of `host`. A '
        "report counts only when it comes from this PACS's AE title at one of these "
        "addresses; reports from anywhere else are refused.",
    )
    commitment_alarm_after: float = Field(
        default=600.0,
        gt=0,
        description="Seconds a commitment request may go without the PACS's report before "
        "the `commitment_overdue` alarm is raised (the PACS stores but does not confirm: "
        "check its entry for our AE title, address and `listen_port`). It clears when the "
        "reports arrive.",
    )

    @field_validator("commitment_from")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        import ipaddress  # here, not at the top: keeps these keys in one hunk

        try:
            return [ipaddress.ip_address(v.strip()).compressed for v in value]
        except ValueError as err:
            raise ValueError(f"list IP addresses, not host names: {err}") from err

    unconfirmed_retention: float = Field(
        default=7 * 86400.0,
        ge=0,
        description="Without storage commitment: seconds after which a SENT instance "
        "counts as delivered (and may later be purged).",
    )
    tls: bool = Field(
        default=False,
        description="DICOM over TLS (TLS 1.2 or newer) to this PACS: C-STORE, C-ECHO and the "
        "storage commitment request. The PACS's certificate is always verified: signed by "
        "`tls_ca` (else a CA the system trusts), valid now, and naming `host` (or "
        "`tls_server_name`). A `host` written as an IP address must be in the certificate "
        "as an IP address (subjectAltName `IP:`), a host name as a DNS name.",
    )
    tls_ca: Path | None = Field(
        default=None,
        description="CA certificate(s) (PEM) that signed the PACS's certificate; without it "
        "the system's CAs are trusted.",
    )
    tls_cert: Path | None = Field(
        default=None,
        description="Our client certificate (PEM), for a PACS that asks for one (mutual "
        "TLS); with `tls_key`.",
    )
    tls_key: Path | None = Field(
        default=None, description="The unencrypted private key (PEM) of `tls_cert`."
    )
    tls_server_name: str | None = Field(
        default=None,
        description="The name the PACS's certificate must carry, when it is not `host` "
        "(e.g. `host` is an IP address and the certificate names `pacs.example.org`).",
    )
    tls_verify_hostname: bool = Field(
        default=True,
        description="`false`: accept any certificate signed by `tls_ca`, whatever names it "
        "carries (a PACS whose certificate names neither its address nor a name you can "
        "use). The chain and dates are still verified; needs `tls_ca`, which should then "
        "be a CA that signs only your PACSs.",
    )

    @field_validator("tls_ca", "tls_cert")
    @classmethod
    def _certificate_files(cls, value: Path | None) -> Path | None:
        return None if value is None else check_certificate_file(value)

    @field_validator("tls_server_name")
    @classmethod
    def _server_name(cls, value: str | None) -> str | None:
        import ipaddress  # here, not at the top: keeps these keys in one hunk

        if value is None:
            return None
        try:
            return ipaddress.ip_address(value).compressed
        except ValueError:
            pass
        if not value or any(c.isspace() or c in "/:@[]" for c in value):
            raise ValueError('give a bare host name or IP address, e.g. "pacs.example.org"')
        return value

    @field_validator("tls_key")
    @classmethod
    def _tls_pair(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return paired_key(value, info.data.get("tls_cert"))

    @model_validator(mode="after")
    def _tls_keys(self) -> DicomDestination:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together: give both, or neither")
        used = [
            key
            for key in ("tls_ca", "tls_cert", "tls_server_name")
            if getattr(self, key) is not None
        ]
        if not self.tls_verify_hostname:
            used.append("tls_verify_hostname")
        if used and not self.tls:
            raise ValueError(f"{', '.join(used)} need tls = true")
        if not self.tls_verify_hostname and self.tls_ca is None:
            raise ValueError(
                "tls_verify_hostname = false needs tls_ca (with the system's CAs, any "
                "certificate they signed would pass)"
            )
        return self

    @property
    def confirms(self) -> bool:
        """True when a sent capture waits for the PACS's confirmation (Storage Commitment)."""
        return self.storage_commitment


class DicomwebDestination(DestinationBase):
    """``[[destinations]]`` with ``kind = "dicomweb"``: a DICOMweb store reached by STOW-RS."""

    kind: Literal["dicomweb"] = Field(description='`"dicomweb"` (STOW-RS).')
    url: str = Field(
        description="The service's DICOMweb base URL (the part before `/studies`), e.g. "
        "`https://…/dicomStores/s/dicomWeb` or `http://orthanc:8042/dicom-web`."
    )
    auth: Literal["none", "basic", "bearer", "oauth2"] = Field(
        default="none",
        description='`"basic"` (`username` + `password_file`), `"bearer"` (`token_file`), '
        '`"oauth2"` (client credentials: `token_url`, `client_id`, `client_secret_file`, '
        '`scope`) or `"none"`.',
    )
    username: str | None = Field(default=None, description="Basic auth: the user name.")
    password_file: Path | None = Field(
        default=None, description="Basic auth: file whose first line is the password."
    )
    token_file: Path | None = Field(
        default=None,
        description="Bearer auth: file whose first line is the token; re-read when it changes.",
    )
    token_url: str | None = Field(
        default=None, description="OAuth2: the token endpoint (client credentials grant)."
    )
    client_id: str | None = Field(default=None, description="OAuth2: the client id.")
    client_secret_file: Path | None = Field(
        default=None, description="OAuth2: file whose first line is the client secret."
    )
    scope: str | None = Field(default=None, description="OAuth2: the scope asked for, if any.")
    tls_ca: Path | None = Field(
        default=None,
        description="Optional extra CA certificate (PEM) for an `https` URL; certificates "
        "and host names are always verified.",
    )
    confirm: Literal["read-back", "response"] = Field(
        default="read-back",
        description='`"read-back"`: a capture counts as stored once QIDO-RS lists it (the '
        'DICOMweb equivalent of Storage Commitment); `"response"`: trust the STOW-RS '
        "answer's per-instance result (an instance it lists as stored is confirmed at once; "
        '"already stored" answers are still read back).',
    )
    max_request_mb: int = Field(
        default=100,
        ge=1,
        le=4096,
        description="Largest STOW-RS request in MB: small instances of one study are "
        "batched up to it; a larger instance goes alone.",
    )
    request_timeout: float = Field(
        default=300.0, gt=0, description="Seconds a STOW-RS or QIDO-RS request may take."
    )
    confirm_timeout: float = Field(
        default=300.0,
        gt=0,
        description='With `confirm = "read-back"`: seconds after sending within which QIDO-RS '
        "must list an instance; one still missing then is sent again (same SOP Instance UID).",
    )
    confirm_max_failures: int = Field(
        default=3,
        ge=1,
        description="Read-backs that did not find an instance (each followed by a re-send) "
        "before it is quarantined.",
    )

    @property
    def confirms(self) -> bool:
        """True when a sent capture waits for the store's confirmation before it counts
        as delivered (read-back; "response" confirms with the answer itself)."""
        return self.confirm == "read-back"

    @property
    def host(self) -> str:
        """The store's host name (from ``url``), for listings."""
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        """The store's TCP port (from ``url``; 443 for https, 80 for http)."""
        parts = urlsplit(self.url)
        return parts.port or (443 if parts.scheme == "https" else 80)

    @field_validator("url", "token_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("give an http:// or https:// URL with a host")
        if parts.username or parts.password:
            raise ValueError("put credentials in auth keys and files, not in the URL")
        if parts.query or parts.fragment:
            raise ValueError("give the base URL without ?query or #fragment")
        return value.rstrip("/")

    @field_validator("tls_ca")
    @classmethod
    def _ca_file(cls, value: Path | None) -> Path | None:
        return None if value is None else check_certificate_file(value)

    @model_validator(mode="after")
    def _auth_keys(self) -> DicomwebDestination:
        needed = {
            "none": (),
            "basic": ("username", "password_file"),
            "bearer": ("token_file",),
            "oauth2": ("token_url", "client_id", "client_secret_file"),
        }[self.auth]
        missing = [key for key in needed if getattr(self, key) is None]
        if missing:
            raise ValueError(f'auth = "{self.auth}" needs {", ".join(missing)}')
        return self


def _kind(value: Any) -> str | None:
    return value.get("kind") if isinstance(value, dict) else getattr(value, "kind", None)


#: One ``[[destinations]]`` entry, told apart by ``kind``.
Destination = Annotated[
    Annotated[DicomDestination, Tag("dicom")] | Annotated[DicomwebDestination, Tag("dicomweb")],
    Discriminator(
        _kind,
        custom_error_type="destination_kind",
        custom_error_message='set kind = "dicom" (C-STORE) or "dicomweb" (STOW-RS)',
    ),
]
