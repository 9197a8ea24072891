"""What every configuration section shares: strict models, checked numbers, AE titles, the error."""

from __future__ import annotations

import hashlib
import math
import re
import socket
from pathlib import Path
from types import NoneType
from typing import Annotated, Any, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
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
