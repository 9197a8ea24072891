"""``[worklist]``, ``[context]`` and ``[[barcodes]]``: patient, order and lesion context."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, Field, field_validator, model_validator

from gateway.core.config.base import AETitle, Port, _Strict

_CS = re.compile(r"^[A-Z0-9 _]{0,16}$")
_CODE_REF = re.compile(r"^[A-Za-z0-9_.-]{1,16}:[A-Za-z0-9_.-]{1,64}$")


class WorklistSettings(_Strict):
    """``[worklist]``: the Modality Worklist SCP that holds the clinic's orders."""

    ae_title: AETitle = Field(description="The worklist SCP's AE title (called AE).")
    host: str = Field(description="Worklist SCP host name or IP address.")
    port: Port = Field(description="Worklist SCP DICOM port.")
    station_ae_title: str | None = Field(
        default=None,
        description="Scheduled Station AE Title to match. Absent: `[gateway] ae_title`; "
        '`""`: do not filter by station.',
        json_schema_extra={"doc_default": "`[gateway] ae_title`"},
    )
    modality: str = Field(
        default="",
        description='Scheduled Procedure Step Modality to match, upper case (e.g. `"XC"`); '
        '`""`: any.',
    )
    window_days: int = Field(
        default=1,
        ge=0,
        le=30,
        description="Items whose step starts from today minus this many days to today plus "
        "this many days.",
    )
    refresh: float = Field(
        default=300.0,
        ge=10,
        description="Seconds between refreshes (the page and `dermgate worklist refresh` "
        "also refresh on demand).",
    )
    max_items: int = Field(
        default=500,
        ge=1,
        le=10000,
        description="At most this many items are taken per query; the rest is cancelled "
        "(C-CANCEL) and a warning says the worklist was cut.",
    )
    timeout: float = Field(
        default=30.0, gt=0, description="Seconds to connect, and to wait for each answer."
    )
    stale_after: float = Field(
        default=900.0,
        gt=0,
        description="Seconds after the last successful refresh from which the cached "
        "worklist is shown as stale (it is still used).",
    )
    mpps: bool = Field(
        default=False,
        description="Report procedure steps to the worklist SCP's address with MPPS "
        "(N-CREATE IN PROGRESS at a worklist session's first capture, N-SET COMPLETED "
        "when it ends and everything is stored, DISCONTINUED when it ends empty).",
    )
    mpps_ae_title: AETitle | None = Field(
        default=None,
        description="The MPPS SCP's AE title when it is not the worklist's.",
        json_schema_extra={"doc_default": "`ae_title`"},
    )
    mpps_port: Port | None = Field(
        default=None,
        description="The MPPS SCP's port when it is not the worklist's (same host).",
        json_schema_extra={"doc_default": "`port`"},
    )

    @field_validator("modality")
    @classmethod
    def _modality(cls, value: str) -> str:
        if not _CS.match(value):
            raise ValueError("a modality is a DICOM code string: upper case letters and digits")
        return value

    @field_validator("station_ae_title")
    @classmethod
    def _station(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return value
        if len(value) > 16 or not value.isascii() or "\\" in value:
            raise ValueError("an AE title has 1 to 16 printable ASCII characters, no '\\'")
        return value


def _check_code_ref(value: str) -> str:
    if value.isascii() and value.isdigit():  # a bare SNOMED CT code value, as devices send
        value = f"SCT:{value}"
    if not _CODE_REF.match(value):
        raise ValueError('write a site as "SCHEME:VALUE", e.g. "SCT:33205005"')
    return value


CodeRef = Annotated[str, AfterValidator(_check_code_ref)]


class SensitiveRule(_Strict):
    """``[[context.sensitive]]``: one Sensitive Content code and when it is written."""

    sites: list[CodeRef] = Field(
        default_factory=list,
        description='Anatomic sites (CID 4029) that make a capture sensitive, as "SCHEME:VALUE" '
        '(e.g. `"SCT:33205005"`; a bare code value is SNOMED CT).',
    )
    flagged: bool = Field(
        default=False,
        description="Also write this code on captures a technician flags as sensitive.",
    )
    scheme: str = Field(min_length=1, max_length=16, description="Coding Scheme Designator.")
    value: str = Field(min_length=1, max_length=64, description="Code Value.")
    meaning: str = Field(min_length=1, max_length=64, description="Code Meaning.")


class ContextSettings(_Strict):
    """``[context]``: how captures get their patient when no worklist item names it."""

    hold_unidentified: int = Field(
        default=3600,
        ge=0,
        description="Seconds a capture that arrives with no patient session waits (HELD, "
        "not sent) for a technician to assign it; then it goes out under a temporary "
        "patient. 0: send at once.",
    )
    operator_name: bool = Field(
        default=True,
        description="Write the logged-in user who opened the session as Operators' Name.",
    )
    issuer_of_patient_id: str = Field(
        default="",
        max_length=64,
        description="Issuer of Patient ID for patients typed in or scanned without a "
        "worklist match (the clinic's MRN namespace).",
    )
    sensitive: list[SensitiveRule] = Field(
        default_factory=list,
        description="Site policy for the Sensitive Content Code Sequence (0008,001D).",
    )


class BarcodeSettings(_Strict):
    """``[[barcodes]]``: a barcode scanner that opens a device's patient session."""

    device: str | None = Field(
        default=None,
        description="A HID keyboard-wedge scanner's event device "
        "(`/dev/input/by-id/usb-…-event-kbd`), read exclusively.",
    )
    port: str | None = Field(
        default=None, description="A serial (USB-CDC) scanner's port, e.g. `/dev/ttyACM1`."
    )
    baudrate: int = Field(default=9600, ge=50, description="Serial scanners only.")
    for_device: str = Field(
        description="The `name` of the `[[devices]]` entry whose session a scan opens."
    )
    pattern: str = Field(
        default=r"^(?P<patient_id>.+)$",
        description="A regular expression the whole scan must match, with a named group "
        "`patient_id` or `accession_number`.",
    )

    @field_validator("pattern")
    @classmethod
    def _pattern(cls, value: str) -> str:
        try:
            compiled = re.compile(value)
        except re.error as err:
            raise ValueError(f"not a regular expression: {err}") from None
        if not {"patient_id", "accession_number"} & set(compiled.groupindex):
            raise ValueError("the pattern needs a named group patient_id or accession_number")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> BarcodeSettings:
        if (self.device is None) == (self.port is None):
            raise ValueError("give exactly one of device (keyboard wedge) or port (serial)")
        return self
