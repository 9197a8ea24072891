"""A clinical camera simulated at its "wire": files written into a drop folder.

Run as ``dermgate simulate photo-folder --folder DIR [--photos N] [--report FILE]``.
It writes realistic photos (a few megapixels, 4:2:0 JPEG with EXIF Make, Model,
BodySerialNumber, Software, DateTimeOriginal and OffsetTimeOriginal, lens and
exposure) the way a card copy does: to a ``.name.tmp`` file, then renamed into
place. It exits 0 once every photo it wrote is in ``DIR/.processed/`` (and every
entry it meant to be refused is in ``DIR/.refused/``), 1 on timeout.

Fault injection (the conformance kit's flags, plus content faults):

* ``--unplug-mid-transfer``: the first photo is written straight under its name,
  only partly; after ``--unplug-for`` seconds it is copied again completely (a
  card pulled and put back). The half file must never be sent.
* ``--garbage``: an extra junk entry (not an image) that must end in ``.refused/``.
* ``--reoffer``: once the first photo is processed, it is copied into the folder
  again with identical content: processed again, no second DICOM object.
* ``--fault corrupt|truncated|jpeg444|progressive`` (repeatable): an extra photo
  with that defect, which must end in ``.refused/`` with a reason.

The report (``--report FILE``, rewritten atomically) lists acknowledged photo
names, refused entries with the reason the gateway wrote, and the count offered.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import logging
import math
import os
import random
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final

from PIL import Image, ImageChops, ImageDraw, ImageFilter, TiffImagePlugin

from drivers.photo_folder.lesion_tag import format_lesion_tag
from gateway.driver_api import add_lesion_options, run_simulator, write_report

__all__ = ["main", "make_photo"]

log = logging.getLogger("dermgate.simulate.photo_folder")

MANUFACTURER: Final = "DermGate Reference Devices"
MODEL: Final = "CP-24 Clinical Camera"
SOFTWARE: Final = "CP-24 Firmware 1.3.0"
LENS_MAKE: Final = "DermGate Reference Devices"
LENS_MODEL: Final = "CP 35mm F2.8 Macro"
CONTENT_FAULTS: Final = ("corrupt", "truncated", "jpeg444", "progressive")
FORMATS: Final = ("jpeg", "tiff", "png")
PROCESSED: Final = ".processed"
REFUSED: Final = ".refused"
REASON_SUFFIX: Final = ".reason.txt"

_SKIN = ((233, 190, 160), (222, 170, 138), (205, 150, 118), (185, 128, 98), (150, 105, 80))
_BACKDROP = ((70, 90, 120), (200, 205, 210), (40, 60, 70))


def _local_offset() -> str:
    offset = datetime.now().astimezone().utcoffset() or timedelta(0)
    sign = "-" if offset < timedelta(0) else "+"
    minutes = abs(offset) // timedelta(minutes=1)
    return f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def camera_exif(
    serial: str, taken: datetime, seed: int, orientation: int = 1, description: str | None = None
) -> Image.Exif:
    """The EXIF a clinical camera writes (no owner, no GPS, no comments); with
    ``description``, an ImageDescription (a lesion tag: :mod:`.lesion_tag`)."""
    rng = random.Random(seed)
    exif = Image.Exif()
    if description is not None:
        exif[0x010E] = description
    exif[0x010F] = MANUFACTURER
    exif[0x0110] = MODEL
    exif[0x0112] = orientation
    exif[0x0131] = SOFTWARE
    exif[0x0132] = taken.strftime("%Y:%m:%d %H:%M:%S")
    ifd = exif.get_ifd(0x8769)
    rational = TiffImagePlugin.IFDRational
    ifd[0x9000] = b"0232"
    ifd[0x9003] = taken.strftime("%Y:%m:%d %H:%M:%S")
    ifd[0x9004] = taken.strftime("%Y:%m:%d %H:%M:%S")
    ifd[0x9011] = _local_offset()
    ifd[0x9291] = f"{taken.microsecond // 10000:02d}"
    ifd[0x829A] = rational(1, rng.choice((60, 125, 250)))
    ifd[0x829D] = rational(rng.choice((56, 80, 110)), 10)
    ifd[0x8827] = rng.choice((100, 200, 400))
    ifd[0x920A] = rational(35, 1)
    ifd[0xA405] = 52
    ifd[0xA431] = serial
    ifd[0xA432] = (rational(35, 1), rational(35, 1), rational(28, 10), rational(28, 10))
    ifd[0xA433] = LENS_MAKE
    ifd[0xA434] = LENS_MODEL
    return exif


def _picture(seed: int, width: int, height: int) -> Image.Image:
    """A clinical overview photo: backdrop, a body part in skin tone, a few lesions, grain."""
    rng = random.Random(seed)
    low = (max(16, width // 8), max(16, height // 8))
    image = Image.new("RGB", low, rng.choice(_BACKDROP))
    skin = rng.choice(_SKIN)
    draw = ImageDraw.Draw(image)
    cx, cy = low[0] * rng.uniform(0.4, 0.6), low[1] * rng.uniform(0.45, 0.6)
    rx, ry = low[0] * rng.uniform(0.25, 0.4), low[1] * rng.uniform(0.35, 0.5)
    draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=skin)
    for _ in range(rng.randrange(3, 9)):
        angle, dist = rng.uniform(0, math.tau), rng.uniform(0, 0.7)
        x, y = cx + rx * dist * math.cos(angle), cy + ry * dist * math.sin(angle)
        size = rng.uniform(0.4, 2.0)
        tone = tuple(max(0, c - rng.randrange(60, 110)) for c in skin)
        draw.ellipse((x - size, y - size, x + size, y + size), fill=tone)
    image = image.filter(ImageFilter.GaussianBlur(0.8)).resize(
        (width, height), Image.Resampling.BICUBIC
    )
    grain = Image.frombytes("L", (width, height), rng.randbytes(width * height))
    grain = grain.point(lambda v: 128 + (v - 128) // 16).convert("RGB")
    return ImageChops.add(image, grain, 1.0, -128)


def make_photo(
    seed: int,
    *,
    width: int = 3000,
    height: int = 2000,
    fmt: str = "jpeg",
    serial: str = "CP24-000001",
    taken: datetime | None = None,
    subsampling: int = 2,
    progressive: bool = False,
    orientation: int = 1,
    description: str | None = None,
) -> bytes:
    """One photo's file content (deterministic for a seed and time).

    ``orientation`` is EXIF Orientation: 6 is a camera held sideways (pixels stored
    unrotated, to be turned 90 degrees clockwise for display).
    """
    moment = taken or datetime(2026, 11, 30, 9, 0, 0)
    image = _picture(seed, width, height)
    exif = camera_exif(serial, moment, seed, orientation, description)
    out = io.BytesIO()
    if fmt == "jpeg":
        image.save(
            out,
            "JPEG",
            quality=92,
            subsampling=subsampling,
            progressive=progressive,
            exif=exif,
        )
    elif fmt == "png":
        image.save(out, "PNG", exif=exif, compress_level=1)
    else:
        image.save(out, "TIFF", exif=exif)
    return out.getvalue()


@dataclass(slots=True)
class Entry:
    """One file the simulator puts into the folder."""

    name: str
    content: bytes
    expect: str  # "processed" or "refused"
    copies: int = 1  # how many times it must appear in .processed
    written: bool = False

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of the content."""
        return hashlib.sha256(self.content).hexdigest()


class CameraSimulator:
    """Writes the planned entries and watches ``.processed`` / ``.refused``."""

    def __init__(self, args: argparse.Namespace) -> None:
        """Plan every entry from the command line."""
        self.args = args
        self.folder = Path(args.folder)
        self.report_path: Path | None = Path(args.report) if args.report else None
        self.rng = random.Random(args.seed)
        self.serial = f"CP24-{args.seed % 10**6:06d}"
        self.entries = self._plan()
        self.offered = 0
        self.stop = False
        self._hashes: dict[tuple[str, int, int], str] = {}
        self._last_report: dict[str, Any] | None = None

    def _plan(self) -> list[Entry]:
        args = self.args
        formats = args.format or ["jpeg"]
        clock = datetime.now().replace(microsecond=0) - timedelta(minutes=10)
        base = args.seed * 1000
        entries = []
        for k in range(args.photos):
            fmt = formats[k % len(formats)]
            suffix = {"jpeg": "JPG", "tiff": "TIF", "png": "PNG"}[fmt]
            taken = clock + timedelta(seconds=17 * k, microseconds=10000 * k)
            content = make_photo(
                base + k,
                width=args.width,
                height=args.height,
                fmt=fmt,
                serial=self.serial,
                taken=taken,
                orientation=6 if k % 3 == 2 else 1,  # every third photo taken sideways
                description=self._lesion_tag(),
            )
            entries.append(Entry(f"IMG_{base + k + 1:04d}.{suffix}", content, "processed"))
        for n, fault in enumerate(args.fault or ()):
            entries.append(
                Entry(f"BAD_{base + n + 1:04d}_{fault}.JPG", self._faulty(fault, n), "refused")
            )
        if args.garbage:
            junk = b"Camera log\n" + self.rng.randbytes(4096)
            entries.append(Entry(f"NOTES_{base + 1:04d}.TXT", junk, "refused"))
        return entries

    def _lesion_tag(self) -> str | None:
        """The lesion tag of every photo, when a lesion option was given."""
        args = self.args
        if args.lesion_id is None and args.anatomic_site is None and args.laterality is None:
            return None
        return format_lesion_tag(args.lesion_id, args.anatomic_site, args.laterality)

    def _faulty(self, fault: str, n: int) -> bytes:
        args = self.args
        seed = self.args.seed * 1000 + 500 + n
        if fault == "jpeg444":
            return make_photo(seed, width=args.width, height=args.height, subsampling=0)
        if fault == "progressive":
            return make_photo(seed, width=args.width, height=args.height, progressive=True)
        good = make_photo(seed, width=args.width, height=args.height, serial=self.serial)
        if fault == "truncated":
            return good[: len(good) * 3 // 5]
        # corrupt: the header is damaged just after SOI (a bad card sector)
        return good[:2] + bytes(b ^ 0x5A for b in good[2:600]) + good[600:]

    # -- writing --------------------------------------------------------------------------

    def _copy(self, entry: Entry) -> None:
        """Write as a card copy does: dot-temp name, fsync, rename into place."""
        tmp = self.folder / f".{entry.name}.tmp"
        with tmp.open("wb") as fh:
            fh.write(entry.content)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.folder / entry.name)
        entry.written = True
        self.offered += 1
        log.info("wrote %s (%d bytes)", entry.name, len(entry.content))

    def _copy_interrupted(self, entry: Entry) -> None:
        """Half the file under its real name, then (after a pause) the whole of it."""
        path = self.folder / entry.name
        with path.open("wb") as fh:
            fh.write(entry.content[: len(entry.content) // 2])
            fh.flush()
            os.fsync(fh.fileno())
        self.offered += 1
        log.info("unplugged while copying %s; back in %.1f s", entry.name, self.args.unplug_for)
        self._sleep(self.args.unplug_for)
        self._copy(entry)

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.stop and time.monotonic() < deadline:
            self._write_report()
            time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))

    # -- watching ---------------------------------------------------------------------------

    def _hash(self, path: Path) -> str | None:
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        key = (str(path), st.st_size, st.st_mtime_ns)
        if key not in self._hashes:
            try:
                self._hashes[key] = hashlib.sha256(path.read_bytes()).hexdigest()
            except FileNotFoundError:
                return None
        return self._hashes[key]

    def _copies_in(self, sub: str, entry: Entry) -> list[Path]:
        folder = self.folder / sub
        if not folder.is_dir():
            return []
        found = []
        for path in folder.iterdir():
            name = path.name
            if name.endswith(REASON_SUFFIX):
                continue
            stem, _, number = name.removeprefix(entry.name).partition(".")
            if not name.startswith(entry.name) or stem or (number and not number.isdigit()):
                continue
            if sub == REFUSED or self._hash(path) == entry.sha256:
                found.append(path)
        return found

    def _state(self) -> dict[str, Any]:
        acknowledged = []
        refused = []
        for entry in self.entries:
            if not entry.written:
                continue
            if entry.expect == "processed" and self._copies_in(PROCESSED, entry):
                acknowledged.append(entry.name)
            for path in self._copies_in(REFUSED, entry):
                reason_file = path.with_name(path.name + REASON_SUFFIX)
                try:
                    reason = reason_file.read_text(encoding="utf-8").strip()
                except FileNotFoundError:
                    reason = ""
                refused.append({"id": entry.name, "reason": reason})
        return {"acknowledged": acknowledged, "refused": refused, "offered": self.offered}

    def _write_report(self) -> None:
        if self.report_path is None:
            return
        report = self._state()
        if report == self._last_report:
            return
        write_report(self.report_path, report)
        self._last_report = report

    def _done(self) -> bool:
        for entry in self.entries:
            if not entry.written:
                return False
            if entry.expect == "processed":
                if len(self._copies_in(PROCESSED, entry)) < entry.copies:
                    return False
            elif not self._copies_in(REFUSED, entry):
                return False
        return True

    # -- main loop ----------------------------------------------------------------------------

    def run(self) -> int:
        """Write everything, then wait until the gateway processed it (0) or timeout (1)."""
        started = time.monotonic()
        deadline = started + self.args.timeout
        self.folder.mkdir(parents=True, exist_ok=True)
        self._write_report()
        try:
            for index, entry in enumerate(self.entries):
                if self.stop:
                    break
                if index == 0 and self.args.unplug_mid_transfer:
                    self._copy_interrupted(entry)
                else:
                    self._copy(entry)
                self._write_report()
                self._sleep(self.args.interval)
            reoffered = False
            while not self.stop:
                if time.monotonic() > deadline:
                    log.warning("timeout after %.0f s", self.args.timeout)
                    return 1
                first = self.entries[0] if self.entries else None
                if (
                    self.args.reoffer
                    and not reoffered
                    and first is not None
                    and first.expect == "processed"
                    and self._copies_in(PROCESSED, first)
                ):
                    reoffered = True
                    first.copies = 2
                    log.info("copying %s into the folder again (same content)", first.name)
                    self._copy(first)
                if self._done() and (reoffered or not self.args.reoffer or first is None):
                    log.info("all %d entries handled by the gateway", len(self.entries))
                    return 0
                self._sleep(0.2)
            return 0 if self._done() else 1
        finally:
            self._last_report = None
            self._write_report()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dermgate simulate photo-folder",
        description="Simulate a clinical camera dropping photos into a folder.",
    )
    parser.add_argument("--folder", required=True, help="the drop folder to write into")
    parser.add_argument("--photos", type=int, default=3, help="photos to take (default 3)")
    parser.add_argument(
        "--interval", type=float, default=0.3, help="seconds between photos (default 0.3)"
    )
    parser.add_argument("--report", help="JSON report of acknowledged/refused entries")
    parser.add_argument("--seed", type=int, default=0, help="content and serial number seed")
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="give up (exit 1) after this many seconds"
    )
    parser.add_argument(
        "--unplug-mid-transfer",
        action="store_true",
        help="the first photo appears half-written, then is copied again completely",
    )
    parser.add_argument(
        "--unplug-for",
        type=float,
        default=1.0,
        help="seconds the half-written file stays before the re-copy (default 1.0)",
    )
    parser.add_argument(
        "--garbage", action="store_true", help="also drop a junk file that must be refused"
    )
    parser.add_argument(
        "--reoffer",
        action="store_true",
        help="copy the first photo again (identical) once it was processed",
    )
    parser.add_argument(
        "--fault",
        action="append",
        choices=CONTENT_FAULTS,
        help="also drop a photo with this defect, which must be refused (repeatable)",
    )
    parser.add_argument(
        "--format",
        action="append",
        choices=FORMATS,
        help="file formats to cycle through (repeatable; default jpeg)",
    )
    parser.add_argument("--width", type=int, default=3000, help="photo width (default 3000)")
    parser.add_argument("--height", type=int, default=2000, help="photo height (default 2000)")
    add_lesion_options(
        parser,
        "lesion (written into every photo's EXIF ImageDescription as a DermGate lesion tag)",
        checked=False,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def main(argv: list[str]) -> int:
    """Entry point of ``dermgate simulate photo-folder``; returns the exit code."""
    args = _parser().parse_args(argv)
    return run_simulator(CameraSimulator(args), verbose=args.verbose)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
