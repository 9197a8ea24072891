"""A 3D total-body scanner workstation, simulated by writing exports into a folder.

Run as ``dermgate simulate scanner-export --folder DIR`` (or ``python -m
drivers.scanner_export.simulator``). Each scan becomes a sub-folder of DIR holding
a body-shaped OBJ mesh (``--mesh-mb`` MB, vertices, normals, UVs, two materials),
its MTL and two JPEG textures, or with ``--stl`` a binary STL; ``manifest.json``
(:mod:`.manifest`) is written last, listing every file with size and SHA-256.
Files are written in place, in 1 MiB pieces, as a workstation or a copy to a
USB disk does, so the gateway sees half-written exports.

When a patient is given (``--patient-name`` …) the export folder and its files
are named after the patient, as scanner software does: the gateway must not let
those names leak into logs or listings.

The simulator exits 0 once every export it wrote is in ``DIR/.processed/`` (and
the ``--garbage`` entry in ``DIR/.refused/``), 1 on ``--timeout``. ``--report``
keeps ``{"acknowledged": [...], "refused": [{"id", "reason"}], "offered": N,
"exports": {name: manifest SHA-256}}`` up to date. Faults: ``--unplug-mid-transfer``
(the first export appears partly, vanishes, and is copied again completely),
``--garbage`` (a junk file beside the exports, to be refused), ``--reoffer`` (each
processed export is copied in again, identical, once).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import random
import shutil
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from drivers.scanner_export.bodymesh import (
    grid_for,
    make_texture_jpeg,
    write_mtl,
    write_obj,
    write_stl,
)
from drivers.scanner_export.manifest import FORMAT, MANIFEST_NAME
from gateway.driver_api import add_lesion_options, run_simulator, write_report

__all__ = ["main"]

log = logging.getLogger("dermgate.simulate.scanner_export")

MANUFACTURER = "DermGate Reference Devices"
MODEL = "TB-3D Total Body Scanner"
SOFTWARE = "TBScan 4.2.0"
_PIECE = 1 << 20


@dataclass(slots=True)
class SimExport:
    """One export the simulated workstation wrote, and what became of it."""

    name: str
    key: str
    processed_copies: int = 0
    wanted_copies: int = 1
    refused_reason: str | None = None


class Workstation:
    """Writes exports and watches the folder for the gateway's answers."""

    def __init__(self, args: argparse.Namespace) -> None:
        """Set up from the parsed command line."""
        self.args = args
        self.folder = Path(args.folder)
        self.rng = random.Random(args.seed)
        self.serial = args.serial or f"TB3D-{self.rng.randrange(10**6):06d}"
        self.report_path = Path(args.report) if args.report else None
        self.exports: list[SimExport] = []
        self.junk: SimExport | None = None
        self.offered = 0
        self.stop = False
        self._last_report: dict[str, Any] | None = None

    # -- writing exports ---------------------------------------------------------

    def _base_name(self, index: int) -> str:
        if self.args.patient_name:
            parts = [p for p in self.args.patient_name.replace("=", "^").split("^") if p]
            stem = "_".join(parts[:2]) or "scan"
            return f"{stem}_{index + 1:03d}"
        return f"scan-{self.args.seed:04d}-{index + 1:03d}"

    def _patient(self, index: int) -> dict[str, str] | None:
        args = self.args
        if args.no_patient:
            return None
        if args.patient_name or args.patient_id or args.birth_date:
            return {
                "name": args.patient_name or "",
                "id": args.patient_id or "",
                "birth_date": args.birth_date or "",
                "sex": args.sex or "",
            }
        rng = random.Random(self.args.seed * 1000 + index)
        family = rng.choice(("Okafor", "Lindqvist", "Moreau", "Tanaka", "Novak"))
        given = rng.choice(("Ada", "Erik", "Lea", "Ken", "Mira"))
        return {
            "name": f"{family}^{given}",
            "id": f"SIM{rng.randrange(10**6):06d}",
            "birth_date": f"{rng.randrange(1940, 2005)}"
            f"{rng.randrange(1, 13):02d}{rng.randrange(1, 29):02d}",
            "sex": rng.choice("MFO"),
        }

    def write_export(self, index: int, partial: bool = False) -> SimExport:
        """Write export ``index`` (``partial``: stop half-way, no manifest)."""
        name = self._base_name(index)
        root = self.folder / name
        root.mkdir(parents=True, exist_ok=True)
        stem = name
        files: list[dict[str, Any]] = []
        target = int(self.args.mesh_mb * 1_000_000)
        rings, segments = grid_for(target)
        if self.args.stl:
            # STL is ~3.6x smaller per grid point than the textured OBJ.
            rings, segments = grid_for(int(target * 1.9))
            tmp = root / f"{stem}.stl"
            with tmp.open("wb") as out:
                write_stl(out, rings, segments)
            files.append(self._entry(tmp, root))
            mesh = tmp
        else:
            front, back = f"{stem}_front.jpg", f"{stem}_back.jpg"
            for texture, is_back in ((front, False), (back, True)):
                path = root / texture
                self._write_slowly(path, make_texture_jpeg(self.args.seed + index, back=is_back))
                files.append(self._entry(path, root))
            mtl = root / f"{stem}.mtl"
            with mtl.open("wb") as out:
                write_mtl(out, front, back)
            files.append(self._entry(mtl, root))
            obj = root / f"{stem}.obj"
            with obj.open("wb") as out:
                write_obj(out, mtl.name, rings, segments)
            files.append(self._entry(obj, root))
            mesh = obj
        if partial:
            with mesh.open("r+b") as out:
                out.truncate(mesh.stat().st_size // 2)
            return SimExport(name, "")
        scanner = {
            "manufacturer": MANUFACTURER,
            "model": MODEL,
            "serial": self.serial,
            "software": SOFTWARE,
        }
        manifest: dict[str, Any] = {
            "format": FORMAT,
            "scanner": scanner,
            "scan_time": datetime.now().astimezone().replace(microsecond=0).isoformat(),
            "operator": "Sim^Operator",
            "units": "mm",
            "files": files,
        }
        patient = self._patient(index)
        if patient is not None:
            manifest["patient"] = patient
        for key in ("anatomic_site", "laterality", "lesion_id"):
            if getattr(self.args, key) is not None:
                manifest[key] = getattr(self.args, key)
        data = (json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
        (root / MANIFEST_NAME).write_bytes(data)
        self.offered += 1
        return SimExport(name, hashlib.sha256(data).hexdigest())

    @staticmethod
    def _write_slowly(path: Path, data: bytes) -> None:
        with path.open("wb") as out:
            for start in range(0, len(data), _PIECE):
                out.write(data[start : start + _PIECE])
                out.flush()

    @staticmethod
    def _entry(path: Path, root: Path) -> dict[str, Any]:
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            while chunk := fh.read(_PIECE):
                digest.update(chunk)
        return {
            "name": path.relative_to(root).as_posix(),
            "size": path.stat().st_size,
            "sha256": digest.hexdigest(),
        }

    def write_junk(self) -> None:
        """A stray non-export file the gateway must refuse with a reason."""
        name = f"junk-{self.args.seed:04d}.bin"
        (self.folder / name).write_bytes(random.Random(self.args.seed).randbytes(4096))
        self.junk = SimExport(name, "")
        self.offered += 1

    # -- watching answers --------------------------------------------------------

    def _poll(self) -> None:
        processed = self.folder / ".processed"
        refused = self.folder / ".refused"
        for export in self.exports:
            copies = 0
            for n in range(1, export.wanted_copies + 1):
                suffix = "" if n == 1 else f".{n}"
                if (processed / f"{export.name}{suffix}").exists():
                    copies += 1
            export.processed_copies = copies
            reason = refused / f"{export.name}.reason.txt"
            if export.refused_reason is None and reason.exists():
                export.refused_reason = reason.read_text(encoding="utf-8").strip()
            if (
                self.args.reoffer
                and export.wanted_copies == 1
                and copies == 1
                and not (self.folder / export.name).exists()
            ):
                self._copy_again(export)
        if self.junk is not None and self.junk.refused_reason is None:
            reason = refused / f"{self.junk.name}.reason.txt"
            if reason.exists():
                self.junk.refused_reason = reason.read_text(encoding="utf-8").strip()

    def _copy_again(self, export: SimExport) -> None:
        """Copy a processed export in again, identical (a technician re-exporting it)."""
        source = self.folder / ".processed" / export.name
        tmp = self.folder / f".{export.name}.copy"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(source, tmp)
        os.rename(tmp, self.folder / export.name)
        export.wanted_copies = 2
        self.offered += 1
        log.info("copied %s in again", export.name)

    def _done(self) -> bool:
        exports_done = all(
            e.processed_copies >= e.wanted_copies or e.refused_reason is not None
            for e in self.exports
        )
        junk_done = self.junk is None or self.junk.refused_reason is not None
        reoffers_pending = self.args.reoffer and any(
            e.wanted_copies == 1 and e.refused_reason is None for e in self.exports
        )
        return exports_done and junk_done and not reoffers_pending

    def report(self) -> dict[str, Any]:
        """The kit report."""
        acknowledged = [e.name for e in self.exports if e.processed_copies >= e.wanted_copies]
        refused = [
            {"id": e.name, "reason": e.refused_reason}
            for e in [*self.exports, *([self.junk] if self.junk else [])]
            if e.refused_reason is not None
        ]
        return {
            "acknowledged": acknowledged,
            "refused": refused,
            "offered": self.offered,
            "exports": {e.name: e.key for e in self.exports},
        }

    def write_report(self) -> None:
        """Rewrite the report atomically if it changed."""
        if self.report_path is None:
            return
        report = self.report()
        if report == self._last_report:
            return
        write_report(self.report_path, report)
        self._last_report = report

    def run(self) -> int:
        """Write the scans, then wait for the gateway; 0 when all are answered."""
        started = time.monotonic()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.write_report()
        for index in range(self.args.scans):
            if self.stop:
                return 1
            if index == 0 and self.args.unplug_mid_transfer:
                partial = self.write_export(index, partial=True)
                time.sleep(self.args.unplug_pause)
                shutil.rmtree(self.folder / partial.name, ignore_errors=True)
                log.info("unplugged during the copy of %s; copying again", partial.name)
            export = self.write_export(index)
            self.exports.append(export)
            log.info("wrote export %s", export.name)
            self.write_report()
            if index + 1 < self.args.scans:
                time.sleep(self.args.interval)
        if self.args.garbage:
            self.write_junk()
        while not self.stop:
            self._poll()
            self.write_report()
            if self._done():
                return 0
            if time.monotonic() - started > self.args.timeout:
                log.warning("timeout after %.0f s", self.args.timeout)
                return 1
            time.sleep(0.2)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dermgate simulate scanner-export",
        description="Simulate a 3D total-body scanner exporting into a folder.",
    )
    parser.add_argument("--folder", required=True, help="the watched export folder")
    parser.add_argument("--scans", type=int, default=1, help="exports to write (default 1)")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between exports")
    parser.add_argument("--mesh-mb", type=float, default=30.0, help="OBJ size in MB (default 30)")
    parser.add_argument("--stl", action="store_true", help="untextured STL exports")
    parser.add_argument("--patient-name", help="DICOM PN, e.g. Doe^Jane (default: generated)")
    parser.add_argument("--patient-id", help="patient id (default: generated)")
    parser.add_argument("--birth-date", help="YYYYMMDD (default: generated)")
    parser.add_argument("--sex", help="M, F or O")
    parser.add_argument("--no-patient", action="store_true", help="manifest without patient")
    parser.add_argument("--serial", help="scanner serial number (default derived from --seed)")
    parser.add_argument("--report", help="write a JSON report here")
    parser.add_argument("--seed", type=int, default=0, help="content seed")
    parser.add_argument("--timeout", type=float, default=300.0, help="give up (exit 1) after this")
    parser.add_argument(
        "--unplug-mid-transfer",
        action="store_true",
        help="the first export appears partly, vanishes, then is copied again completely",
    )
    parser.add_argument("--unplug-pause", type=float, default=1.0, help=argparse.SUPPRESS)
    parser.add_argument("--garbage", action="store_true", help="also drop a junk file")
    parser.add_argument(
        "--reoffer", action="store_true", help="copy each processed export in again, once"
    )
    add_lesion_options(parser, "lesion (in every export's manifest)", checked=False)
    parser.add_argument("-v", "--verbose", action="store_true", help="log what is written")
    return parser


def main(argv: list[str]) -> int:
    """Entry point of ``dermgate simulate scanner-export``."""
    args = _parser().parse_args(argv)
    station = Workstation(args)
    try:
        return run_simulator(station, verbose=False, quiet=not args.verbose)
    finally:
        station.write_report()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
