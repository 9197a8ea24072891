"""``dermgate demo --captures N``: the embedded default, exactly as a newcomer runs it.

All four simulated devices (serial dermatoscope, USB confocal microscope, 3D scanner
export folder, camera photo folder) deliver through one gateway into one Orthanc.
"""

from __future__ import annotations

import re
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
            "2",
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
    summary = re.search(
        r"2 captures of each of 4 devices in Orthanc \((\d+) DICOM objects\)", result.stdout
    )
    assert summary, result.stdout[-2000:]
    objects = int(summary.group(1))
    assert not (workdir / "ttyDERM0").exists(), "the simulator is gone"
    # Orthanc was stopped: its storage can be opened by a fresh server and holds every
    # object, of every device class.
    again = OrthancProcess(workdir / "orthanc")
    again.start()
    try:
        assert again.count_instances() == objects
        classes = {
            bytes(again.rest("GET", f"/instances/{oid}/metadata/SopClassUid")).decode()
            for oid in again.rest("GET", "/instances")
        }
    finally:
        again.stop()
    assert {
        "1.2.840.10008.5.1.4.1.1.77.1.7",  # Dermoscopic Photography
        "1.2.840.10008.5.1.4.1.1.77.1.4",  # VL Photographic (photos, 3D textures)
        "1.2.840.10008.5.1.4.1.1.104.4",  # Encapsulated OBJ
        "1.2.840.10008.5.1.4.1.1.104.5",  # Encapsulated MTL
    } <= classes
    assert classes & {"1.2.840.10008.5.1.4.1.1.77.1.8", "1.2.840.10008.5.1.4.1.1.77.1.9"}
