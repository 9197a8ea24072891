"""The whole configuration file."""

from __future__ import annotations

from pathlib import Path

from pydantic import (
    Field,
    model_validator,
)

from gateway.core.config.base import _Strict
from gateway.core.config.box import (
    GatewaySettings,
    HotplugSettings,
    SpoolSettings,
    SupervisionSettings,
)
from gateway.core.config.context import BarcodeSettings, ContextSettings, WorklistSettings
from gateway.core.config.destinations import Destination, DicomDestination, DicomwebDestination
from gateway.core.config.devices import DeviceSettings
from gateway.core.config.mqtt import MqttSettings
from gateway.core.config.routes import RouteSettings
from gateway.core.config.web import WebSettings


class DermGateConfig(_Strict):
    """The whole configuration file."""

    # Each section's description opens its table in README.md's configuration
    # reference (scripts/config_reference.py).
    gateway: GatewaySettings = Field(
        default_factory=GatewaySettings,
        description="The box itself: its fleet id, its DICOM identity and listener, where "
        "its state lives.",
    )
    spool: SpoolSettings = Field(
        default_factory=SpoolSettings,
        description="How much disk the spool may use, and when confirmed local copies are purged.",
    )
    supervision: SupervisionSettings = Field(
        default_factory=SupervisionSettings,
        description="Optional: how crashed or hung drivers are restarted and quarantined.",
    )
    hotplug: HotplugSettings = Field(
        default_factory=HotplugSettings,
        description="Optional: start drivers when their device is plugged in, stop them "
        "when it goes.",
    )
    mqtt: MqttSettings | None = Field(
        default=None,
        description='Optional: fleet status over MQTT (topics and payloads: see "Fleet '
        'status over MQTT"). Absent: MQTT off.',
    )
    destinations: list[Destination] = Field(
        default_factory=list,
        description="One table per PACS or DICOMweb store; every capture goes to each "
        "unless `[[routes]]` say otherwise. At least one is required.",
    )
    routes: list[RouteSettings] = Field(
        default_factory=list,
        description="Optional: which captures go to which destinations, and which jump the "
        'queue (see "Several destinations and routes"). Absent: every capture to every '
        "destination.",
    )
    devices: list[DeviceSettings] = Field(
        default_factory=list, description="One table per attached device."
    )
    web: WebSettings | None = Field(
        default=None,
        description="Optional: the technicians' local page, `/healthz` and `/metrics` (see "
        '"Watching it"). Absent: no page; an empty `[web]` takes every default. Logins are '
        "added with `dermgate user add`.",
    )

    worklist: WorklistSettings | None = Field(
        default=None,
        description="Optional: the Modality Worklist SCP whose scheduled patients and orders "
        'sessions are opened from (see "Patients, orders and lesions"). Absent: no worklist.',
    )
    context: ContextSettings = Field(
        default_factory=ContextSettings,
        description="How captures without a patient session are held, and the sensitive-"
        "content policy.",
    )
    barcodes: list[BarcodeSettings] = Field(
        default_factory=list,
        description="Optional: barcode scanners; a scan opens a device's patient session.",
    )

    @model_validator(mode="after")
    def _barcode_devices(self) -> DermGateConfig:
        names = [self.device_name(i) for i in range(len(self.devices))]
        for index, scanner in enumerate(self.barcodes):
            if scanner.for_device not in names:
                raise ValueError(
                    f"barcodes[{index}].for_device: {scanner.for_device!r} names no [[devices]] "
                    f"entry (their names: {', '.join(names) or 'none'})"
                )
        seen: dict[str, int] = {}
        for index, scanner in enumerate(self.barcodes):
            where = scanner.device or scanner.port or ""
            if where in seen:
                raise ValueError(
                    f"barcodes[{index}]: {where} is already barcodes[{seen[where]}] "
                    "(a scanner can be read by one entry only)"
                )
            seen[where] = index
        return self

    @model_validator(mode="after")
    def _unique_names(self) -> DermGateConfig:
        names = [d.name for d in self.destinations]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"destination names must be unique: {', '.join(dupes)}")
        return self

    @model_validator(mode="after")
    def _route_names(self) -> DermGateConfig:
        destinations = [d.name for d in self.destinations]
        devices = [self.device_name(i) for i in range(len(self.devices))]
        drivers = sorted({d.driver for d in self.devices})
        for index, route in enumerate(self.routes):
            checks = (
                ("to", route.to, destinations, "[[destinations]] entry"),
                ("match.device", route.match.device, devices, "[[devices]] entry"),
                ("match.driver", route.match.driver, drivers, "[[devices]] driver"),
            )
            for key, given, known, what in checks:
                for name in given:
                    if name not in known:
                        raise ValueError(
                            f"routes[{index}].{key}: {name!r} names no {what} (their names: "
                            f"{', '.join(known) or 'none'})"
                        )
        return self

    def dicom_destinations(self) -> list[DicomDestination]:
        """The ``kind = "dicom"`` destinations (C-STORE), in configured order."""
        return [d for d in self.destinations if isinstance(d, DicomDestination)]

    def dicomweb_destinations(self) -> list[DicomwebDestination]:
        """The ``kind = "dicomweb"`` destinations (STOW-RS), in configured order."""
        return [d for d in self.destinations if isinstance(d, DicomwebDestination)]

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

    def tokens_path(self) -> Path:
        """The API tokens file (names and hashes; ``dermgate token add``)."""
        return self.gateway.state_dir / "web" / "api_tokens.json"

    def audit_path(self) -> Path:
        """The reveal audit log (``[web] audit_log`` or its default)."""
        if self.web is not None and self.web.audit_log is not None:
            return self.web.audit_log
        return self.gateway.state_dir / "web" / "audit.log"
