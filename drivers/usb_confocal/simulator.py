"""A reflectance confocal microscope (RCM-1) simulated at the USB transfer level.

Run as ``dermgate simulate usb-confocal --socket PATH`` (or ``python -m
drivers.usb_confocal.simulator``). It listens on a Unix socket and answers the
requests of :class:`drivers.usb_confocal.emulated.EmulatedBackend` as the device
would: descriptors, SET_CONFIGURATION, the GET_IDENTITY control requests, a bulk
IN stream of stacks (:mod:`.protocol`) and ACK/NAK on bulk OUT. Being its own
process, it keeps its stacks when the gateway is killed, and offers every
unacknowledged stack again when a host attaches and says HOST_HELLO.

Pixel content is cheap to make yet looks like RCM speckle: one random base frame
per stack, rotated per frame and darkened with depth through ``bytes.translate``
(C speed, no numpy), so even a 1 GB stack streams at memory-copy speed and is
never held whole in memory.

Fault injection (the conformance kit): ``--unplug-mid-transfer`` (the device
vanishes half-way through the first stack and comes back a second later),
``--garbage`` (random bytes on the wire before every stack), ``--reoffer`` (after
each ACK, the device acts as if the ACK was lost and offers the stack once more).
``--announce-huge`` makes the first offer a header claiming an absurd size (the
host must refuse it as too large, not take it for a full disk). ``--first-frames N``
gives stack 1 (and only it) N frames: with ``--size 1x1``, a stack of many tiny
frames, small in bytes but absurd in count (the host's ``max_frames`` refuses it;
the device keeps it and offers it again after each refusal).
``--fault trickle-garbage`` makes the first offer of stack 1 stop after its first
frame and trickle a few garbage bytes every 50 ms, never finishing, until the host
NAKs it (the host must not take bytes for progress). ``--serial-number`` sets the
serial number the device reports, whatever it contains (the host must clean it).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import logging
import random
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from drivers.usb_confocal import protocol as p
from drivers.usb_confocal.emulated import read_message, write_message
from drivers.usb_confocal.sim_device import (
    FIRMWARE,
    MANUFACTURER,
    MODEL,
    WAVELENGTH_NM,
    SimStack,
    descriptors,
    plan_stack,
    stack_frames,
)
from drivers.usb_confocal.sim_options import simulator_parser
from gateway.driver_api import run_simulator, write_report

__all__ = ["main"]

log = logging.getLogger("dermgate.simulate.usb_confocal")

_TICK = 0.05
_TRICKLE_EVERY = 0.05


class Unplugged(Exception):
    """The session's connection must be dropped (unplugged, or a newer host took over)."""


class DeviceSimulator:
    """The device: its stacks, the offer/ACK state machine, the socket server."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.socket_path = Path(args.socket)
        self.report_path = Path(args.report) if args.report else None
        self.rng = random.Random(args.seed)
        # Stack ids keep the seed's name: a hostile --serial-number is the host's problem
        # in the identity, not in the protocol's stack ids.
        self.stack_prefix = f"RCM1-{args.seed:04d}"
        self.serial: str = args.serial_number or self.stack_prefix
        self.faults: set[str] = set(args.fault or ())
        self.trickling = False
        self.trickle_at = 0.0
        width, height = (int(v) for v in args.size.lower().split("x"))
        self.stacks = [
            plan_stack(
                i,
                prefix=self.stack_prefix,
                frames=args.frames,
                first_frames=args.first_frames,
                mosaic=args.mosaic,
                width=width,
                height=height,
                bits=args.bits,
                lesion=(args.lesion_id, args.anatomic_site, args.laterality),
            )
            for i in range(args.stacks)
        ]
        self.cond = threading.Condition()
        self.session = 0
        self.hello = False
        self.out_reader = p.HostMessageReader()
        self.stream: Iterator[bytes] | None = None
        self.pending = memoryview(b"")
        self.current: SimStack | None = None
        self.awaiting: SimStack | None = None
        self.awaiting_since = 0.0
        self.unplugged_until = 0.0
        self.unplug_armed = bool(args.unplug_mid_transfer)
        self.sent_of_current = 0
        self.offered = 0
        self.unanswered = 0  # complete offers the host never ACKed nor NAKed
        self.acknowledged: list[str] = []
        self.refused: list[dict[str, str]] = []
        self.stop = False

    # -- content --------------------------------------------------------------------

    def _offer_bytes(self, stack: SimStack) -> Iterator[bytes]:
        if self.args.announce_huge and stack.index == 0 and stack.offers == 1:
            # A claim to check against limits, not an allocation: only the header is sent.
            huge = replace(stack.header, frames=1 << 20, width=0xFFFF, height=0xFFFF, bits=16)
            log.info("offering %s as a %d-byte stack", stack.header.stack_id, huge.length)
            yield p.encode_json(p.MessageType.STACK_HEADER, huge.to_json())
            return
        if self.args.garbage:
            yield self.rng.randbytes(self.rng.randint(50, 300)) + b"DGC" + self.rng.randbytes(9)
        sha = hashlib.sha256()
        if "trickle-garbage" in self.faults and stack.index == 0 and stack.offers == 1:
            log.info("offering %s: one frame, then garbage until NAKed", stack.header.stack_id)
            stream = p.encode_stack(stack.header, stack_frames(stack, self.args.seed, sha))
            for _header_frame_pixels in range(3):  # the header, frame 0 and its pixels
                yield next(stream)
            self.trickling, self.trickle_at = True, 0.0
            yield b""
            return
        yield from p.encode_stack(stack.header, stack_frames(stack, self.args.seed, sha))
        stack.sha256 = sha.hexdigest()

    # -- the offer/ACK state machine (call with self.cond held) ---------------------

    def _eligible(self, now: float) -> SimStack | None:
        if self.awaiting is not None:
            if now - self.awaiting_since < self.args.ack_timeout:
                return None
            log.warning("no ACK for %s; offering it again", self.awaiting.header.stack_id)
            self.unanswered += 1
            self.awaiting = None
        for stack in self.stacks:
            if (not stack.acked or stack.reoffer_pending) and stack.retry_at <= now:
                return stack
        return None

    def _abort_offer(self) -> None:
        self.trickling = False
        self.stream = None
        self.pending = memoryview(b"")
        self.current = None
        self.awaiting = None

    def _take(self, size: int, now: float) -> bytes:
        if not self.hello:
            return b""
        out = bytearray()
        new_offer = False
        while len(out) < size:
            if self.trickling:
                if not out and now >= self.trickle_at:
                    self.trickle_at = now + _TRICKLE_EVERY
                    # never "DGCF": garbage that cannot start a message
                    out += self.rng.randbytes(3).replace(b"D", b"d")
                break
            budget = size - len(out)
            if self.unplug_armed and self.current is not None and self.current.index == 0:
                half = self.current.header.length // 2
                if self.sent_of_current >= half:
                    if out:
                        break  # hand over what the host asked for, unplug on its next read
                    self.unplug_armed = False
                    self.unplugged_until = now + self.args.unplug_for
                    log.info("unplugged mid-transfer (%d bytes sent)", self.sent_of_current)
                    self._abort_offer()
                    raise Unplugged("unplugged")
                budget = min(budget, half - self.sent_of_current)
            if not self.pending:
                if self.stream is None:
                    if out:
                        break
                    stack = self._eligible(now)
                    if stack is None:
                        break
                    self.current = stack
                    stack.offers += 1
                    self.offered += 1
                    self.sent_of_current = 0
                    self.stream = self._offer_bytes(stack)
                    new_offer = True
                    log.info("offering %s (offer %d)", stack.header.stack_id, stack.offers)
                chunk = next(self.stream, None)
                if chunk is None:
                    self.awaiting, self.awaiting_since = self.current, now
                    self.stream = None
                    self.current = None
                    self._write_report()
                    break
                self.pending = memoryview(chunk)
            piece = self.pending[:budget]
            self.pending = self.pending[len(piece) :]
            out += piece
            self.sent_of_current += len(piece)
            if new_offer and not self.pending:
                # A new offer's first message ends its transfer (a short packet), so
                # the host can refuse the header before the frames are even made.
                break
        return bytes(out)

    def _on_host(self, message: p.HostMessage, now: float) -> None:
        stack_id = str(message.data.get("stack_id", ""))
        if message.kind is p.MessageType.HOST_HELLO:
            log.info("host hello; (re)offering unacknowledged stacks")
            self._abort_offer()
            self.hello = True
            return
        stack = next((s for s in self.stacks if s.header.stack_id == stack_id), None)
        if stack is None:
            return
        if message.kind is p.MessageType.ACK:
            if self.awaiting is stack:
                self.awaiting = None
            if stack.acked and stack.reoffer_pending:
                stack.reoffer_pending = False
                log.info("%s ACKed again after the re-offer", stack_id)
            elif not stack.acked:
                stack.acked = True
                self.acknowledged.append(stack_id)
                log.info("%s ACKed", stack_id)
                if self.args.reoffer:
                    stack.reoffer_pending = True
            self._write_report()
        elif message.kind is p.MessageType.NAK:
            reason = str(message.data.get("reason", ""))
            log.info("%s NAKed: %s", stack_id, reason)
            self.refused.append({"id": stack_id, "reason": reason})
            if self.awaiting is stack:
                self.awaiting = None
            if self.current is stack:
                self._abort_offer()
            stack.retry_at = now + self.args.retry_delay
            self._write_report()

    def done(self) -> bool:
        """Every stack ACKed (and re-offered once, with --reoffer)."""
        with self.cond:
            return all(s.acked and not s.reoffer_pending for s in self.stacks)

    # -- requests ---------------------------------------------------------------------

    def handle(
        self, session: int, request: dict[str, Any], payload: bytes
    ) -> tuple[dict[str, Any], bytes]:
        op = request.get("op")
        now = time.monotonic()
        with self.cond:
            if now < self.unplugged_until:
                raise Unplugged("device is unplugged")
            if op == "describe":
                return {
                    "ok": True,
                    "descriptors": descriptors(self.args.usb_port, self.args.usb_address),
                }, b""
            if op == "open":
                log.info("host attached (session %d)", session)
                self.session = session
                self.hello = False
                self.out_reader = p.HostMessageReader()
                self._abort_offer()
                self.cond.notify_all()
                return {"ok": True}, b""
            if session != self.session:
                raise Unplugged("another host session took over")
            if op in ("set_configuration", "reset"):
                return {"ok": True}, b""
            if op == "ctrl":
                return self._control(request)
            if op == "bulk_write":
                for message in self.out_reader.feed(payload):
                    self._on_host(message, now)
                self.cond.notify_all()
                return {"ok": True, "written": len(payload)}, b""
            if op == "bulk_read":
                return self._bulk_read(session, request)
        return {"error": "pipe", "detail": f"unknown request {op}"}, b""

    def _control(self, request: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
        if (
            request.get("bmRequestType") != p.REQUEST_TYPE_VENDOR_IN
            or request.get("bRequest") != p.GET_IDENTITY
        ):
            return {"error": "pipe", "detail": "unsupported control request"}, b""
        values = {
            p.IdentityField.MANUFACTURER: MANUFACTURER,
            p.IdentityField.MODEL: MODEL,
            p.IdentityField.SERIAL: self.serial,
            p.IdentityField.FIRMWARE: FIRMWARE,
            p.IdentityField.WAVELENGTH_NM: str(WAVELENGTH_NM),
        }
        try:
            value = values[p.IdentityField(int(request.get("wValue", -1)))]
        except ValueError:
            return {"error": "pipe", "detail": "unknown identity field"}, b""
        return {"ok": True}, value.encode()[: int(request.get("length", 64))]

    def _bulk_read(self, session: int, request: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
        size = max(1, min(int(request.get("size", 512)), 4 << 20))
        if self.args.rate:
            # Paced: small transfers (20 ms of throughput each) so a stack takes its
            # time on the wire and an unplug or a host crash can land inside it.
            size = min(size, max(512, int(self.args.rate * 1e6 * 0.02)))
        deadline = time.monotonic() + max(int(request.get("timeout_ms", 1000)), 1) / 1000
        while True:
            now = time.monotonic()
            if session != self.session or now < self.unplugged_until or self.stop:
                raise Unplugged("device went away")
            data = self._take(size, now)
            if data:
                return {"ok": True}, data
            if now >= deadline:
                return {"error": "timeout"}, b""
            self.cond.wait(min(deadline - now, _TICK))

    # -- server -----------------------------------------------------------------------

    def _serve(self, conn: socket.socket, session: int) -> None:
        with conn:
            conn.settimeout(None)
            while not self.stop:
                try:
                    request, payload = read_message(conn)
                except (OSError, ValueError):
                    break
                try:
                    answer, data = self.handle(session, request, payload)
                except Unplugged as why:
                    log.debug("session %d dropped: %s", session, why)
                    break
                try:
                    write_message(conn, answer, data)
                except OSError:
                    break
                if data and self.args.rate:
                    time.sleep(len(data) / (self.args.rate * 1e6))  # USB throughput
        with self.cond:
            if self.session == session:
                # The host is gone (unplug, gateway killed): the offer in flight is lost.
                self.hello = False
                self._abort_offer()

    def _write_report(self) -> None:
        if self.report_path is None:
            return
        report = {
            "acknowledged": list(self.acknowledged),
            "refused": list(self.refused),
            "offered": self.offered,
            "unanswered": self.unanswered,
            "stacks": {
                s.header.stack_id: {
                    "kind": s.header.kind,
                    "frames": s.header.frames,
                    "length": s.header.length,
                    "sha256": s.sha256,
                }
                for s in self.stacks
            },
        }
        write_report(self.report_path, report)

    def run(self) -> int:
        """Serve until every stack is ACKed (0), or timeout (1)."""
        deadline = time.monotonic() + self.args.timeout
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(str(self.socket_path))
        server.listen(8)
        server.settimeout(_TICK)
        log.info(
            "%s %s listening on %s with %d stacks",
            MODEL,
            self.serial,
            self.socket_path,
            len(self.stacks),
        )
        with self.cond:
            self._write_report()
        sessions = 0
        try:
            while not self.stop:
                if self.done():
                    log.info("all %d stacks ACKed", len(self.stacks))
                    time.sleep(0.2)  # let the host read its last answers
                    return 0
                if time.monotonic() > deadline:
                    log.warning("timeout after %.0f s", self.args.timeout)
                    return 1
                try:
                    conn, _ = server.accept()
                except TimeoutError:
                    continue
                sessions += 1
                threading.Thread(target=self._serve, args=(conn, sessions), daemon=True).start()
            return 0 if self.done() else 1
        finally:
            self.stop = True
            with self.cond:
                self.cond.notify_all()
                self._write_report()
            server.close()
            with contextlib.suppress(FileNotFoundError):
                self.socket_path.unlink()


def main(argv: list[str]) -> int:
    """Entry point of ``dermgate simulate usb-confocal``; returns the exit code."""
    args = simulator_parser().parse_args(argv)
    return run_simulator(DeviceSimulator(args), verbose=args.verbose)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
