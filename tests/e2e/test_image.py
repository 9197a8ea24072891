"""The box's systemd unit passes systemd's own checker (``systemd-analyze verify``).

The other checks of ``image/`` read the files only: ``tests/unit/test_image.py``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.support.paths import REPO_ROOT

IMAGE = REPO_ROOT / "image"


def test_unit_file_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    """No unknown keys, no bad values: systemd would run it as written.

    The box's install path of ``dermgate`` is replaced by this venv's, the only
    difference from the installed unit.
    """
    analyze = shutil.which("systemd-analyze")
    assert analyze is not None, "systemd-analyze is missing: run scripts/setup.sh --test"
    dermgate = Path(sys.executable).parent / "dermgate"
    assert dermgate.exists(), f"{dermgate} missing: the project is not installed in the venv"
    unit = tmp_path / "dermgate.service"
    text = (IMAGE / "dermgate.service").read_text(encoding="utf-8")
    assert "/opt/dermgate/venv/bin/dermgate" in text
    unit.write_text(text.replace("/opt/dermgate/venv/bin/dermgate", str(dermgate)))
    result = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )
    problems = [line for line in result.stderr.splitlines() if "dermgate.service" in line]
    assert not problems, result.stderr
    assert result.returncode == 0, result.stderr
