"""A body-shaped textured mesh for the simulator, written as OBJ, MTL, STL and JPEG.

The surface is a stack of elliptical rings whose half-widths follow a human-ish
profile (feet to head, 1750 mm), tessellated into triangles with per-vertex
normals and UVs. Front and back halves use two materials, each with its own
texture. Pure Python (no numpy), written ring by ring so memory stays small
whatever ``target_bytes`` asks for; a 30 MB OBJ takes about a second.
"""

from __future__ import annotations

import io
import itertools
import math
import random
import struct
from collections.abc import Iterator
from typing import BinaryIO, Final

from PIL import Image, ImageDraw, ImageFilter

__all__ = ["grid_for", "make_texture_jpeg", "write_mtl", "write_obj", "write_stl"]

HEIGHT_MM: Final = 1750.0
#: (height, half-width, half-depth) in mm, feet to crown.
_PROFILE: Final = (
    (0.0, 110.0, 60.0),
    (80.0, 120.0, 70.0),
    (450.0, 150.0, 90.0),
    (850.0, 190.0, 120.0),
    (1050.0, 160.0, 105.0),
    (1300.0, 210.0, 115.0),
    (1420.0, 200.0, 100.0),
    (1480.0, 60.0, 60.0),
    (1560.0, 85.0, 95.0),
    (1680.0, 80.0, 90.0),
    (1750.0, 4.0, 4.0),
)
_BYTES_PER_POINT: Final = 150


def grid_for(target_bytes: int) -> tuple[int, int]:
    """(rings, segments) for an OBJ of roughly ``target_bytes``."""
    points = max(64, target_bytes // _BYTES_PER_POINT)
    segments = max(8, int(math.sqrt(points / 1.5)))
    rings = max(4, points // segments)
    return rings, segments


def _half_axes(z: float) -> tuple[float, float]:
    for (z0, a0, b0), (z1, a1, b1) in itertools.pairwise(_PROFILE):
        if z <= z1:
            t = (z - z0) / (z1 - z0)
            s = t * t * (3 - 2 * t)  # smoothstep between control rings
            return a0 + (a1 - a0) * s, b0 + (b1 - b0) * s
    return _PROFILE[-1][1], _PROFILE[-1][2]


def _ring(k: int, rings: int, cos_sin: list[tuple[float, float]]) -> Iterator[str]:
    z = HEIGHT_MM * k / (rings - 1)
    a, b = _half_axes(z)
    for cos_t, sin_t in cos_sin:
        yield f"v {a * cos_t:.3f} {b * sin_t:.3f} {z:.3f}\n"


def write_obj(out: BinaryIO, material_library: str, rings: int, segments: int) -> None:
    """Write the mesh as OBJ (``mtllib`` names ``material_library``)."""
    angles = [2 * math.pi * j / segments for j in range(segments)]
    cos_sin = [(math.cos(t), math.sin(t)) for t in angles]
    out.write(f"# DermGate reference body scan\nmtllib {material_library}\n".encode())
    for k in range(rings):
        out.write("".join(_ring(k, rings, cos_sin)).encode())
    for k in range(rings):
        v = k / (rings - 1)
        out.write("".join(f"vt {j / segments:.5f} {v:.5f}\n" for j in range(segments)).encode())
    for k in range(rings):
        a, b = _half_axes(HEIGHT_MM * k / (rings - 1))
        lines = []
        for cos_t, sin_t in cos_sin:
            nx, ny = cos_t / a, sin_t / b
            norm = math.hypot(nx, ny) or 1.0
            lines.append(f"vn {nx / norm:.4f} {ny / norm:.4f} 0.0000\n")
        out.write("".join(lines).encode())
    half = segments // 2
    for material, columns in (("front", range(half)), ("back", range(half, segments))):
        out.write(f"usemtl {material}\n".encode())
        for k in range(rings - 1):
            lines = []
            for j in columns:
                j1 = (j + 1) % segments
                a = k * segments + j + 1
                b = k * segments + j1 + 1
                c = (k + 1) * segments + j1 + 1
                d = (k + 1) * segments + j + 1
                lines.append(f"f {a}/{a}/{a} {b}/{b}/{b} {c}/{c}/{c}\n")
                lines.append(f"f {a}/{a}/{a} {c}/{c}/{c} {d}/{d}/{d}\n")
            out.write("".join(lines).encode())


def write_mtl(out: BinaryIO, front_texture: str, back_texture: str) -> None:
    """Write the two materials, each with its diffuse texture map."""
    for name, texture in (("front", front_texture), ("back", back_texture)):
        out.write(
            (
                f"newmtl {name}\nKa 1.000 1.000 1.000\nKd 1.000 1.000 1.000\n"
                f"Ks 0.000 0.000 0.000\nNs 10.0\nd 1.0\nillum 1\nmap_Kd {texture}\n\n"
            ).encode()
        )


def write_stl(out: BinaryIO, rings: int, segments: int) -> None:
    """Write the mesh (without UVs) as binary STL."""
    angles = [2 * math.pi * j / segments for j in range(segments)]
    cos_sin = [(math.cos(t), math.sin(t)) for t in angles]
    triangles = 2 * (rings - 1) * segments
    out.write(b"DermGate reference body scan".ljust(80, b" "))
    out.write(struct.pack("<I", triangles))
    previous = None
    for k in range(rings):
        z = HEIGHT_MM * k / (rings - 1)
        a, b = _half_axes(z)
        ring = [(a * c, b * s, z) for c, s in cos_sin]
        if previous is not None:
            chunk = bytearray()
            for j in range(segments):
                j1 = (j + 1) % segments
                p0, p1, p2, p3 = previous[j], previous[j1], ring[j1], ring[j]
                c, s = cos_sin[j]
                for tri in ((p0, p1, p2), (p0, p2, p3)):
                    chunk += struct.pack("<3f", c, s, 0.0)
                    for point in tri:
                        chunk += struct.pack("<3f", *point)
                    chunk += b"\x00\x00"
            out.write(chunk)
        previous = ring


def make_texture_jpeg(seed: int, side: int = 1024, back: bool = False) -> bytes:
    """A skin-toned texture with freckles and a few moles (4:2:0 baseline JPEG)."""
    rng = random.Random(seed * 2 + int(back))
    base = (224, 180, 150) if not back else (214, 168, 138)
    image = Image.new("RGB", (side, side), base)
    draw = ImageDraw.Draw(image)
    for _ in range(side * 2):
        x, y = rng.randrange(side), rng.randrange(side)
        r = rng.choice((1, 1, 2, 3))
        tone = rng.randrange(-40, 10)
        draw.ellipse(
            (x - r, y - r, x + r, y + r),
            fill=(base[0] + tone, base[1] + tone - 10, base[2] + tone - 15),
        )
    for _ in range(12):
        x, y, r = rng.randrange(side), rng.randrange(side), rng.randrange(4, 14)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=(95, 60, 45))
    image = image.filter(ImageFilter.GaussianBlur(1.2))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=88, subsampling="4:2:0")
    return out.getvalue()
