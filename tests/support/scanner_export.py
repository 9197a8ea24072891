"""Helpers for the scanner-export tests: small exports written as real folders.

Exports are built here byte by byte (a tiny textured OBJ, its MTL, JPEG textures
made by Pillow, ``manifest.json`` last), so a test can damage exactly one thing.
The simulator (``dermgate simulate scanner-export``) writes the realistic ones.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
from PIL import Image

from gateway.demo.local_orthanc import OrthancProcess

OBJ_SOP = "1.2.840.10008.5.1.4.1.1.104.4"
MTL_SOP = "1.2.840.10008.5.1.4.1.1.104.5"
STL_SOP = "1.2.840.10008.5.1.4.1.1.104.3"
VL_PHOTO_SOP = "1.2.840.10008.5.1.4.1.1.77.1.4"

SCANNER = {
    "manufacturer": "DermGate Reference Devices",
    "model": "TB-3D Total Body Scanner",
    "serial": "TB3D-TEST01",
    "software": "TBScan 4.2.0",
}

OBJ_TEXT = (
    b"# tiny test mesh\n"
    b"mtllib body.mtl\n"
    b"v 0 0 0\nv 100 0 0\nv 0 100 0\nv 100 100 0\n"
    b"vt 0 0\nvt 1 0\nvt 0 1\nvt 1 1\n"
    b"vn 0 0 1\n"
    b"usemtl skin\n"
    b"f 1/1/1 2/2/1 3/3/1\n"
    b"f 2/2/1 4/4/1 3/3/1\n"
)
MTL_TEXT = b"newmtl skin\nKa 1 1 1\nKd 1 1 1\nNs 10\nd 1\nillum 1\nmap_Kd skin.jpg\n"
STL_TEXT = (
    b"solid tiny\n facet normal 0 0 1\n  outer loop\n   vertex 0 0 0\n   vertex 1 0 0\n"
    b"   vertex 0 1 0\n  endloop\n endfacet\nendsolid tiny\n"
)


def texture_jpeg(seed: int = 0, side: int = 64) -> bytes:
    """A small 4:2:0 baseline JPEG."""
    image = Image.new("RGB", (side, side), (200 + seed % 40, 160, 140))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90, subsampling="4:2:0")
    return out.getvalue()


def manifest_for(
    files: dict[str, bytes],
    *,
    patient: dict[str, Any] | None = None,
    listed: bool = True,
    scanner: dict[str, str] | None = None,
    **extra: Any,
) -> bytes:
    """A manifest listing ``files`` with size and SHA-256 (``listed=False``: no list)."""
    manifest: dict[str, Any] = {
        "format": "dermgate-scanner-export/1",
        "scanner": scanner or SCANNER,
        "scan_time": "2026-11-30T10:15:00+01:00",
        "operator": "Op^Erator",
        "units": "mm",
        **extra,
    }
    if patient is not None:
        manifest["patient"] = patient
    if listed:
        manifest["files"] = [
            {"name": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
            for name, data in files.items()
        ]
    return json.dumps(manifest, ensure_ascii=False, indent=1).encode("utf-8")


def textured_files(seed: int = 0) -> dict[str, bytes]:
    """OBJ + MTL + one JPEG texture."""
    return {"body.obj": OBJ_TEXT, "body.mtl": MTL_TEXT, "skin.jpg": texture_jpeg(seed)}


def write_export(
    folder: Path,
    name: str,
    files: dict[str, bytes],
    manifest: bytes | None = None,
    **manifest_args: Any,
) -> Path:
    """Write an export folder: the files first, the manifest last."""
    root = folder / name
    root.mkdir(parents=True)
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    if manifest is None:
        manifest = manifest_for(files, **manifest_args)
    (root / "manifest.json").write_bytes(manifest)
    return root


def devices_toml(folder: Path, *, incomplete_timeout: float = 3600.0) -> str:
    """A ``[[devices]]`` section for the scanner-export driver, with fast timings."""
    return f"""
[[devices]]
driver = "scanner-export"
name = "scanner"
folder = "{folder}"
settle_seconds = 0.5
poll_interval = 0.2
incomplete_timeout = {incomplete_timeout}
retry_interval = 1.0
"""


@dataclass
class Simulator:
    """``dermgate simulate scanner-export`` as a child process."""

    proc: subprocess.Popen[bytes]
    report: Path

    def wait(self, timeout: float) -> int:
        """Wait for the simulator; return its exit code."""
        return self.proc.wait(timeout)

    def result(self) -> dict[str, Any]:
        """Its JSON report."""
        data: dict[str, Any] = json.loads(self.report.read_text(encoding="utf-8"))
        return data

    def close(self) -> None:
        """Stop it if it still runs."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def start_simulator(folder: Path, report: Path, *args: str) -> Simulator:
    """Start the simulator writing into ``folder``."""
    cmd = [
        sys.executable,
        "-m",
        "gateway.cli",
        "simulate",
        "scanner-export",
        "--folder",
        str(folder),
        "--report",
        str(report),
        "--timeout",
        "240",
        *args,
    ]
    return Simulator(subprocess.Popen(cmd), report)


def study_instances(orthanc: OrthancProcess, study_uid: str) -> list[str]:
    """Orthanc ids of every instance of a study."""
    found = orthanc.rest(
        "POST",
        "/tools/find",
        {"Level": "Instance", "Query": {"StudyInstanceUID": study_uid}},
    )
    return [str(i) for i in found]


def stored_datasets(
    orthanc: OrthancProcess, ids: list[str], into: Path
) -> Iterator[tuple[Path, pydicom.Dataset]]:
    """Download instances into ``into``; yield (file, dataset)."""
    into.mkdir(parents=True, exist_ok=True)
    for orthanc_id in ids:
        path = into / f"{orthanc_id}.dcm"
        path.write_bytes(orthanc.instance_file(orthanc_id))
        yield path, pydicom.dcmread(path)


def spool_listing(config: Path) -> str:
    """``dermgate spool list --json`` output."""
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "spool", "list", "--json", "--config", str(config)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
