"""What every device simulator shares: running until done or stopped, and its report.

A simulator (``dermgate simulate DRIVER …``) is the device side of a driver's
protocol, used by the tests, the conformance kit and the demo. Each one keeps a
``stop`` flag that SIGTERM and SIGINT set, returns its exit code from ``run()`` (0 once
everything it produced was acknowledged), and keeps a JSON report that it rewrites
atomically, so a reader never sees half of it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

__all__ = ["Simulator", "add_lesion_options", "run_simulator", "write_report"]


class Simulator(Protocol):
    """A simulated device: ``run`` until done (0) or ``stop`` is set."""

    stop: bool

    def run(self) -> int:
        """Serve until everything was acknowledged, a timeout, or ``stop``."""


def _lesion_id(text: str) -> str:
    """A lesion label a device protocol carries: 1 to 64 printable characters."""
    if not 0 < len(text) <= 64 or not text.isprintable():
        raise argparse.ArgumentTypeError("a lesion id is 1 to 64 printable characters")
    return text


def _site_code(text: str) -> str:
    """A SNOMED CT code value (``SCT:`` prefix optional), as a device protocol carries it."""
    value = text.strip()
    if value.upper().startswith("SCT:"):
        value = value[4:]
    if not (value.isascii() and value.isdigit() and 6 <= len(value) <= 18):
        raise argparse.ArgumentTypeError("an anatomic site is a SNOMED CT code value")
    return value


def add_lesion_options(
    parser: argparse.ArgumentParser, title: str, *, checked: bool = True
) -> None:
    """Every simulator's ``--lesion-id ID``, ``--anatomic-site CODE`` and
    ``--laterality R|L|B|U``, applied to every capture it offers (tests and the demo
    drive lesion tracking with them), in a group named ``title``. ``checked``: the
    values are what the device's protocol can carry (a label of 1-64 printable
    characters, a bare SNOMED CT code value); a file-based device's simulator passes
    False to write whatever it is given, as a real export may."""
    group = parser.add_argument_group(title)
    group.add_argument(
        "--lesion-id",
        type=_lesion_id if checked else str,
        metavar="ID",
        help="the device's lesion label (Tracking ID)",
    )
    group.add_argument(
        "--anatomic-site",
        type=_site_code if checked else str,
        metavar="CODE",
        help="CID 4029 SNOMED CT code value, bare or as SCT:CODE (e.g. SCT:66643007)",
    )
    group.add_argument("--laterality", choices=("R", "L", "B", "U"), help="side of the lesion")


def run_simulator(simulator: Simulator, *, verbose: bool, quiet: bool = False) -> int:
    """Log to stderr, let SIGTERM/SIGINT stop ``simulator``, run it; its exit code.

    ``verbose`` logs debug lines; ``quiet`` only warnings (for chatty simulators).
    """
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(
        level=level, format="%(asctime)s simulator %(levelname)s %(message)s", stream=sys.stderr
    )

    def _stop(signum: int, _frame: FrameType | None) -> None:
        simulator.stop = True

    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        return simulator.run()
    finally:
        for sig, handler in previous.items():
            with contextlib.suppress(ValueError):
                signal.signal(sig, handler)


def write_report(path: Path, report: dict[str, Any]) -> str:
    """Write ``report`` as JSON to ``path`` atomically; return the text written."""
    text = json.dumps(report, indent=2, ensure_ascii=False) + "\n"
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return text
