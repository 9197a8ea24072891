"""Synthetic dermoscopic JPEGs for the simulator and tests (no patient data, ever).

Each image looks like a contact dermatoscope's frame: skin-toned background with
blotchy texture and sensor grain, a pigmented lesion with an irregular, soft border
and darker network inside, a few hairs, and the dark circular vignette of the
dermatoscope's optics. Images are deterministic per seed and built with Pillow alone:
the expensive layers are made at low resolution and upscaled, only the grain is
made at full size.
"""

from __future__ import annotations

import io
import math
import random

from PIL import Image, ImageChops, ImageDraw, ImageFilter

__all__ = ["SUBSAMPLINGS", "make_dermoscopy_jpeg"]

SUBSAMPLINGS = ("4:4:4", "4:2:2", "4:2:0")
"""Chroma subsampling modes :func:`make_dermoscopy_jpeg` accepts."""

_SKIN_TONES = ((233, 190, 160), (222, 170, 138), (205, 150, 118), (185, 128, 98), (240, 200, 175))
_LESION_TONES = ((150, 92, 62), (165, 105, 72), (128, 78, 58), (140, 96, 84))


def _noise(rng: random.Random, size: tuple[int, int], amplitude: int) -> Image.Image:
    """Grey noise around 128, triangular distribution of +/- ``amplitude``, from ``rng``.

    (``Image.effect_noise`` would be faster still but draws from the C library's
    global ``rand()``, so its output depends on what ran before: not reproducible.)
    """
    count = size[0] * size[1]
    first = Image.frombytes("L", size, rng.randbytes(count))
    second = Image.frombytes("L", size, rng.randbytes(count))
    mixed = ImageChops.add(first, second, 2.0)
    return mixed.point(lambda v: 128 + (v - 128) * amplitude // 128)


def _blotches(rng: random.Random, size: tuple[int, int], scale: int, amplitude: int) -> Image.Image:
    """Low-frequency grey noise (mean 128): noise at ``size/scale``, smoothed, upscaled."""
    small = (max(2, size[0] // scale), max(2, size[1] // scale))
    noise = _noise(rng, small, 127).filter(ImageFilter.GaussianBlur(1.2))
    noise = noise.point(lambda v: max(0, min(255, 128 + (v - 128) * amplitude // 32)))
    return noise.resize(size, Image.Resampling.BICUBIC)


def _lesion_mask(rng: random.Random, size: tuple[int, int]) -> Image.Image:
    """An irregular blob (radius varying with angle), soft-edged, at ``size``."""
    width, height = size
    cx = width * rng.uniform(0.42, 0.58)
    cy = height * rng.uniform(0.42, 0.58)
    radius = min(width, height) * rng.uniform(0.17, 0.27)
    harmonics = [
        (k, rng.uniform(0.02, 0.18) / math.sqrt(k), rng.uniform(0, math.tau)) for k in range(2, 9)
    ]
    elongation = rng.uniform(0.75, 1.25)
    points = []
    for step in range(180):
        theta = math.tau * step / 180
        r = radius * (1 + sum(a * math.sin(k * theta + phase) for k, a, phase in harmonics))
        points.append((cx + r * math.cos(theta) * elongation, cy + r * math.sin(theta)))
    mask = Image.new("L", size, 0)
    draw = ImageDraw.Draw(mask)
    draw.polygon(points, fill=255)
    # A few satellite dots/globules near the border.
    for _ in range(rng.randrange(3, 9)):
        angle = rng.uniform(0, math.tau)
        dist = radius * rng.uniform(0.9, 1.25)
        dot = radius * rng.uniform(0.02, 0.06)
        x, y = cx + dist * math.cos(angle) * elongation, cy + dist * math.sin(angle)
        draw.ellipse((x - dot, y - dot, x + dot, y + dot), fill=rng.randrange(120, 255))
    return mask.filter(ImageFilter.GaussianBlur(radius * 0.06))


def _vignette(size: tuple[int, int], rng: random.Random) -> Image.Image:
    """The dermatoscope's round field of view: white inside, soft fall-off to black."""
    width, height = size
    low = (max(16, width // 4), max(16, height // 4))
    radius = min(low) * rng.uniform(0.44, 0.49)
    cx = low[0] / 2 + rng.uniform(-0.02, 0.02) * low[0]
    cy = low[1] / 2 + rng.uniform(-0.02, 0.02) * low[1]
    disc = Image.new("L", low, 0)
    ImageDraw.Draw(disc).ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=255)
    disc = disc.filter(ImageFilter.GaussianBlur(radius * 0.015))
    return disc.resize(size, Image.Resampling.BILINEAR)


def _hairs(rng: random.Random, image: Image.Image) -> None:
    """Draw a few dark, slightly curved hairs across the image."""
    width, height = image.size
    draw = ImageDraw.Draw(image)
    scale = min(width, height) / 1944
    for _ in range(rng.randrange(0, 5)):
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        angle = rng.uniform(0, math.tau)
        bend = rng.uniform(-0.0008, 0.0008) / max(scale, 0.05)
        length = rng.uniform(0.3, 0.8) * min(width, height)
        shade = rng.randrange(25, 60)
        points = []
        for i in range(40):
            step = length * i / 39
            a = angle + bend * step
            points.append((x + step * math.cos(a), y + step * math.sin(a)))
        draw.line(points, fill=(shade, shade - 10, shade - 15), width=max(1, round(4 * scale)))


def make_dermoscopy_jpeg(
    seed: int, *, width: int = 2592, height: int = 1944, subsampling: str = "4:2:0"
) -> bytes:
    """Return a synthetic dermoscopic JPEG (baseline, quality 95), same bytes per seed.

    ``subsampling`` is ``"4:2:0"`` (what handheld dermatoscopes produce), ``"4:2:2"``
    or ``"4:4:4"``. At the default 2592 × 1944 an image is a few megabytes.
    """
    if subsampling not in SUBSAMPLINGS:
        raise ValueError(f"subsampling must be one of {SUBSAMPLINGS}")
    if width < 16 or height < 16:
        raise ValueError("image must be at least 16 x 16 pixels")
    rng = random.Random(seed)
    size = (width, height)
    low = (max(16, width // 8), max(16, height // 8))

    # Skin: a base tone with low-frequency blotches (erythema, shading).
    tone = rng.choice(_SKIN_TONES)
    skin_low = Image.new("RGB", low, tone)
    blotch = _blotches(rng, low, 6, 40)
    redness = Image.merge(
        "RGB",
        (
            blotch.point(lambda v: 128 + (v - 128) // 3),
            blotch.point(lambda v: 128 + (v - 128) // 2),
            blotch.point(lambda v: 128 + (v - 128) // 2),
        ),
    )
    skin_low = ImageChops.add(skin_low, redness, 1.0, -128)

    # Lesion: brown tone darkened by a pigment network (mid-frequency noise).
    lesion_tone = rng.choice(_LESION_TONES)
    network = _blotches(rng, low, 2, 48).point(lambda v: max(90, min(255, v + 60)))
    lesion_low = ImageChops.multiply(
        Image.new("RGB", low, lesion_tone), Image.merge("RGB", (network, network, network))
    )
    centre = _lesion_mask(rng, low).point(lambda v: v * 7 // 10)
    core = _lesion_mask(rng, low).point(lambda v: v * 4 // 10)
    darker = ImageChops.multiply(lesion_low, Image.new("RGB", low, (150, 150, 175)))
    picture_low = Image.composite(lesion_low, skin_low, _lesion_mask(rng, low))
    picture_low = Image.composite(darker, picture_low, ImageChops.multiply(centre, core))
    picture = picture_low.resize(size, Image.Resampling.BICUBIC)

    # Fine detail at full size: skin lines and sensor grain.
    _hairs(rng, picture)
    half = (max(8, width // 2), max(8, height // 2))
    texture = _noise(rng, half, 40)
    texture = texture.resize(size, Image.Resampling.BILINEAR)
    grain = ImageChops.add(texture, _noise(rng, size, rng.randrange(36, 48)), 1.0, -128)
    picture = ImageChops.add(picture, Image.merge("RGB", (grain, grain, grain)), 1.0, -128)

    picture = ImageChops.multiply(picture, _vignette(size, rng).convert("RGB"))
    # Sensor noise is still there where the optics give no light.
    dark = Image.frombytes("L", size, rng.randbytes(width * height)).point(
        lambda v: 128 + (v - 128) * 12 // 128
    )
    picture = ImageChops.add(picture, Image.merge("RGB", (dark, dark, dark)), 1.0, -120)

    out = io.BytesIO()
    picture.save(out, "JPEG", quality=95, subsampling=subsampling, optimize=False)
    return out.getvalue()
