"""``dermgate conformance DRIVER``: the kit's battery against an installed driver.

The driver is found as the gateway finds it (the ``dermgate.drivers`` entry points),
and its ``conformance`` hook says how to drive its simulator
(:mod:`gateway.devices.simulator_hook`). Each check runs in its own folder with a
fresh private Orthanc as the PACS; a failed check's folder (logs, ledger, the
simulator's report) is kept and named.

Exit codes: 0 every check passed; 1 a check failed (each failing check is listed
with its reason); 2 bad usage: an unknown or broken driver, or one with no simulator
hook.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from gateway.conformance.checks import CHECKS
from gateway.conformance.harness import conformance_run
from gateway.conformance.peers import CheckFailed
from gateway.devices.registry import UnknownDriver, find_driver
from gateway.devices.simulator_hook import HookError, SimulatorAdapter, load_adapter

__all__ = ["add_conformance_command", "cmd_conformance", "run_conformance"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


def add_conformance_command(sub: Any) -> None:
    """Add ``conformance`` to the ``dermgate`` sub-commands (``sub`` from
    ``add_subparsers``)."""
    parser = sub.add_parser(
        "conformance",
        help="run the driver conformance kit against an installed driver and its simulator",
        description=(
            f"Run the conformance kit's checks ({', '.join(CHECKS)}) against the "
            "installed driver DRIVER: its own simulator as the device, `dermgate run` as "
            "the gateway, a private Orthanc as the PACS (a fresh one per check). Exit 0 "
            "when every check passes, 1 listing the failing ones, 2 for an unknown driver "
            "or one without a simulator hook."
        ),
    )
    parser.add_argument("driver", help="driver id, e.g. serial-dermatoscope")
    parser.add_argument(
        "--check",
        action="append",
        choices=list(CHECKS),
        metavar="NAME",
        help=f"run only this check (repeatable; default all: {', '.join(CHECKS)})",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        metavar="DIR",
        help="keep every check's logs and state here (default: a temporary folder, "
        "removed when all checks pass)",
    )
    parser.set_defaults(func=cmd_conformance)


def cmd_conformance(args: argparse.Namespace) -> int:
    """Run the battery (or the chosen checks) against driver ``args.driver``."""
    try:
        adapter = load_adapter(find_driver(args.driver))
    except (UnknownDriver, HookError) as err:
        print(f"dermgate conformance: {err}", file=sys.stderr)
        return EXIT_USAGE
    names = list(dict.fromkeys(args.check)) if args.check else list(CHECKS)
    if args.workdir is not None and (problem := _unusable_workdir(args.workdir)) is not None:
        print(f"dermgate conformance: --workdir {args.workdir}: {problem}", file=sys.stderr)
        return EXIT_USAGE
    return run_conformance(args.driver, adapter, names, workdir=args.workdir)


def _unusable_workdir(folder: Path) -> str | None:
    """Why the checks cannot run in ``folder`` (created if missing), or None.

    Each run needs a fresh folder: a check started beside an earlier run's ledger and
    spool would judge what that run left behind.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if any(folder.iterdir()):
            return "not empty (each run needs a new or empty folder)"
    except (NotADirectoryError, FileExistsError):  # a file where the folder should be
        return "not a folder"
    except OSError as err:
        return f"cannot use it: {err.strerror or err}"
    return None


def run_conformance(
    driver: str,
    adapter: SimulatorAdapter,
    names: Sequence[str],
    *,
    workdir: Path | None = None,
    out: TextIO | None = None,
) -> int:
    """Run the checks ``names`` one after the other; print one line each and a verdict.

    Returns 0 when all passed, else 1. Without ``workdir`` the checks run in a
    temporary folder that is removed when all passed (kept, and named, otherwise).
    """
    out = out or sys.stdout
    root = workdir or Path(tempfile.mkdtemp(prefix=f"dermgate-conformance-{driver}-"))
    print(f"dermgate conformance {driver}: {len(names)} check(s) in {root}", file=out, flush=True)
    failed: list[str] = []
    started = time.monotonic()
    for name in names:
        began = time.monotonic()
        problem = _run_check(driver, adapter, name, root / name)
        took = time.monotonic() - began
        if problem is None:
            print(f"  {name:<8} PASS  {took:6.1f} s", file=out, flush=True)
            continue
        failed.append(name)
        (root / name / "failure.txt").write_text(problem + "\n", encoding="utf-8")
        first = problem.strip().splitlines()[0] if problem.strip() else "failed"
        print(f"  {name:<8} FAIL  {took:6.1f} s  {first}", file=out, flush=True)
        print(f"           (details: {root / name / 'failure.txt'})", file=out, flush=True)
    total = time.monotonic() - started
    if failed:
        print(
            f"FAILED {len(failed)} of {len(names)} check(s): {', '.join(failed)} "
            f"({total:.0f} s; logs kept in {root})",
            file=out,
        )
        return EXIT_FAILURE
    print(f"PASSED all {len(names)} check(s) ({total:.0f} s)", file=out)
    if workdir is None:
        shutil.rmtree(root, ignore_errors=True)
    return EXIT_OK


def _run_check(driver: str, adapter: SimulatorAdapter, name: str, folder: Path) -> str | None:
    """Run one check in ``folder``: None if it passed, else why it failed."""
    try:
        with conformance_run(driver, adapter, folder) as run:
            CHECKS[name](run)
    except CheckFailed as failure:
        return str(failure)
    except Exception:  # a broken simulator or peer fails the check, never the kit
        return "the check raised an exception:\n" + traceback.format_exc()
    return None
