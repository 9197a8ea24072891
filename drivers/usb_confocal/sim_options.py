"""The command line of ``dermgate simulate usb-confocal``: every option of the simulator."""

from __future__ import annotations

import argparse
import re

from gateway.driver_api import add_lesion_options

__all__ = ["FAULTS", "simulator_parser"]

FAULTS = ("trickle-garbage",)


def _usb_port(text: str) -> str:
    if not re.fullmatch(r"\d{1,3}-\d{1,3}(\.\d{1,3})*", text):
        raise argparse.ArgumentTypeError(f"{text!r} is not BUS-PORT[.PORT...], e.g. 1-1.3")
    return text


def simulator_parser() -> argparse.ArgumentParser:
    """The parser of ``dermgate simulate usb-confocal``'s options."""
    parser = argparse.ArgumentParser(
        prog="dermgate simulate usb-confocal",
        description="Simulate an RCM-1 USB confocal microscope on a Unix socket.",
    )
    parser.add_argument("--socket", required=True, help="Unix socket the emulated backend uses")
    parser.add_argument("--stacks", type=int, default=2, help="stacks to record (default 2)")
    parser.add_argument(
        "--frames",
        type=int,
        default=5,
        help="frames per stack (default 5); --mosaic: tiles, made a rows x cols grid",
    )
    parser.add_argument(
        "--first-frames",
        type=int,
        default=0,
        help="stack 1 has this many frames instead of --frames (e.g. 200000 with --size "
        "1x1: a stack absurd in frame count, not in bytes)",
    )
    parser.add_argument("--size", default="64x64", help="frame size WxH (default 64x64)")
    parser.add_argument("--bits", type=int, choices=(8, 16), default=8, help="bits per pixel")
    parser.add_argument("--mosaic", action="store_true", help="record mosaics (tile grids)")
    parser.add_argument("--report", help="write a JSON report of ACKed/refused stacks here")
    parser.add_argument(
        "--usb-port",
        default="1-1",
        type=_usb_port,
        help="the USB port the device seems plugged into, BUS-PORT[.PORT...] (default 1-1)",
    )
    parser.add_argument(
        "--usb-address", type=int, default=7, help="its USB device address (default 7)"
    )
    parser.add_argument("--seed", type=int, default=0, help="content and serial number seed")
    parser.add_argument(
        "--serial-number",
        help="the serial number the device reports (default from --seed); may hold any "
        "characters, e.g. a newline or a backslash",
    )
    parser.add_argument(
        "--fault",
        action="append",
        choices=FAULTS,
        help="trickle-garbage: the first offer of stack 1 sends one frame, then 3 garbage "
        "bytes every 50 ms and never ends, until the host NAKs it",
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="give up (exit 1) after S s")
    parser.add_argument(
        "--unplug-mid-transfer",
        action="store_true",
        help="vanish half-way through the first stack, come back after --unplug-for",
    )
    parser.add_argument("--unplug-for", type=float, default=1.0, help="seconds unplugged")
    parser.add_argument("--garbage", action="store_true", help="garbage bytes before each stack")
    parser.add_argument(
        "--reoffer", action="store_true", help="after each ACK, offer that stack once more"
    )
    parser.add_argument(
        "--announce-huge",
        action="store_true",
        help="the first offer of stack 1 is a header claiming 2^20 frames of 65535x65535 "
        "16-bit pixels (about 9 PB), and nothing more; later offers are the real stack",
    )
    parser.add_argument(
        "--ack-timeout", type=float, default=60.0, help="re-offer a stack not ACKed within S s"
    )
    parser.add_argument(
        "--retry-delay", type=float, default=0.5, help="seconds before re-offering a NAKed stack"
    )
    parser.add_argument(
        "--rate", type=float, default=0.0, help="bulk IN throughput cap in MB/s (default none)"
    )
    add_lesion_options(parser, "lesion (sent in every stack header)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser
