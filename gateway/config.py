"""Typed DermGate configuration, read from one TOML file.

Every key is documented here and in README.md. Unknown keys are rejected with a
message naming the key and the file, so a typo never silently falls back to a
default. Device options are validated by the driver's own options model.

Example::

    [gateway]
    id = "derm-box-01"
    ae_title = "DERMGATE"
    listen_port = 11113
    state_dir = "/var/lib/dermgate"

    [[destinations]]
    name = "pacs"
    kind = "dicom"
    ae_title = "ORTHANC"
    host = "127.0.0.1"
    port = 4242
    storage_commitment = true

    [[devices]]
    driver = "serial-dermatoscope"
    port = "/dev/ttyACM0"

    [supervision]          # optional: crashed/hung drivers (defaults shown)
    quarantine_after = 5
    quarantine_window = 600
    hang_timeout = 120

    [web]                  # optional: the local page (absent = no page)
    listen = "127.0.0.1:8080"

    [hotplug]              # optional: start drivers when their device appears
    source = "udev"

    [[devices]]
    driver = "serial-dermatoscope"
    hotplug = true
    port = "{devnode}"
"""

from __future__ import annotations

import hashlib
import math
import re
import socket
import tomllib
from pathlib import Path
from types import NoneType
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

_FLEET_ID = re.compile(r"^[A-Za-z0-9-]{1,64}$")
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


class ConfigError(Exception):
    """The configuration file cannot be used; ``problems`` lists every reason."""

    def __init__(self, path: Path, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        super().__init__("\n".join(problems))


def default_gateway_id() -> str:
    """A fleet id derived from this machine, stable across restarts.

    The host name (reduced to letters, digits and '-') plus six hex digits of a hash
    of ``/etc/machine-id``, so two boxes that both kept the stock host name still
    differ. Never random per start: dashboards key on it.
    """
    host = re.sub(r"[^A-Za-z0-9-]+", "-", socket.gethostname()).strip("-")[:40] or "dermgate"
    try:
        machine = Path("/etc/machine-id").read_text(encoding="ascii").strip()
    except OSError:
        machine = ""
    if not machine:
        return host
    return f"{host}-{hashlib.sha256(machine.encode()).hexdigest()[:6]}"


def _check_ae_title(value: str) -> str:
    if not 1 <= len(value) <= 16:
        raise ValueError("an AE title has 1 to 16 characters")
    if not value.isascii() or "\\" in value or any(not ch.isprintable() for ch in value):
        raise ValueError("an AE title uses printable ASCII characters other than '\\'")
    if not value.strip():
        raise ValueError("an AE title cannot be all spaces")
    return value


AETitle = Annotated[
    str,
    AfterValidator(_check_ae_title),
    Field(description="DICOM Application Entity title (1-16 chars)"),
]
Port = Annotated[int, Field(ge=1, le=65535)]


def _number_problem(annotation: Any, value: object) -> str | None:
    """Why ``value``, as TOML gave it, is no value for a field of type ``annotation``.

    TOML has types, so the file says what it means: ``port = true`` is not port 1,
    ``"4242"`` is text and ``20.0`` no count; ``inf`` and ``nan`` are no durations
    (a timeout of ``inf`` would wait for ever). Pydantic's lax mode would take all of
    these; only number fields are checked here, the rest is pydantic's.
    """
    kinds = set(get_args(annotation)) - {NoneType} or {annotation}
    if bool in kinds or not kinds & {int, float}:
        return None
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        shown = str(value).lower() if isinstance(value, bool) else f"text ({str(value)[:20]!r})"
        return f"expected a number, not {shown}"
    if float not in kinds and isinstance(value, float):
        return "expected a whole number"
    if isinstance(value, float) and not math.isfinite(value):
        return "expected a finite number (inf and nan are not allowed)"
    return None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _numbers_are_numbers(cls, value: object, info: ValidationInfo) -> object:
        field = cls.model_fields.get(info.field_name or "")
        problem = _number_problem(field.annotation, value) if field is not None else None
        if problem is not None:
            raise ValueError(problem)
        return value


class GatewaySettings(_Strict):
    """``[gateway]``: the box itself."""

    id: str = Field(
        default_factory=default_gateway_id,
        description="Fleet id: letters, digits and '-' only; shown on dashboards. "
        "Never patient data. Default: host name + hash of /etc/machine-id.",
    )
    ae_title: AETitle = Field(
        default="DERMGATE",
        description="Our AE title: calling AE towards the PACS and the title of "
        "the storage commitment listener.",
    )
    listen_port: Port = Field(
        default=11113, description="TCP port of our DICOM listener (commitment reports)."
    )
    listen_address: str = Field(
        default="0.0.0.0",
        description="Address our DICOM listener binds to; the PACS must reach it.",
    )
    state_dir: Path = Field(
        default=Path("/var/lib/dermgate"),
        description="Where the spool (captures, DICOM files) and the ledger live.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="Log verbosity. Logs never carry patient data."
    )

    @field_validator("id")
    @classmethod
    def _fleet_id(cls, value: str) -> str:
        if not _FLEET_ID.match(value):
            raise ValueError("use 1-64 letters, digits or '-' (it is shown on dashboards)")
        return value

    @field_validator("state_dir", mode="before")
    @classmethod
    def _absolute_state_dir(cls, value: object) -> object:
        # A relative state_dir would depend on the folder the service started in:
        # another start, another spool (and acknowledged captures left behind).
        if isinstance(value, str) and not value.strip():
            raise ValueError('must not be empty; use an absolute path, e.g. "/var/lib/dermgate"')
        if isinstance(value, str | Path) and not Path(value).is_absolute():
            raise ValueError('must be an absolute path, e.g. "/var/lib/dermgate"')
        return value


class SpoolSettings(_Strict):
    """``[spool]``: how much disk the spool may use and when copies are purged."""

    reserve_mb: int = Field(
        # A WAL checkpoint needs at most a few MiB (SQLite checkpoints every 1000
        # pages = 4 MiB) and the largest dermoscopic capture is ~10 MB, needed twice
        # (raw + DICOM); 128 MiB leaves ample room for both. Devices with larger
        # objects (confocal stacks) need a larger reserve.
        default=128,
        ge=1,
        description="Free space (MiB) always kept on the spool's filesystem: room for a "
        "ledger checkpoint and the largest capture. Below it new captures are refused at "
        "the device (NAK DISK_FULL); intake resumes by itself when space is back.",
    )
    max_capture_mb: int = Field(
        default=4096,
        ge=1,
        le=1 << 30,
        description="Largest capture (MiB) intake accepts. A capture announced larger, or "
        "streaming past it, is refused with its own reason (NAK TOO_LARGE at the device, "
        "kept there), never taken for a full disk.",
    )
    purge_high_watermark: float = Field(
        default=80.0,
        gt=0,
        le=100,
        description="Percent of the filesystem used above which local copies of "
        "confirmed captures are deleted, oldest first.",
    )
    purge_low_watermark: float = Field(
        default=70.0, gt=0, le=100, description="Purging stops below this percentage."
    )
    keep_days: float = Field(
        default=30.0,
        gt=0,
        description="Local copies of confirmed captures older than this are deleted "
        "whatever the space.",
    )
    purge_interval: float = Field(default=300.0, gt=0, description="Seconds between purge checks.")

    @model_validator(mode="after")
    def _watermarks(self) -> SpoolSettings:
        if self.purge_low_watermark > self.purge_high_watermark:
            raise ValueError("purge_low_watermark must not exceed purge_high_watermark")
        return self


class SupervisionSettings(_Strict):
    """``[supervision]``: how crashed or hung drivers are restarted and quarantined.

    A driver that raises (or returns) is restarted after a jittered delay that
    doubles per crash from ``restart_initial`` up to ``restart_max`` (a run that
    lasted ``restart_max`` seconds resets it). A driver that says TRANSFERRING and
    makes no progress (no byte written, no capture begun or committed, no change of
    state) for ``hang_timeout`` seconds is cancelled and restarted: a hang counts as a
    crash. ``quarantine_after`` crashes within ``quarantine_window`` seconds stop the
    driver for good (state QUARANTINED); the other devices run on. A quarantined
    driver runs again after a restart of the gateway, or for a hotplug device, when it
    is unplugged and plugged in again.
    """

    restart_initial: float = Field(
        default=1.0, gt=0, description="Seconds before the first restart of a crashed driver."
    )
    restart_max: float = Field(
        default=60.0, gt=0, description="Longest wait in seconds between restarts (jittered)."
    )
    quarantine_after: int = Field(
        default=5,
        ge=1,
        description="Crashes (or hangs) within quarantine_window after which the driver "
        "is stopped and shown as QUARANTINED.",
    )
    quarantine_window: float = Field(
        default=600.0, gt=0, description="Seconds over which crashes are counted."
    )
    hang_timeout: float = Field(
        default=120.0,
        gt=0,
        description="Seconds a driver may stay TRANSFERRING without progress before it is "
        "cancelled and restarted (counts as a crash).",
    )
    stop_timeout: float = Field(
        default=20.0,
        gt=0,
        le=80,
        description="Seconds a stop (SIGTERM) may take before the service exits anyway, "
        "logging what was still running; below the unit's TimeoutStopSec (90).",
    )

    @model_validator(mode="after")
    def _restart_order(self) -> SupervisionSettings:
        if self.restart_max < self.restart_initial:
            raise ValueError("restart_max must not be smaller than restart_initial")
        return self


def _check_hotplug_source(value: str) -> str:
    if value in ("none", "udev"):
        return value
    if value.startswith("simulated:") and len(value) > len("simulated:"):
        return value
    raise ValueError('use "none", "udev" or "simulated:PATH"')


class HotplugSettings(_Strict):
    """``[hotplug]``: where device appear/disappear events come from.

    Devices with ``hotplug = true`` in their ``[[devices]]`` entry are started when a
    device their driver matches appears and stopped when it goes.
    """

    source: Annotated[str, AfterValidator(_check_hotplug_source)] = Field(
        default="none",
        description='"none" (devices run all the time), "udev" (a box: the kernel\'s '
        'device events through udev) or "simulated:PATH" (tests and demos: JSON lines '
        "written to the Unix socket the gateway creates at PATH).",
    )


_TOPIC_PART = re.compile(r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$")


class MqttSettings(_Strict):
    """``[mqtt]``: fleet status over MQTT; absent = MQTT off.

    Topics are ``<topic_prefix>/<gateway id>/status`` (retained ``online``, and the
    retained Last Will ``offline``), ``.../state`` (retained JSON snapshot) and
    ``.../events`` (numbered events, QoS 1). TLS is used when ``tls_ca`` or
    ``tls_cert`` is set; the broker's certificate is always verified.
    """

    host: str = Field(description="Broker host name or IP address.")
    port: Port = Field(default=1883, description="Broker port (8883 is usual for TLS).")
    topic_prefix: str = Field(
        default="dermgate",
        description="First topic level(s): topics are <topic_prefix>/<gateway id>/...",
    )
    username: str | None = Field(default=None, description="User name at the broker.")
    password_file: Path | None = Field(
        default=None,
        description="File holding the broker password (first line); needs username. "
        "Kept out of the configuration so the config can be shared.",
    )
    tls_ca: Path | None = Field(
        default=None,
        description="CA certificate (PEM) that signed the broker's certificate; turns TLS on. "
        "Without it (but with tls_cert) the system's CAs are used.",
    )
    tls_cert: Path | None = Field(
        default=None, description="Client certificate (PEM) for brokers that require one."
    )
    tls_key: Path | None = Field(default=None, description="Private key (PEM) of tls_cert.")
    homeassistant_discovery: bool = Field(
        default=True,
        description="Publish Home Assistant MQTT discovery configs (retained) for the key "
        "sensors, again whenever Home Assistant announces itself on homeassistant/status.",
    )
    keepalive: int = Field(
        default=30,
        ge=5,
        le=3600,
        description="MQTT keepalive in seconds: a box that vanishes shows offline within "
        "about 1.5 times this.",
    )
    state_min_interval: float = Field(
        default=2.0,
        ge=0,
        description="Shortest time in seconds between two state publications (changes "
        "within it are combined into one).",
    )
    events_buffer: int = Field(
        default=1000,
        ge=1,
        description="Events kept while the broker is away; beyond it the oldest are dropped "
        "and counted (reported in the next event and in the state).",
    )
    reconnect_max: float = Field(
        default=60.0,
        ge=0.1,
        description="Longest wait in seconds between reconnection attempts (jittered).",
    )

    @field_validator("topic_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not _TOPIC_PART.match(value):
            raise ValueError(
                "use letters, digits, '_' or '-' in levels separated by '/' "
                "(no wildcards, no leading or trailing '/')"
            )
        return value

    @model_validator(mode="after")
    def _pairs(self) -> MqttSettings:
        if self.password_file is not None and self.username is None:
            raise ValueError("password_file needs username")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        return self

    @property
    def tls(self) -> bool:
        """Whether the connection uses TLS."""
        return self.tls_ca is not None or self.tls_cert is not None


class DicomDestination(_Strict):
    """``[[destinations]]`` with ``kind = "dicom"``: a PACS reached by C-STORE."""

    name: str = Field(description="Short name used in logs, listings and the ledger.")
    kind: Literal["dicom"] = Field(description='Transport; "dicom" (C-STORE).')
    ae_title: AETitle = Field(description="The PACS's AE title (called AE).")
    host: str = Field(description="PACS host name or IP address.")
    port: Port = Field(description="PACS DICOM port.")
    storage_commitment: bool = Field(
        default=True,
        description="Ask the PACS to commit stored instances (Storage Commitment Push).",
    )
    connect_timeout: float = Field(
        default=10.0, gt=0, description="Seconds to open the TCP connection."
    )
    acse_timeout: float = Field(
        default=30.0, gt=0, description="Seconds to wait for association accept/release."
    )
    dimse_timeout: float = Field(
        default=60.0, gt=0, description="Seconds to wait for a C-STORE response."
    )
    network_timeout: float = Field(
        default=60.0, gt=0, description="Seconds of network silence before giving up."
    )
    retry_initial: float = Field(
        default=2.0, gt=0, description="First retry delay in seconds (doubles per failure)."
    )
    retry_max: float = Field(
        default=900.0, gt=0, description="Longest retry delay in seconds (jittered)."
    )
    batch_size: int = Field(
        default=20, ge=1, le=1000, description="Instances sent per association."
    )
    associations: int = Field(
        default=2, ge=1, le=16, description="Associations used in parallel for sending."
    )
    breaker_threshold: int = Field(
        default=3,
        ge=1,
        description="Failed association attempts in a row after which sending pauses and "
        "the destination is probed with C-ECHO instead; an answer resumes at once.",
    )
    stuck_after: float = Field(
        default=86400.0,
        gt=0,
        description="Seconds after arrival at which an undelivered capture raises the "
        "'stuck' alarm (it is still retried).",
    )
    commitment_batch_size: int = Field(
        default=50, ge=1, le=10000, description="Instances per commitment request."
    )
    commitment_batch_delay: float = Field(
        default=2.0, ge=0, description="Seconds to wait for a fuller commitment batch."
    )
    commitment_timeout: float = Field(
        default=600.0,
        gt=0,
        description="Seconds to wait for a commitment report before asking again.",
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
        '(e.g. ["10.0.0.5"] for a cluster node), besides the addresses of `host`. A report '
        "counts only when it comes from this PACS's AE title at one of these addresses.",
    )
    commitment_alarm_after: float = Field(
        default=600.0,
        gt=0,
        description="Seconds a commitment request may go without a report before the "
        "'commitment_overdue' alarm is raised (cleared when the reports arrive).",
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

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("use 1-32 letters, digits, '_' or '-'")
        return value

    @model_validator(mode="after")
    def _retry_order(self) -> DicomDestination:
        if self.retry_max < self.retry_initial:
            raise ValueError("retry_max must not be smaller than retry_initial")
        return self


def _check_listen(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError('use "HOST:PORT", e.g. "127.0.0.1:8080"')
    return value


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
        description='"HOST:PORT" the page listens on. Loopback by default.',
    )
    users_file: Path | None = Field(
        default=None,
        description="Logins (name + salted scrypt hash; written by `dermgate user add`). "
        "Default: STATE_DIR/web/users.json.",
    )
    audit_log: Path | None = Field(
        default=None,
        description="Append-only log of patient-data reveals (who, when, spool id; never "
        "the data). Default: STATE_DIR/web/audit.log.",
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
        "lockout_window after which further attempts are refused for lockout_duration.",
    )
    lockout_window: float = Field(
        default=900.0, gt=0, description="Seconds over which failed logins are counted."
    )
    lockout_duration: float = Field(
        default=900.0, gt=0, description="Seconds logins stay refused after a lockout."
    )
    metrics_public: bool = Field(
        default=True,
        description="Serve /metrics without a login (it holds no patient data) so that "
        "Prometheus can scrape it; false: only with a session.",
    )
    tls_cert: Path | None = Field(
        default=None,
        description="PEM certificate: serve HTTPS (the session cookie is then Secure).",
    )
    tls_key: Path | None = Field(default=None, description="PEM private key of tls_cert.")
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


class DeviceSettings(BaseModel):
    """``[[devices]]``: one attached device. ``driver`` picks the plugin; every
    other key is an option of that driver, validated by the driver's own model."""

    model_config = ConfigDict(extra="allow", frozen=True)

    driver: str = Field(description="Driver id, e.g. serial-dermatoscope.")
    name: str | None = Field(
        default=None, description="Label for logs and status; default: driver + index."
    )
    hotplug: bool = Field(
        default=False,
        description="Start the driver when a device its matchers accept appears and stop "
        "it when the device goes (needs [hotplug] source). Options may contain "
        '"{devnode}", replaced by the device node that appeared (e.g. port = "{devnode}").',
    )
    usb_serial: str | None = Field(
        default=None,
        description="Hotplug: serve only the device with this USB serial number.",
    )
    match_devnode: str | None = Field(
        default=None,
        description='Hotplug: serve only device nodes matching this pattern (e.g. "/dev/ttyACM1").',
    )
    issuer_of_patient_id: str | None = Field(
        default=None,
        description="Issuer of Patient ID (e.g. the hospital's MRN domain) given to a Patient "
        "ID this device supplies without an issuer of its own. Captures without a patient "
        "get a temporary ID TMP-<gateway id>-<spool id> whatever this says.",
    )

    @field_validator("issuer_of_patient_id")
    @classmethod
    def _issuer(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.strip() or len(value) > 64 or "\\" in value or not value.isprintable():
            raise ValueError("use 1-64 printable characters without a backslash (DICOM LO)")
        return value

    def options(self) -> dict[str, Any]:
        """The driver-specific keys of this section."""
        return dict(self.model_extra or {})


class DermGateConfig(_Strict):
    """The whole configuration file."""

    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    spool: SpoolSettings = Field(default_factory=SpoolSettings)
    supervision: SupervisionSettings = Field(default_factory=SupervisionSettings)
    hotplug: HotplugSettings = Field(default_factory=HotplugSettings)
    mqtt: MqttSettings | None = Field(
        default=None, description="Fleet status over MQTT; absent = off (see MqttSettings)."
    )
    destinations: list[DicomDestination] = Field(default_factory=list)
    devices: list[DeviceSettings] = Field(default_factory=list)
    web: WebSettings | None = Field(
        default=None, description="The local page; absent = no page (see WebSettings)."
    )

    @model_validator(mode="after")
    def _unique_names(self) -> DermGateConfig:
        names = [d.name for d in self.destinations]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"destination names must be unique: {', '.join(dupes)}")
        return self

    def device_name(self, index: int) -> str:
        """The label of device ``index``."""
        device = self.devices[index]
        return device.name or f"{device.driver}-{index}"

    def spool_dir(self) -> Path:
        """Folder holding staging, raw and DICOM files."""
        return self.gateway.state_dir / "spool"

    def status_path(self) -> Path:
        """The device status snapshot (JSON, rewritten on every change)."""
        return self.gateway.state_dir / "status" / "devices.json"

    def ledger_path(self) -> Path:
        """The SQLite ledger."""
        return self.gateway.state_dir / "ledger.sqlite3"

    def users_path(self) -> Path:
        """The local page's users file (``[web] users_file`` or its default)."""
        if self.web is not None and self.web.users_file is not None:
            return self.web.users_file
        return self.gateway.state_dir / "web" / "users.json"

    def audit_path(self) -> Path:
        """The reveal audit log (``[web] audit_log`` or its default)."""
        if self.web is not None and self.web.audit_log is not None:
            return self.web.audit_log
        return self.gateway.state_dir / "web" / "audit.log"


def _format_location(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _format_errors(path: Path, err: ValidationError) -> list[str]:
    problems = []
    for item in err.errors():
        loc = _format_location(tuple(item["loc"]))
        if item["type"] == "extra_forbidden":
            problems.append(f"{path}: {loc}: unknown key")
        else:
            msg = item["msg"].removeprefix("Value error, ")
            problems.append(f"{path}: {loc}: {msg}")
    return problems


def _validate_device_options(
    path: Path, config: DermGateConfig, *, broken_drivers_fatal: bool
) -> list[str]:
    # Imported here: the registry loads driver plugins, which import this module.
    from gateway.devices.registry import BrokenDriver, UnknownDriver, find_driver

    problems: list[str] = []
    for index, device in enumerate(config.devices):
        where = f"devices[{index}]"
        before = len(problems)
        try:
            driver = find_driver(device.driver)
        except BrokenDriver as err:
            if broken_drivers_fatal:
                problems.append(f"{path}: {where}.driver: {err}")
            continue
        except UnknownDriver as err:
            problems.append(f"{path}: {where}.driver: {err}")
            continue
        if device.hotplug and config.hotplug.source == "none":
            problems.append(f'{path}: {where}.hotplug: needs [hotplug] source other than "none"')
        if device.hotplug and not driver.matchers:
            problems.append(
                f"{path}: {where}.hotplug: driver {device.driver} declares no device matchers"
            )
        options = device.options()
        for key, value in options.items():
            field = driver.Options.model_fields.get(key)
            problem = _number_problem(field.annotation, value) if field is not None else None
            if problem is not None:
                problems.append(f"{path}: {where}.{key}: {problem}")
        if len(problems) > before:
            continue
        try:
            driver.Options.model_validate(options)
        except ValidationError as err:
            for item in err.errors():
                loc = _format_location((where, *item["loc"]))
                if item["type"] == "extra_forbidden":
                    problems.append(f"{path}: {loc}: unknown key for driver {device.driver}")
                else:
                    msg = item["msg"].removeprefix("Value error, ")
                    problems.append(f"{path}: {loc}: {msg}")
    return problems


def _no_destination(path: Path) -> str:
    return (
        f"{path}: destinations: no destination: add a [[destinations]] section (the PACS the "
        "captures go to); without one nothing would ever leave the box"
    )


def _service_problems(path: Path, config: DermGateConfig) -> list[str]:
    """What ``dermgate run`` needs beyond a valid file (checked by check-config too)."""
    problems: list[str] = [] if config.destinations else [_no_destination(path)]
    # The nearest existing folder on the way to state_dir must be a folder.
    existing = config.gateway.state_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        what = "is" if existing == config.gateway.state_dir else f"is inside {existing}, which is"
        problems.append(f"{path}: gateway.state_dir: {what} a file, not a folder")
    return problems


def parse_config(
    text: str, path: Path, *, broken_drivers_fatal: bool = True, service: bool = False
) -> DermGateConfig:
    """Parse and validate TOML ``text`` (read from ``path``); raise ConfigError.

    A driver plugin that is installed but fails to load is a problem like any other
    unless ``broken_drivers_fatal`` is False (``dermgate run``: the gateway starts,
    and only the devices using that driver are shown QUARANTINED). With ``service``
    (``run`` and ``check-config``) the file must also be one a service can run on:
    at least one destination, and a ``state_dir`` that is not a file.
    """
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(path, [f"{path}: not valid TOML: {err}"]) from err
    if not raw:
        # An empty file is a mistake (a truncated copy, the wrong file), never "all defaults".
        empty = f"{path}: (top level): the file is empty (only comments or nothing)"
        raise ConfigError(path, [empty] + ([_no_destination(path)] if service else []))
    try:
        config = DermGateConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(path, _format_errors(path, err)) from err
    problems = _validate_device_options(path, config, broken_drivers_fatal=broken_drivers_fatal)
    if service:
        problems += _service_problems(path, config)
    if problems:
        raise ConfigError(path, problems)
    return config


def load_config(
    path: Path, *, broken_drivers_fatal: bool = True, service: bool = False
) -> DermGateConfig:
    """Read, parse and validate the configuration file at ``path`` (see parse_config)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(path, [f"{path}: cannot read: {err.strerror or err}"]) from err
    except UnicodeDecodeError as err:
        raise ConfigError(path, [f"{path}: not UTF-8 text"]) from err
    return parse_config(text, path, broken_drivers_fatal=broken_drivers_fatal, service=service)
