"""Image bombs (valid PNG and TIFF files, tiny on disk, huge once decoded), flat and
small images, and a TIFF whose second directory is damaged."""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(width: int, height: int) -> bytes:
    """A complete, valid RGB PNG of one colour: tiny on disk, ``width*height*3`` decoded."""
    row = b"\x00" + b"\x00" * (width * 3)
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")
    )


def tiff_bomb(width: int, height: int) -> bytes:
    """A complete, valid RGB TIFF (one Deflate strip) of one colour, tiny on disk."""
    packer = zlib.compressobj(9)
    row = b"\x00" * (width * 3)
    strip = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    entries = [  # (tag, type, count, value)
        (256, 4, 1, width),
        (257, 4, 1, height),
        (258, 3, 3, 0),  # BitsPerSample 8,8,8: value at an offset, filled below
        (259, 3, 1, 8),  # Deflate
        (262, 3, 1, 2),  # RGB
        (273, 4, 1, 0),  # StripOffsets, filled below
        (277, 3, 1, 3),
        (278, 4, 1, height),
        (279, 4, 1, len(strip)),
        (284, 3, 1, 1),
    ]
    ifd_offset = 8
    ifd_size = 2 + 12 * len(entries) + 4
    bits_offset = ifd_offset + ifd_size
    strip_offset = bits_offset + 6
    out = bytearray(b"II*\x00" + struct.pack("<I", ifd_offset))
    out += struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        if tag == 258:
            value = bits_offset
        elif tag == 273:
            value = strip_offset
        if kind == 3 and count == 1:
            out += struct.pack("<HHIHH", tag, kind, count, value, 0)
        else:
            out += struct.pack("<HHII", tag, kind, count, value)
    out += struct.pack("<I", 0)
    out += struct.pack("<HHH", 8, 8, 8)
    out += strip
    return bytes(out)


def small_png(width: int, height: int) -> bytes:
    """A small RGB PNG of noise (it does not compress to nothing)."""
    out = io.BytesIO()
    Image.effect_noise((width, height), 40).convert("RGB").save(out, "PNG")
    return out.getvalue()


BOMB_SIDE = 8192


def flat_jpeg(width: int, height: int) -> bytes:
    """A real 4:2:0 baseline JPEG of one colour: its SOF declares ``width x height``."""
    out = io.BytesIO()
    Image.new("RGB", (width, height), (180, 150, 140)).save(out, "JPEG", quality=5)
    return out.getvalue()


def tiff_with_a_damaged_second_directory() -> bytes:
    """A valid one-image RGB TIFF whose next-directory pointer leads to a directory
    without ImageWidth/ImageLength."""
    out = io.BytesIO()
    Image.new("RGB", (37, 23), (200, 30, 30)).save(out, "TIFF")
    data = bytearray(out.getvalue())
    first = struct.unpack_from("<I", data, 4)[0]
    entries = struct.unpack_from("<H", data, first)[0]
    if len(data) % 2:
        data += b"\0"
    struct.pack_into("<I", data, first + 2 + 12 * entries, len(data))
    data += struct.pack("<H", 1) + struct.pack("<HHII", 259, 3, 1, 1) + struct.pack("<I", 0)
    return bytes(data)
