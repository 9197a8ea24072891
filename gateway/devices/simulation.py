"""What every device simulator shares: running until done or stopped, and its report.

A simulator (``dermgate simulate DRIVER …``) is the device side of a driver's
protocol, used by the tests, the conformance kit and the demo. Each one keeps a
``stop`` flag that SIGTERM and SIGINT set, returns its exit code from ``run()`` (0 once
everything it produced was acknowledged), and keeps a JSON report that it rewrites
atomically, so a reader never sees half of it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

__all__ = ["Simulator", "run_simulator", "write_report"]


class Simulator(Protocol):
    """A simulated device: ``run`` until done (0) or ``stop`` is set."""

    stop: bool

    def run(self) -> int:
        """Serve until everything was acknowledged, a timeout, or ``stop``."""


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
