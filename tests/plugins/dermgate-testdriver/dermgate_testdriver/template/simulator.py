"""The TC-1 camera simulated at its wire: a Unix socket server offering photos.

Run as ``dermgate simulate test-template --socket PATH [--captures N]``. It listens
on PATH, says HELLO to whoever connects (the driver), offers each photo (a small
JPEG) and waits for SAVED; a photo not saved (REFUSED, no answer, the connection
lost) is offered again. It exits 0 once every photo was saved, 1 on ``--timeout``.

The conformance kit's faults:

* ``--unplug-mid-transfer``: the first offer stops half-way; the camera is gone (its
  socket removed) for ``--unplug-for`` seconds, then offers that photo again;
* ``--garbage``: a line of random bytes before the first offer;
* ``--reoffer``: once all are saved, the first photo is offered again (it must be
  saved again, without a second object).

The report (``--report FILE``, rewritten atomically) follows the kit contract:
``acknowledged`` (``id`` and ``sha256`` of each save, in order), ``refused`` (``id``
and ``reason``) and ``offered``.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import logging
import random
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from gateway.driver_api import run_simulator, write_report

from . import protocol

log = logging.getLogger("dermgate.simulate.template")


@dataclass(frozen=True, slots=True)
class Photo:
    """One photo the camera holds until the gateway saved it."""

    capture_id: str
    data: bytes

    @property
    def sha256(self) -> str:
        """SHA-256 of the JPEG, as the OFFER header announces it."""
        return hashlib.sha256(self.data).hexdigest()


def make_photo(seed: int, number: int) -> Photo:
    """A small, unique JPEG (coloured discs on a skin tone)."""
    rng = random.Random(seed * 1000 + number)
    image = Image.new("RGB", (320, 240), (220, 170, 140))
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x, y, r = rng.randrange(320), rng.randrange(240), rng.randrange(5, 40)
        colour = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
        draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=85)
    return Photo(f"IMG{number:04d}", out.getvalue())


class Gone(Exception):
    """The gateway hung up, or did not answer in time."""


class Camera:
    """The simulated TC-1: serves whoever connects until every photo was saved."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.stop = False
        self.photos = [make_photo(args.seed, n) for n in range(1, args.captures + 1)]
        self.queue = list(self.photos)  # offered in order, until saved
        self.acknowledged: list[dict[str, str]] = []
        self.refused: list[dict[str, str]] = []
        self.offered = 0
        self.unplug, self.garbage, self.reoffer = (
            args.unplug_mid_transfer,
            args.garbage,
            args.reoffer,
        )
        self.serial = f"TC1-{args.seed:05d}"

    def run(self) -> int:
        """Serve until every photo was saved (0), or the timeout or a stop (1)."""
        deadline = time.monotonic() + self.args.timeout
        path = Path(self.args.socket)
        listener = self._listen(path)
        try:
            while self.queue and not self.stop and time.monotonic() < deadline:
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    continue
                pulled = False
                with conn:
                    try:
                        pulled = self._serve(conn)
                    except (Gone, OSError) as err:
                        log.info("gateway gone: %s", err)
                if pulled:
                    listener.close()
                    path.unlink(missing_ok=True)
                    time.sleep(self.args.unplug_for)  # the camera is away …
                    listener = self._listen(path)  # … and back
        finally:
            listener.close()
            path.unlink(missing_ok=True)
            self._report()
        return 0 if not self.queue else 1

    def _listen(self, path: Path) -> socket.socket:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        path.unlink(missing_ok=True)
        listener.bind(str(path))
        listener.listen(1)
        listener.settimeout(0.2)  # to notice a stop or the deadline
        return listener

    def _serve(self, conn: socket.socket) -> bool:
        """Offer photos on one connection; True if the camera was unplugged."""
        conn.settimeout(self.args.ack_timeout)
        conn.sendall(protocol.hello(self.serial, "1.0.0"))
        replies = _Lines(conn, self.args.ack_timeout, self)
        while self.queue and not self.stop:
            photo = self.queue[0]
            if self.garbage:
                self.garbage = False
                junk = random.Random(self.args.seed).randbytes(300)
                conn.sendall(junk.replace(b"\n", b"?") + b"\n")
            header = protocol.offer(photo.capture_id, len(photo.data), photo.sha256)
            self.offered += 1
            if self.unplug:
                self.unplug = False
                conn.sendall(header + photo.data[: len(photo.data) // 2])
                time.sleep(0.2)  # the half reaches the driver before the plug is pulled
                return True
            conn.sendall(header + photo.data)
            reply = protocol.parse_reply(replies.next())
            if reply is None or reply.capture_id != photo.capture_id:
                raise Gone(f"unexpected reply to {photo.capture_id}: {reply}")
            if reply.reason is not None:
                log.warning("%s refused: %s", photo.capture_id, reply.reason)
                self.refused.append({"id": photo.capture_id, "reason": reply.reason})
                time.sleep(self.args.retry_delay)
                continue
            self.acknowledged.append({"id": photo.capture_id, "sha256": photo.sha256})
            self.queue.pop(0)
            self._report()
            if not self.queue and self.reoffer:
                self.reoffer = False
                self.queue.append(self.photos[0])
            if self.queue:
                time.sleep(self.args.interval)  # the next photo is taken
        return False

    def _report(self) -> None:
        report: dict[str, Any] = {
            "acknowledged": self.acknowledged,
            "refused": self.refused,
            "offered": self.offered,
        }
        if self.args.report:
            write_report(Path(self.args.report), report)


class _Lines:
    """Lines from the gateway, each within ``timeout`` seconds."""

    def __init__(self, conn: socket.socket, timeout: float, camera: Camera) -> None:
        self.conn, self.timeout, self.camera = conn, timeout, camera
        self.buffer = b""

    def next(self) -> bytes:
        """The next line (without its newline); :class:`Gone` if none comes in time."""
        deadline = time.monotonic() + self.timeout
        self.conn.settimeout(0.2)  # short waits, to notice a stop
        try:
            while b"\n" not in self.buffer:
                if self.camera.stop or time.monotonic() > deadline:
                    raise Gone("no answer")
                try:
                    data = self.conn.recv(4096)
                except TimeoutError:
                    continue
                if not data:
                    raise Gone("connection closed")
                self.buffer += data
        finally:
            self.conn.settimeout(self.timeout)
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line


def main(argv: list[str]) -> int:
    """``dermgate simulate test-template …``"""
    parser = argparse.ArgumentParser(prog="dermgate simulate test-template", description=__doc__)
    parser.add_argument("--socket", required=True, help="the Unix socket to listen on")
    parser.add_argument("--captures", type=int, default=3, help="photos to take (default 3)")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between photos")
    parser.add_argument("--report", help="write the JSON report here")
    parser.add_argument("--seed", type=int, default=0, help="content and serial number seed")
    parser.add_argument("--timeout", type=float, default=300.0, help="give up (exit 1) after this")
    parser.add_argument("--ack-timeout", type=float, default=10.0, help="wait this long for SAVED")
    parser.add_argument("--retry-delay", type=float, default=1.0, help="wait after a REFUSED")
    kit = parser.add_argument_group("conformance-kit faults")
    kit.add_argument("--unplug-mid-transfer", action="store_true", help="cut the first offer")
    kit.add_argument("--unplug-for", type=float, default=0.5, help="seconds unplugged")
    kit.add_argument("--garbage", action="store_true", help="junk before the first offer")
    kit.add_argument("--reoffer", action="store_true", help="offer the first photo again")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    return run_simulator(Camera(args), verbose=args.verbose)
