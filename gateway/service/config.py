"""Reading the configuration file: TOML, the models of :mod:`gateway.core.config`, and
each device's options checked by its driver's own model (found in the driver registry)."""

from __future__ import annotations

import tomllib
from pathlib import Path

from pydantic import (
    ValidationError,
)

from gateway.core.config import ConfigError, DermGateConfig
from gateway.core.config.base import _number_problem
from gateway.devices.registry import BrokenDriver, UnknownDriver, find_driver

__all__ = ["ConfigError", "load_config", "parse_config"]


#: Tags of unions told apart by a key (``[[destinations]] kind``): pydantic puts them in
#: an error's location, the file has no such key.
_UNION_TAGS = frozenset({"dicom", "dicomweb"})


def _format_location(loc: tuple[int | str, ...]) -> str:
    out = ""
    for index, part in enumerate(loc):
        if index > 0 and loc[0] == "destinations" and part in _UNION_TAGS and index == 2:
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _format_errors(path: Path, err: ValidationError) -> list[str]:
    problems = []
    for item in err.errors():
        where = tuple(item["loc"]) + (("kind",) if item["type"] == "destination_kind" else ())
        loc = _format_location(where)
        if item["type"] == "extra_forbidden":
            problems.append(f"{path}: {loc}: unknown key")
        else:
            msg = item["msg"].removeprefix("Value error, ")
            problems.append(f"{path}: {loc}: {msg}")
    return problems


def _validate_device_options(
    path: Path, config: DermGateConfig, *, broken_drivers_fatal: bool
) -> list[str]:
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
