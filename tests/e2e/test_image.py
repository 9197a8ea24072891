"""The box's systemd unit passes systemd's own checker (``systemd-analyze verify``).

The other checks of ``image/`` read the files only: ``tests/unit/test_image.py``.
"""

from __future__ import annotations

import re
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
    assert "/opt/dermgate/current/venv/bin/dermgate" in text
    unit.write_text(text.replace("/opt/dermgate/current/venv/bin/dermgate", str(dermgate)))
    result = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )
    problems = [line for line in result.stderr.splitlines() if "dermgate.service" in line]
    assert not problems, result.stderr
    assert result.returncode == 0, result.stderr


#: The highest exposure ``systemd-analyze security`` may give the unit ("OK" is ≤ 2.0 on
#: its scale of 0 "perfect" to 10 "UNSAFE").
MAX_EXPOSURE = 2.0


def test_unit_file_is_hardened_to_ok_in_systemd_analyze_security() -> None:
    """Exposure ≤ 2.0: no capabilities, a system-call filter, no kernel tunables, …

    ``--offline=yes`` scores the unit file itself (nothing needs to run), as on the box.
    """
    analyze = shutil.which("systemd-analyze")
    assert analyze is not None, "systemd-analyze is missing: run scripts/setup.sh --test"
    result = subprocess.run(
        [analyze, "security", "--offline=yes", "--no-pager", str(IMAGE / "dermgate.service")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    found = re.search(r"Overall exposure level for dermgate\.service: ([0-9.]+)", result.stdout)
    assert found is not None, result.stdout + result.stderr
    exposure = float(found.group(1))
    assert exposure <= MAX_EXPOSURE, result.stdout
    # The settings the box depends on, which a lower score alone would not keep.
    text = (IMAGE / "dermgate.service").read_text(encoding="utf-8")
    for line in (
        "Type=notify",
        "WatchdogSec=30",
        "CapabilityBoundingSet=",
        "DevicePolicy=closed",
        "DeviceAllow=char-ttyUSB rw",
        "DeviceAllow=char-usb_device rw",
        "After=network-online.target time-sync.target",
    ):
        assert line in text.splitlines(), line
    assert "PrivateDevices=yes" not in text  # it would hide /dev/ttyUSB* and /dev/bus/usb
