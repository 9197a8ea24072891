"""``dermgate check``: the configuration, the box and (with ``--connect``) every peer.

::

    dermgate check --config FILE [--connect] [--json]
    dermgate check-config FILE [--json]       the same as check without --connect

One line per check: ``OK``, ``WARN`` or ``FAIL``, what was found and what to do. The
checks are :mod:`gateway.status.checks`, the same code as the page's "Why isn't it
sending?". Without ``--connect``: the configuration (syntax, the users and API tokens
files), the state folder, the disk, each device's port or folder, the users file
readable by the service, the clock, every certificate's expiry. With ``--connect``
also a C-ECHO to each DICOM destination (a refused connection, no answer and a
rejected AE title told apart, the wrong AE title named), a QIDO-RS query to each
DICOMweb store, our commitment listener, the worklist SCP and the MQTT broker.
``--json``: the same lines as a list of objects (``name``, ``status``, ``finding``,
``advice``). No patient data: hosts, ports, AE titles, paths, dates.

Exit codes of ``check`` (the update's health gate relies on them): 0 nothing failed
(warnings allowed), 1 a check failed, 2 bad usage or a configuration that cannot be
read or used. ``check-config`` (the service unit's start-up check) prints the same
lines but exits 0 or 2 only: a box problem (an expired certificate, an unplugged
device) must not keep the service, and so the spool, from starting.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from gateway.core.config import ConfigError, DermGateConfig
from gateway.service.config import load_config
from gateway.status.checks.result import FAIL, OK, UNKNOWN, WARN, CheckResult

__all__ = ["add_check_commands", "config_problems", "render_json", "render_lines"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

EPILOG = """\
exit codes:
  0  nothing failed (warnings allowed)
  1  at least one check failed
  2  bad usage, or a configuration that cannot be read or used
"""


def config_problems(config: DermGateConfig) -> list[str]:
    """What makes the page's own files unusable (the users and API tokens files)."""
    if config.web is None:
        return []
    from gateway.status.web.tokens import tokens_file_problem
    from gateway.status.web.users import users_file_problem

    problems = []
    problem = users_file_problem(config.users_path())
    if problem is not None:
        problems.append(f"[web] users file: {problem}")
    problem = tokens_file_problem(config.tokens_path())
    if problem is not None:
        problems.append(f"[web] API tokens file: {problem}")
    return problems


def _status(result: CheckResult) -> str:
    """ok, warn or fail: a check that cannot tell is a warning here."""
    return WARN if result.status == UNKNOWN else result.status


def render_lines(results: list[CheckResult]) -> str:
    """One line per check: status, name, finding and (unless OK) what to do."""
    lines = []
    for r in results:
        status = _status(r)
        line = f"{status.upper():<4}  {r.name}: {r.finding}"
        if r.advice and status != OK:
            line += f" What to do: {r.advice}"
        lines.append(line)
    counts = {s: sum(1 for r in results if _status(r) == s) for s in (OK, WARN, FAIL)}
    lines.append(f"{counts[OK]} ok, {counts[WARN]} warning(s), {counts[FAIL]} failed")
    return "\n".join(lines) + "\n"


def render_json(results: list[CheckResult]) -> str:
    """The same lines as a JSON list of objects."""
    items: list[dict[str, Any]] = [
        {"name": r.name, "status": _status(r), "finding": r.finding, "advice": r.advice}
        for r in results
    ]
    return json.dumps(items, indent=2) + "\n"


def _run(path: Path, *, connect: bool, as_json: bool) -> tuple[int, list[CheckResult]]:
    """The checks of the configuration at ``path``: (exit code, results)."""
    from gateway.status.checks.run import box_checks, connect_checks  # pynetdicom, aiomqtt

    try:
        config = load_config(path, service=True)
    except ConfigError as err:
        for problem in err.problems:
            print(problem, file=sys.stderr)
        return EXIT_USAGE, []
    problems = config_problems(config)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        return EXIT_USAGE, []
    results = [
        CheckResult(
            f"Configuration ({path})",
            OK,
            f"Valid: gateway {config.gateway.id}, {len(config.destinations)} "
            f"destination(s), {len(config.devices)} device(s).",
        )
    ]
    results += box_checks(config)
    if connect:
        results += connect_checks(config)
    sys.stdout.write(render_json(results) if as_json else render_lines(results))
    return (EXIT_FAILURE if any(r.status == FAIL for r in results) else EXIT_OK), results


def cmd_check(args: argparse.Namespace) -> int:
    """``dermgate check``: 0 nothing failed, 1 a check failed, 2 unusable configuration."""
    code, _ = _run(args.config, connect=args.connect, as_json=args.json)
    return code


def cmd_check_config(args: argparse.Namespace) -> int:
    """``dermgate check-config FILE``: the checks of ``check``; 0, or 2 if unusable."""
    code, _ = _run(args.file, connect=False, as_json=args.json)
    return EXIT_USAGE if code == EXIT_USAGE else EXIT_OK


def add_check_commands(sub: Any) -> None:
    """Register ``check`` and its alias ``check-config`` on the ``dermgate`` parser."""
    check = sub.add_parser(
        "check",
        help="check the configuration and the box (--connect: and every peer)",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument("--config", type=Path, required=True, help="configuration file (TOML)")
    check.add_argument(
        "--connect",
        action="store_true",
        help="also C-ECHO each PACS and the worklist SCP, query each DICOMweb store, "
        "and try our commitment listener and the MQTT broker",
    )
    check.add_argument("--json", action="store_true", help="a JSON list instead of lines")
    check.set_defaults(func=cmd_check)

    alias = sub.add_parser(
        "check-config", help="check the configuration and the box (check without --connect)"
    )
    alias.add_argument("file", type=Path)
    alias.add_argument("--json", action="store_true", help="a JSON list instead of lines")
    alias.set_defaults(func=cmd_check_config)
