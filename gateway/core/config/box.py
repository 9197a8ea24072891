"""``[gateway]``, ``[spool]``, ``[supervision]`` and ``[hotplug]``: the box itself."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from gateway.core.config.base import _FLEET_ID, AETitle, Port, _Strict, default_gateway_id
from gateway.core.config.tls_files import check_certificate_file, paired_key


class GatewaySettings(_Strict):
    """``[gateway]``: the box itself."""

    id: str = Field(
        default_factory=default_gateway_id,
        description="The box's fleet id: letters, digits and `-` only, at most 64. Shown on "
        "dashboards; never patient data. Stable across restarts.",
        json_schema_extra={
            "doc_default": "host name + 6 hex digits of a hash of `/etc/machine-id`"
        },
    )
    ae_title: AETitle = Field(
        default="DERMGATE",
        description="Our DICOM AE title: the calling AE towards the PACS, and the title of "
        "our storage-commitment listener. 1–16 printable ASCII characters, no `\\`.",
    )
    listen_port: Port = Field(
        default=11113,
        description="TCP port of our DICOM listener, where the PACS sends storage commitment "
        "reports. Register our AE title, this box's address and this port in the PACS.",
    )
    listen_address: str = Field(
        default="0.0.0.0",
        description="Address our DICOM listener binds to (the PACS must be able to reach it).",
    )
    listen_tls_cert: Path | None = Field(
        default=None,
        description="Our listener's certificate (PEM); with `listen_tls_key`, a second DICOM "
        "listener on `listen_tls_port` takes storage commitment reports over TLS (1.2 or "
        "newer). The plain `listen_port` stays as it is.",
    )
    listen_tls_key: Path | None = Field(
        default=None, description="The unencrypted private key (PEM) of `listen_tls_cert`."
    )
    listen_tls_ca: Path | None = Field(
        default=None,
        description="CA certificate(s) (PEM) that signed the PACSs' own certificates: set, "
        "a PACS must present one of them to report over TLS (mutual TLS); unset, any PACS "
        "admitted by address and AE title may report without one.",
    )
    listen_tls_port: Port = Field(
        default=2762,
        description="TCP port of the TLS listener (2762 is the IANA port for DICOM over "
        "TLS); used only with `listen_tls_cert`. Register it, with TLS, for our AE title in "
        "the PACS.",
    )
    state_dir: Path = Field(
        default=Path("/var/lib/dermgate"),
        description="An absolute path: where the spool (`spool/staging`, `spool/raw`, "
        "`spool/dicom`) and the ledger (`ledger.sqlite3`) live.",
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

    @field_validator("listen_tls_ca", "listen_tls_cert")
    @classmethod
    def _certificate_files(cls, value: Path | None) -> Path | None:
        return None if value is None else check_certificate_file(value)

    @field_validator("listen_tls_key")
    @classmethod
    def _listen_pair(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return paired_key(value, info.data.get("listen_tls_cert"))

    @model_validator(mode="after")
    def _listen_tls_keys(self) -> GatewaySettings:
        if (self.listen_tls_cert is None) != (self.listen_tls_key is None):
            raise ValueError(
                "listen_tls_cert and listen_tls_key go together: give both, or neither"
            )
        if self.listen_tls_cert is None and self.listen_tls_ca is not None:
            raise ValueError("listen_tls_ca needs listen_tls_cert and listen_tls_key")
        if self.listen_tls_cert is not None and self.listen_tls_port == self.listen_port:
            raise ValueError("listen_tls_port must differ from listen_port")
        return self

    @property
    def listen_tls(self) -> bool:
        """Whether the TLS listener runs."""
        return self.listen_tls_cert is not None

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
        description="Free space (MiB) always kept on the spool's disk: room for a ledger "
        "checkpoint (a quarter of it, at most 4 MiB, held as `STATE_DIR/.reserve`) and the "
        "largest capture twice (raw and DICOM; ~10 MB for a dermatoscope). Below it, new "
        "captures are refused at the device (NAK DISK_FULL) with a DISK FULL alarm; intake "
        "resumes by itself. Raise it for devices with larger objects.",
    )
    max_capture_mb: int = Field(
        default=4096,
        ge=1,
        le=1 << 30,
        description="Largest capture (MiB) accepted. A capture announced larger, or sending "
        "more, is refused at the device with its own reason (NAK TOO_LARGE; the device keeps "
        "it), never mistaken for a full disk.",
    )
    purge_high_watermark: float = Field(
        default=80.0,
        gt=0,
        le=100,
        description="Percent of the disk used above which confirmed local copies are "
        "deleted, oldest first, until usage is below `purge_low_watermark`.",
    )
    purge_low_watermark: float = Field(
        default=70.0,
        gt=0,
        le=100,
        description="Purging stops below this percentage (at most `purge_high_watermark`).",
    )
    keep_days: float = Field(
        default=30.0,
        gt=0,
        description="Confirmed local copies older than this many days are deleted "
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
        default=60.0,
        gt=0,
        description="Longest wait in seconds between restarts; delays double from "
        "`restart_initial`, with random jitter; a run this long resets the doubling.",
    )
    quarantine_after: int = Field(
        default=5,
        ge=1,
        description="Crashes (or hangs) within `quarantine_window` after which the driver "
        "is stopped and shown as QUARANTINED.",
    )
    quarantine_window: float = Field(
        default=600.0, gt=0, description="Seconds over which crashes are counted."
    )
    hang_timeout: float = Field(
        default=120.0,
        gt=0,
        description="Seconds a driver may say TRANSFERRING without progress (no byte, no "
        "capture begun or saved, no change of state) before it is cancelled and restarted; "
        "counts as a crash.",
    )
    stop_timeout: float = Field(
        default=20.0,
        gt=0,
        le=80,
        description="Seconds a stop (`systemctl stop`, SIGTERM) may take. Past it the "
        "service exits anyway and logs which stages and threads were still running, with "
        "their stacks; nothing acknowledged is lost, since it is already in the spool. Must "
        "stay below the unit's `TimeoutStopSec` (90).",
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
        description='`"none"`: devices run all the time. `"udev"` (a box): the kernel\'s '
        'device events through udev. `"simulated:PATH"` (tests, demos): JSON lines such as '
        '`{"action": "appeared", "subsystem": "tty", "devnode": "/dev/ttyACM0"}` written to '
        "the Unix socket the gateway creates at PATH.",
    )
