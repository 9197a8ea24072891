"""What the simulated RCM-1 is and records, without I/O: its USB descriptors and stacks.

:func:`descriptors` is the device as the emulated USB backend reports it;
:func:`plan_stack` the stacks it recorded; :func:`stack_frames` the pixels of each
frame, made while they are sent (never a whole stack in memory). The simulator
(:mod:`.simulator`) runs the offer/ACK conversation and the socket.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from drivers.usb_confocal import protocol as p

__all__ = [
    "FIRMWARE",
    "FRAME_MS",
    "MANUFACTURER",
    "MODEL",
    "WAVELENGTH_NM",
    "SimStack",
    "descriptors",
    "plan_stack",
    "stack_frames",
]

MANUFACTURER = "DermGate Reference Devices"
MODEL = "RCM-1 Confocal Microscope"
FIRMWARE = "3.1.0"
WAVELENGTH_NM = 830
FRAME_MS = 111.0  # ~9 frames a second, as in-vivo reflectance confocal microscopes scan


def descriptors(port: str = "1-1", address: int = 7) -> dict[str, Any]:
    """The device's USB descriptors as the emulated backend reports them."""
    endpoint = {
        "bLength": 7,
        "bDescriptorType": 5,
        "bmAttributes": 0x02,
        "wMaxPacketSize": 512,
        "bInterval": 0,
        "bRefresh": 0,
        "bSynchAddress": 0,
    }
    interface = {
        "bLength": 9,
        "bDescriptorType": 4,
        "bInterfaceNumber": p.INTERFACE,
        "bAlternateSetting": 0,
        "bNumEndpoints": 2,
        "bInterfaceClass": 0xFF,
        "bInterfaceSubClass": 0,
        "bInterfaceProtocol": 0,
        "iInterface": 0,
        "endpoints": [
            {**endpoint, "bEndpointAddress": p.EP_IN},
            {**endpoint, "bEndpointAddress": p.EP_OUT},
        ],
    }
    configuration = {
        "bLength": 9,
        "bDescriptorType": 2,
        "wTotalLength": 32,
        "bNumInterfaces": 1,
        "bConfigurationValue": 1,
        "iConfiguration": 0,
        "bmAttributes": 0x80,
        "bMaxPower": 250,
        "interfaces": [[interface]],
    }
    bus_text, _, path = port.partition("-")
    bus, ports = int(bus_text), [int(n) for n in path.split(".")]
    return {
        "device": {
            "bLength": 18,
            "bDescriptorType": 1,
            "bcdUSB": 0x0200,
            "bDeviceClass": 0xFF,
            "bDeviceSubClass": 0,
            "bDeviceProtocol": 0,
            "bMaxPacketSize0": 64,
            "idVendor": p.VENDOR_ID,
            "idProduct": p.PRODUCT_ID,
            "bcdDevice": 0x0310,
            "iManufacturer": 1,
            "iProduct": 2,
            "iSerialNumber": 3,
            "bNumConfigurations": 1,
            "address": address,
            "bus": bus,
            "port_number": ports[-1],
            "port_numbers": ports,
            "speed": 3,
            "configurations": [configuration],
        }
    }


@dataclass(slots=True)
class SimStack:
    """One stack the device holds until the host ACKs it."""

    index: int
    header: p.StackHeader
    acked: bool = False
    reoffer_pending: bool = False
    retry_at: float = 0.0
    offers: int = 0
    sha256: str = ""


def plan_stack(
    index: int,
    *,
    prefix: str,
    frames: int,
    first_frames: int,
    mosaic: bool,
    width: int,
    height: int,
    bits: int,
    lesion: tuple[str | None, str | None, str | None] = (None, None, None),
) -> SimStack:
    """Stack ``index`` (0-based) as the device records it: ``frames`` frames (stack 1
    ``first_frames`` when set), a z-stack or a mosaic grid of about that many tiles;
    ``lesion`` is the (lesion id, anatomic site, laterality) the user set, if any."""
    if index == 0 and first_frames:
        frames = first_frames
    rows = cols = 0
    if mosaic:
        cols = max(1, int(frames**0.5))
        rows = max(1, frames // cols)
        frames = rows * cols
    header = p.StackHeader(
        stack_id=f"{prefix}-{index + 1:05d}",
        kind="mosaic" if mosaic else "z-stack",
        frames=frames,
        width=width,
        height=height,
        bits=bits,
        pixel_spacing_um=0.5,
        z_step_um=0.0 if mosaic else 4.0,
        wavelength_nm=WAVELENGTH_NM,
        objective="30x/0.9 water immersion",
        magnification=30.0,
        numerical_aperture=0.9,
        acquired_at=datetime.now().replace(microsecond=0).isoformat(),
        tile_rows=rows,
        tile_cols=cols,
        frame_ms=FRAME_MS,
        lesion_id=lesion[0],
        anatomic_site=lesion[1],
        laterality=lesion[2],
    )
    return SimStack(index, header)


def stack_frames(stack: SimStack, seed: int, sha: Any) -> Iterator[tuple[float, bytes]]:
    """Each frame of ``stack`` as (depth in µm, pixels), made as it is sent: one random
    base frame, rotated per frame and darkened with depth; ``sha`` is fed the pixels."""
    header = stack.header
    rng = random.Random(seed * 1_000_003 + stack.index)
    size = header.frame_bytes
    base = rng.randbytes(size)
    step = (size // max(header.frames, 1) + 1) | 1
    tables: dict[float, bytes] = {}  # by gain: deep frames share one (many tiny frames)
    for i in range(header.frames):
        offset = (i * step) % size
        rotated = base[offset:] + base[:offset]
        depth = 50.0 if header.kind == "mosaic" else i * header.z_step_um
        gain = max(0.25, 1.0 - depth / 400.0)
        table = tables.get(gain)
        if table is None:
            table = bytes(min(255, int(v * gain)) for v in range(256))
            if len(tables) < 1024:
                tables[gain] = table
        pixels = rotated.translate(table)
        sha.update(pixels)
        yield depth, pixels
