"""``dermgate demo --captures N``: the embedded default, exactly as a newcomer runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from gateway.local_orthanc import OrthancProcess


def test_demo_delivers_captures_and_cleans_up(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway.cli",
            "demo",
            "--workdir",
            str(workdir),
            "--captures",
            "3",
            "--timeout",
            "180",
        ],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Orthanc Explorer" in result.stdout
    assert "3 captures in Orthanc" in result.stdout
    assert not (workdir / "ttyDERM0").exists(), "the simulator is gone"
    # Orthanc was stopped: its storage can be opened by a fresh server and holds the 3.
    again = OrthancProcess(workdir / "orthanc")
    again.start()
    try:
        assert again.count_instances() == 3
    finally:
        again.stop()
