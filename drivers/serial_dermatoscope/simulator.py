"""A serial dermatoscope simulated at the wire, on a pseudo-terminal.

Run as ``dermgate simulate serial-dermatoscope --link PATH`` (or ``python -m
drivers.serial_dermatoscope.simulator``). It creates a pty, links PATH to its
slave end and behaves like a DS-100 speaking the protocol of :mod:`.protocol`:
it waits for HOST_HELLO, answers HELLO and offers its captures one at a time
until the host ACKs each of them. Fault options make it misbehave in the ways the
host must survive (corrupt, truncated, duplicated frames, garbage, a wrong
checksum, an unplug mid-transfer, a device that forgets its ACKs, a device that
keeps the line busy without finishing: lone 0x00 bytes or its last DATA frame
again and again instead of CAPTURE_END). The conformance
kit's flags, the same on every simulator, map onto these: ``--unplug-mid-transfer``
(unplug half-way through the first offer), ``--garbage`` (``--fault garbage``),
``--reoffer`` (``--reoffer-acked``). Its report predates the kit's: acknowledged
captures are objects with ``capture_id`` and ``sha256``; ``offered`` counts the
CAPTURE_BEGINs sent, as on the other simulators.

One thread, one ``select`` loop, non-blocking writes: if the host stops reading,
the device notices and treats the host as gone, as a real device would.
"""

from __future__ import annotations

import argparse
import collections
import errno
import logging
import os
import random
import select
import sys
import time
import zlib
from pathlib import Path

from drivers.serial_dermatoscope import protocol as p
from drivers.serial_dermatoscope.pty_link import PtyLink
from drivers.serial_dermatoscope.sim_captures import (
    CAPABILITIES,
    CONTENT_FAULTS,
    FIRMWARE,
    KEEPALIVE_FAULTS,
    MANUFACTURER,
    MODEL,
    TRANSFER_FAULTS,
    LesionChoice,
    OfferEncoder,
    SimCapture,
    plan_captures,
    take_content,
)
from gateway.driver_api import add_lesion_options, run_simulator, write_report

__all__ = ["main"]

log = logging.getLogger("dermgate.simulate.serial_dermatoscope")

_WRITE_MAX = 16384
_TICK = 0.05
_KEEPALIVE_EVERY = 0.05


class DeviceSimulator:
    """The simulated device: captures, link, and the offer/ACK state machine."""

    def __init__(self, args: argparse.Namespace) -> None:
        """Set up captures and identity from the parsed command line."""
        self.args = args
        self.link = PtyLink(Path(args.link))
        self.report_path: Path | None = Path(args.report) if args.report else None
        self.faults: set[str] = set(args.fault or ())
        if args.garbage:
            self.faults.add("garbage")
        self.offers = OfferEncoder(self.faults, random.Random(args.seed))
        self.hello = p.Hello(
            manufacturer=MANUFACTURER,
            model=MODEL,
            serial=args.serial or f"DS100-{zlib.crc32(str(args.seed).encode()) % 10**6:06d}",
            firmware=FIRMWARE,
            capabilities=CAPABILITIES,
        )
        self.started = time.monotonic()
        lesion = LesionChoice(args.lesion_id, args.anatomic_site, args.laterality)
        self.captures = plan_captures(args.captures, args.interval, self.started, lesion)
        self.decoder = p.FrameDecoder()
        self.connected = False
        self.current: SimCapture | None = None
        self.outq: collections.deque[bytes] = collections.deque()
        self.partial = b""
        # (capture, bytes) sent again and again while that capture's offer stands
        self.keepalive: tuple[SimCapture, bytes] | None = None
        self.keepalive_at = 0.0
        self.ack_deadline: float | None = None
        self.last_progress = self.started
        self.sent_total = 0
        self.unplugged_until: float | None = None
        self.unplug_done = False
        self.reoffering = False
        self.reoffer_done = False
        self.acknowledged: list[dict[str, str]] = []
        self.refused: list[dict[str, str]] = []
        self.offered = 0
        self.stop = False

    # -- captures -----------------------------------------------------------------

    def _content(self, capture: SimCapture) -> bytes:
        return take_content(
            capture,
            seed=self.args.seed,
            faults=self.faults,
            width=self.args.width,
            height=self.args.height,
        )

    def _offer_frames(self, capture: SimCapture) -> list[bytes]:
        self._content(capture)
        self.offered += 1
        frames, filler = self.offers.offer(capture)
        if filler is not None:
            self.keepalive = (capture, filler)
        return frames

    # -- state changes ------------------------------------------------------------

    def _abort_offer(self) -> None:
        # A partly written frame is finished (so the next one starts cleanly); the
        # rest of the offer is dropped.
        self.outq.clear()
        self.current = None
        self.keepalive = None
        self.ack_deadline = None

    def _host_gone(self, why: str) -> None:
        if self.connected:
            log.info("host gone (%s); waiting for HOST_HELLO", why)
        self.connected = False
        self._abort_offer()

    def _on_host_hello(self, hello: p.HostHello) -> None:
        log.info("HOST_HELLO from %r; offering all unACKed captures", hello.host)
        self._abort_offer()
        self.connected = True
        for capture in self.captures:
            capture.retry_at = 0.0
        self.outq.append(b"\x00" + self.offers.frame(self.hello))
        self.last_progress = time.monotonic()

    def _find(self, capture_id: str) -> SimCapture | None:
        for capture in self.captures:
            if capture.capture_id == capture_id:
                return capture
        return None

    def _on_ack(self, capture_id: str) -> None:
        capture = self._find(capture_id)
        if capture is None or capture.acked:
            return
        log.info("ACK %s", capture_id)
        capture.acked = True
        if self.reoffering and capture.index == 1:
            self.reoffer_done = True
        if not any(item["capture_id"] == capture_id for item in self.acknowledged):
            self.acknowledged.append({"capture_id": capture_id, "sha256": capture.sha256})
        if self.current is capture:
            self._abort_offer()
        self._write_report()

    def _on_nak(self, capture_id: str, reason: str) -> None:
        capture = self._find(capture_id)
        if capture is None or capture.acked:
            return
        log.info("NAK %s (%s)", capture_id, reason)
        self.refused.append({"capture_id": capture_id, "reason": reason})
        capture.retry_at = time.monotonic() + self.args.retry_delay
        if self.current is capture:
            self._abort_offer()
        self._write_report()

    def _handle_input(self, data: bytes) -> None:
        for item in self.decoder.feed(data):
            if isinstance(item, p.FrameError):
                log.debug("dropped frame from host: %s %s", item.reason, item.detail)
                continue
            match item.message:
                case p.HostHello() as hello:
                    self._on_host_hello(hello)
                case p.Ack(capture_id=cid):
                    self._on_ack(cid)
                case p.Nak(capture_id=cid, reason=reason):
                    self._on_nak(cid, str(reason))
                case _:
                    log.debug("ignored %s from host", type(item.message).__name__)

    def _all_done(self) -> bool:
        if not all(capture.acked for capture in self.captures):
            return False
        if (
            (self.args.reoffer_acked or self.args.reoffer)
            and self.captures
            and not self.reoffer_done
        ):
            if not self.reoffering:
                # The device "forgets" that capture 1 was ACKed and offers it again.
                log.info("re-offering ACKed capture %s", self.captures[0].capture_id)
                self.reoffering = True
                self.captures[0].acked = False
            return False
        return True

    def _advance(self, now: float) -> None:
        for capture in self.captures:
            if capture.available_at <= now and capture.content is None:
                self._content(capture)
                return  # one image per tick: keep the link serviced
        idle_line = not self.outq and not self.partial
        if self.keepalive is not None and self.current is self.keepalive[0]:
            if idle_line and now >= self.keepalive_at:
                self.outq.append(self.keepalive[1])
                self.keepalive_at = now + _KEEPALIVE_EVERY
        elif self.current is not None:
            if self.ack_deadline is None and idle_line:
                self.ack_deadline = now + self.args.ack_timeout
            elif self.ack_deadline is not None and now > self.ack_deadline:
                self._host_gone("no ACK/NAK")
        if (self.outq or self.partial) and now - self.last_progress > self.args.ack_timeout:
            self.partial = b""
            self._host_gone("host stopped reading")
        if self.connected and self.current is None and not self.outq:
            for capture in self.captures:
                if (
                    not capture.acked
                    and capture.content is not None
                    and capture.available_at <= now
                    and capture.retry_at <= now
                ):
                    capture.offers += 1
                    self.current = capture
                    self.outq.extend(self._offer_frames(capture))
                    if self.args.unplug_mid_transfer and self.args.unplug_after_bytes is None:
                        # Kit fault: the link drops half-way through the first offer.
                        offer_bytes = sum(len(frame) for frame in self.outq)
                        self.args.unplug_after_bytes = self.sent_total + offer_bytes // 2
                    self.last_progress = now
                    log.info("offering %s (offer %d)", capture.capture_id, capture.offers)
                    break

    # -- unplug -------------------------------------------------------------------

    def _maybe_unplug(self, now: float) -> None:
        if self.unplug_done or self.unplugged_until is not None:
            return
        by_bytes = self.args.unplug_after_bytes
        by_time = self.args.unplug_after
        if (by_bytes is not None and self.sent_total >= by_bytes) or (
            by_time is not None and now - self.started >= by_time
        ):
            log.info("unplugging for %.1f s after %d bytes", self.args.unplug_for, self.sent_total)
            self.link.close()
            self.partial = b""
            self._host_gone("unplugged")
            self.decoder.reset()
            self.unplugged_until = now + self.args.unplug_for

    def _maybe_replug(self, now: float) -> None:
        if self.unplugged_until is not None and now >= self.unplugged_until:
            self.unplugged_until = None
            self.unplug_done = True
            self.link.open()

    # -- I/O ----------------------------------------------------------------------

    def _write(self, master: int) -> None:
        if not self.partial:
            if not self.outq:
                return
            self.partial = self.outq.popleft()
        limit = _WRITE_MAX
        if self.args.unplug_after_bytes is not None and not self.unplug_done:
            limit = max(1, min(limit, self.args.unplug_after_bytes - self.sent_total))
        try:
            written = os.write(master, self.partial[:limit])
        except BlockingIOError:
            return
        except OSError as err:
            log.warning("write failed: %s", err)
            return
        self.partial = self.partial[written:]
        self.sent_total += written
        if written:
            self.last_progress = time.monotonic()

    def _read(self, master: int) -> None:
        try:
            data = os.read(master, 65536)
        except BlockingIOError:
            return
        except OSError as err:
            if err.errno != errno.EIO:
                raise
            time.sleep(_TICK)  # nobody on the other end
            return
        self._handle_input(data)

    def _write_report(self) -> None:
        if self.report_path is None:
            return
        report = {"acknowledged": self.acknowledged, "refused": self.refused}
        write_report(self.report_path, {**report, "offered": self.offered})

    def run(self) -> int:
        """Run until every capture is ACKed (0), or timeout or signal (1)."""
        deadline = self.started + self.args.timeout
        self.link.open()
        self._write_report()
        try:
            while not self.stop:
                now = time.monotonic()
                if self._all_done():
                    log.info("all %d captures ACKed", len(self.captures))
                    return 0
                if now > deadline:
                    log.warning("timeout after %.0f s", self.args.timeout)
                    return 1
                self._maybe_replug(now)
                self._maybe_unplug(now)
                master = self.link.master
                if master is None:
                    time.sleep(_TICK)
                    continue
                self._advance(now)
                want_write = bool(self.partial or self.outq)
                readable, writable, _ = select.select(
                    [master], [master] if want_write else [], [], _TICK
                )
                if readable:
                    self._read(master)
                if writable and self.link.master is not None:
                    self._write(master)
            log.info("stopped by signal")
            return 0 if all(capture.acked for capture in self.captures) else 1
        finally:
            self.link.close()
            self._write_report()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dermgate simulate serial-dermatoscope",
        description="Simulate a serial dermatoscope (DS-100) on a pty linked at --link.",
    )
    parser.add_argument("--link", required=True, help="symlink to create for the device port")
    parser.add_argument("--captures", type=int, default=3, help="captures to take (default 3)")
    parser.add_argument(
        "--interval", type=float, default=0.5, help="seconds between captures (default 0.5)"
    )
    parser.add_argument("--report", help="write a JSON report of ACKed/refused captures here")
    parser.add_argument("--seed", type=int, default=0, help="image and serial number seed")
    parser.add_argument("--serial", help="device serial number (default derived from --seed)")
    parser.add_argument(
        "--ack-timeout",
        type=float,
        default=30.0,
        help="seconds to wait for ACK/NAK or for the host to read before treating it as gone",
    )
    parser.add_argument(
        "--retry-delay", type=float, default=2.0, help="seconds before re-offering a NAKed capture"
    )
    parser.add_argument(
        "--timeout", type=float, default=600.0, help="give up (exit 1) after this many seconds"
    )
    parser.add_argument(
        "--unplug-after", type=float, metavar="S", help="unplug once, S seconds after start"
    )
    parser.add_argument(
        "--unplug-after-bytes",
        type=int,
        metavar="N",
        help="unplug once, after N bytes were sent in total (mid-frame if it falls so)",
    )
    parser.add_argument(
        "--unplug-for", type=float, default=1.0, help="seconds to stay unplugged (default 1.0)"
    )
    parser.add_argument(
        "--fault",
        action="append",
        choices=TRANSFER_FAULTS + KEEPALIVE_FAULTS + CONTENT_FAULTS,
        help=(
            "inject a fault (repeatable). On the first offer of capture 1 only: crc (a DATA"
            " frame fails its CRC), truncate (last DATA frame missing), sha (wrong SHA-256"
            " in CAPTURE_END), garbage (random bytes and stray 0x00 between frames),"
            " duplicate-frame (a DATA frame sent twice), huge-length (CAPTURE_BEGIN announces"
            " 2^63-1 bytes), keepalive-zeros (half the data, then a lone 0x00 every 50 ms"
            " until NAKed), repeat-last-data (all the data, then the last DATA frame every"
            " 50 ms instead of CAPTURE_END, until NAKed). On capture 1 always: not-jpeg"
            " (random bytes instead of a JPEG), jpeg444 (a 4:4:4 JPEG)."
        ),
    )
    add_lesion_options(parser, "lesion (applied to every capture)")
    parser.add_argument(
        "--reoffer-acked",
        action="store_true",
        help="after all are ACKed, offer capture 1 once more (a device that lost its ACK)",
    )
    kit = parser.add_argument_group("conformance-kit faults (the same flags on every simulator)")
    kit.add_argument(
        "--unplug-mid-transfer",
        action="store_true",
        help="unplug once, half-way through the first offer (as --unplug-after-bytes)",
    )
    kit.add_argument("--garbage", action="store_true", help="as --fault garbage")
    kit.add_argument("--reoffer", action="store_true", help="as --reoffer-acked")
    parser.add_argument("--width", type=int, default=2592, help=argparse.SUPPRESS)
    parser.add_argument("--height", type=int, default=1944, help=argparse.SUPPRESS)
    parser.add_argument("-v", "--verbose", action="store_true", help="log every frame decision")
    return parser


def main(argv: list[str]) -> int:
    """Entry point of ``dermgate simulate serial-dermatoscope``; returns the exit code."""
    args = _parser().parse_args(argv)
    return run_simulator(DeviceSimulator(args), verbose=args.verbose)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
