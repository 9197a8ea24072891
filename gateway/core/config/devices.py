"""``[[devices]]``: one attached device (its options belong to its driver)."""

from __future__ import annotations

from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
)


class DeviceSettings(BaseModel):
    """``[[devices]]``: one attached device. ``driver`` picks the plugin; every
    other key is an option of that driver, validated by the driver's own model."""

    model_config = ConfigDict(extra="allow", frozen=True)

    driver: str = Field(
        description="Which driver serves it, e.g. `serial-dermatoscope`; `dermgate "
        "check-config` lists the installed ones when it does not know the name."
    )
    name: str | None = Field(
        default=None,
        description="Label in logs and status.",
        json_schema_extra={"doc_default": "`<driver>-<index>`"},
    )
    hotplug: bool = Field(
        default=False,
        description="Start the driver when a device its matchers accept appears (USB "
        "vendor/product id, serial port pattern) and stop it cleanly when it goes. Needs a "
        '`[hotplug]` source. Write `"{devnode}"` in an option to get the device node that '
        'appeared, e.g. `port = "{devnode}"`. One entry serves one device at a time.',
    )
    usb_serial: str | None = Field(
        default=None,
        description="Hotplug: serve only the device with this USB serial number.",
    )
    match_devnode: str | None = Field(
        default=None,
        description="Hotplug: serve only device nodes matching this pattern "
        '(e.g. `"/dev/ttyACM1"`).',
    )
    issuer_of_patient_id: str | None = Field(
        default=None,
        description="Issuer of Patient ID for a Patient ID this device supplies without an "
        'issuer (e.g. a scanner export\'s MRN: `"HOSP-MRN"`); an issuer the device sends '
        "wins. Captures without a patient always get the temporary Patient ID "
        "`TMP-<gateway id>-<spool id>` with issuer `<gateway id>-TEMP`, whatever this says.",
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
