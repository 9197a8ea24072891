"""Checks of an export's files before anything is captured (sans-I/O over streams).

Each check reads its file once, line by line or in bounded blocks (a line longer
than 64 KiB is itself a defect), so memory stays flat for meshes of any size. What
a check finds wrong raises :class:`~drivers.scanner_export.manifest.ExportRefused`
with a reason in plain words that names the kind of file and the line, never the
file's name (names may hold patient names).

* **OBJ** (Wavefront): text; ``v`` (3, 4, 6 or 7 finite numbers), ``vt`` (1-3),
  ``vn`` (3), ``f``/``l``/``p`` whose indices (``v``, ``v/vt``, ``v//vn``,
  ``v/vt/vn``; negative = relative) point at elements defined before them, ``mtllib``
  names (collected: the material libraries the mesh uses); other statements are
  passed over if their keyword is a plain word. At least one vertex and one face.
  A file whose last line has no line end is taken as truncated (exporters end
  every line; a copy cut short ends mid-line).
* **MTL**: text; at least one ``newmtl``; ``map_*``, ``bump``, ``disp``, ``decal``,
  ``refl``, ``norm`` name a texture: the file name is the statement's last token
  (options such as ``-s 1 1 1`` come before it; names with spaces are not
  supported). Same line-end rule as OBJ.
* **STL**: binary (80-byte header, a triangle count, 50 bytes per triangle, the
  size must match exactly) or ASCII (``solid`` … ``facet normal`` / ``outer loop`` /
  ``vertex`` ×3 / ``endloop`` / ``endfacet`` … ``endsolid``); at least one triangle.
* **Textures**: JPEG (a header DICOM can carry unchanged,
  :func:`gateway.driver_api.check_can_carry`, and the End Of Image marker at the end),
  PNG (signature and final IEND chunk), TIFF (byte-order header).
"""

from __future__ import annotations

import math
import os
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO, Final

from drivers.scanner_export.manifest import ExportRefused
from gateway.driver_api import CannotCarry, ContentType, UnreadableImage, check_can_carry

__all__ = [
    "MAX_LINE",
    "ObjSummary",
    "check_image",
    "check_stl",
    "scan_mtl",
    "scan_obj",
]

MAX_LINE: Final = 1 << 16
_BLOCK: Final = 1 << 20
_KEYWORD: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CONTROL: Final = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_TEXTURE_STATEMENTS: Final = frozenset({"bump", "disp", "decal", "refl", "norm"})
_PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"
_PNG_IEND: Final = b"\x00\x00\x00\x00IEND\xaeB`\x82"


@dataclass(frozen=True, slots=True)
class ObjSummary:
    """What an OBJ file holds and which material libraries it names (in order)."""

    vertices: int
    faces: int
    material_libraries: tuple[str, ...]


def _lines(stream: BinaryIO, kind: str) -> Iterator[tuple[int, list[str]]]:
    """(line number, whitespace-separated tokens) of each non-empty, non-comment line.

    Reads 1 MiB blocks (a line may span two); control bytes are looked for once per
    block, which keeps a 40 MB mesh to a few seconds.
    """
    number = 0
    rest = b""
    while True:
        block = stream.read(_BLOCK)
        if not block:
            break
        if _CONTROL.search(block):
            raise ExportRefused(f"the {kind} file is not text (binary data after line {number})")
        lines = (rest + block).split(b"\n")
        rest = lines.pop()
        if len(rest) > MAX_LINE:
            raise ExportRefused(
                f"the {kind} file has a line longer than 64 KiB (line {number + 1})"
            )
        for raw in lines:
            number += 1
            if len(raw) > MAX_LINE:
                raise ExportRefused(
                    f"the {kind} file has a line longer than 64 KiB (line {number})"
                )
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                text = raw.decode("latin-1")
            if "#" in text:
                text = text.split("#", 1)[0]
            tokens = text.split()
            if tokens:
                yield number, tokens
    if rest.strip():
        raise ExportRefused(f"the {kind} file ends in the middle of a line: it is truncated")


def _numbers(tokens: list[str], counts: tuple[int, ...], kind: str, number: int) -> None:
    if len(tokens) not in counts:
        raise ExportRefused(f"the {kind} file is damaged: wrong number of values at line {number}")
    for token in tokens:
        try:
            value = float(token)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise ExportRefused(f"the {kind} file is damaged: not a number at line {number}")


def _index(token: str, count: int, number: int) -> None:
    try:
        value = int(token)
    except ValueError:
        value = 0
    if value == 0 or value > count or -value > count:
        raise ExportRefused(f"the OBJ file is damaged: a face refers to nothing at line {number}")


def scan_obj(stream: BinaryIO) -> ObjSummary:
    """Check an OBJ file; return what it holds. Raises :class:`ExportRefused`."""
    vertices = texcoords = normals = faces = 0
    libraries: list[str] = []
    for number, tokens in _lines(stream, "OBJ"):
        keyword, args = tokens[0], tokens[1:]
        if keyword == "v":
            _numbers(args, (3, 4, 6, 7), "OBJ", number)
            vertices += 1
        elif keyword == "vt":
            _numbers(args, (1, 2, 3), "OBJ", number)
            texcoords += 1
        elif keyword == "vn":
            _numbers(args, (3,), "OBJ", number)
            normals += 1
        elif keyword in ("f", "l", "p"):
            minimum = {"f": 3, "l": 2, "p": 1}[keyword]
            if len(args) < minimum:
                raise ExportRefused(f"the OBJ file is damaged: too few corners at line {number}")
            for corner in args:
                parts = corner.split("/")
                if len(parts) > 3:
                    raise ExportRefused(f"the OBJ file is damaged: bad corner at line {number}")
                _index(parts[0], vertices, number)
                if len(parts) > 1 and parts[1]:
                    _index(parts[1], texcoords, number)
                if len(parts) > 2 and parts[2]:
                    _index(parts[2], normals, number)
            if keyword == "f":
                faces += 1
        elif keyword == "mtllib":
            if not args:
                raise ExportRefused(f"the OBJ file names no material library at line {number}")
            libraries.extend(a for a in args if a not in libraries)
        elif not _KEYWORD.fullmatch(keyword):
            raise ExportRefused(f"the OBJ file is damaged: unknown statement at line {number}")
    if vertices == 0 or faces == 0:
        raise ExportRefused("the OBJ file holds no mesh (no vertices or no faces)")
    return ObjSummary(vertices=vertices, faces=faces, material_libraries=tuple(libraries))


def scan_mtl(stream: BinaryIO) -> tuple[str, ...]:
    """Check an MTL file; return the texture names it uses, in order, each once."""
    materials = 0
    textures: list[str] = []
    for number, tokens in _lines(stream, "MTL"):
        keyword, args = tokens[0], tokens[1:]
        lowered = keyword.lower()
        if lowered == "newmtl":
            if not args:
                raise ExportRefused(f"the MTL file has a nameless material at line {number}")
            materials += 1
        elif lowered.startswith("map_") or lowered in _TEXTURE_STATEMENTS:
            if not args or args[-1].startswith("-"):
                raise ExportRefused(f"the MTL file names no texture file at line {number}")
            if args[-1] not in textures:
                textures.append(args[-1])
        elif lowered in ("ka", "kd", "ks", "ke", "tf"):
            if args and args[0] in ("spectral", "xyz"):
                continue
            _numbers(args, (1, 3), "MTL", number)
        elif lowered in ("ns", "ni", "d", "tr", "illum", "sharpness"):
            _numbers(args, (1,), "MTL", number)
        elif not _KEYWORD.fullmatch(keyword):
            raise ExportRefused(f"the MTL file is damaged: unknown statement at line {number}")
    if materials == 0:
        raise ExportRefused("the MTL file defines no material")
    return tuple(textures)


def check_stl(stream: BinaryIO) -> int:
    """Check an STL file (binary or ASCII); return its number of triangles."""
    size = _size(stream)
    header = stream.read(84)
    if len(header) == 84:
        (count,) = struct.unpack_from("<I", header, 80)
        if count > 0 and size == 84 + 50 * count:
            return int(count)
    stream.seek(0)
    if not header.lstrip().startswith(b"solid"):
        raise ExportRefused("the STL file is neither binary STL of the right size nor ASCII STL")
    return _ascii_stl(stream)


def _ascii_stl(stream: BinaryIO) -> int:
    state, triangles, corners = "start", 0, 0
    for number, tokens in _lines(stream, "STL"):
        word = tokens[0].lower()
        expected = {
            "start": ("solid",),
            "solid": ("facet", "endsolid"),
            "facet": ("outer",),
            "loop": ("vertex", "endloop"),
            "endloop": ("endfacet",),
            "end": (),
        }[state]
        if word not in expected:
            raise ExportRefused(f"the STL file is damaged at line {number}")
        if word == "solid":
            state = "solid"
        elif word == "facet":
            if tokens[1:2] != ["normal"]:
                raise ExportRefused(f"the STL file is damaged at line {number}")
            _numbers(tokens[2:], (3,), "STL", number)
            state = "facet"
        elif word == "outer":
            state, corners = "loop", 0
        elif word == "vertex":
            _numbers(tokens[1:], (3,), "STL", number)
            corners += 1
        elif word == "endloop":
            if corners < 3:
                raise ExportRefused(
                    f"the STL file has a facet with too few corners (line {number})"
                )
            state = "endloop"
        elif word == "endfacet":
            triangles += 1
            state = "solid"
        elif word == "endsolid":
            state = "end"
    if state != "end":
        raise ExportRefused("the STL file ends before endsolid: it is truncated")
    if triangles == 0:
        raise ExportRefused("the STL file holds no triangles")
    return triangles


def check_image(stream: BinaryIO, kind: str) -> None:
    """Check a texture image (``kind``: JPEG, PNG or TIFF) is whole and of its kind."""
    size = _size(stream)
    stream.seek(0)
    if kind == "JPEG":
        try:
            # Found only at wrapping, the mesh would reach the PACS without it.
            check_can_carry(stream, ContentType.JPEG)
        except UnreadableImage as err:
            raise ExportRefused("a texture JPEG is damaged or not a JPEG") from err
        except CannotCarry as err:
            raise ExportRefused(f"a texture cannot be carried in DICOM unchanged: {err}") from err
        stream.seek(max(0, size - 2))
        if stream.read(2) != b"\xff\xd9":
            raise ExportRefused("a texture JPEG ends without its End Of Image marker: truncated")
    elif kind == "PNG":
        if stream.read(8) != _PNG_SIGNATURE:
            raise ExportRefused("a texture PNG is damaged or not a PNG")
        stream.seek(max(0, size - 12))
        if stream.read(12) != _PNG_IEND:
            raise ExportRefused("a texture PNG ends without its IEND chunk: truncated")
    elif kind == "TIFF":
        if stream.read(4) not in (b"II*\x00", b"MM\x00*"):
            raise ExportRefused("a texture TIFF is damaged or not a TIFF")
    else:
        raise ExportRefused("a texture is not a JPEG, PNG or TIFF image")
    stream.seek(0)


def _size(stream: BinaryIO) -> int:
    stream.seek(0, os.SEEK_END)
    size = stream.tell()
    stream.seek(0)
    return size
