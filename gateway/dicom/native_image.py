"""Native pixels from a TIFF or PNG: decoded once, checked (size, depth, colour), and
handed out in bands, so that a 40-megapixel photo never sits in memory twice.

:func:`check_native_image` lets a driver refuse an image before acknowledging it;
:mod:`gateway.dicom.photo` writes the same decoding into a VL Photographic object.
"""

from __future__ import annotations

import contextlib
import struct
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Final

from gateway.core.capture import ContentType
from gateway.dicom.errors import WrapError

if TYPE_CHECKING:  # Pillow is imported when an image is decoded, not by an idle box
    from PIL import Image

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "MAX_NATIVE_PIXELS",
    "QUARANTINED",
    "bands",
    "check_native_image",
    "decoded",
]

#: Largest TIFF/PNG transcoded to native pixels: 8192 x 8192 (an 8K texture),
#: which Pillow decodes into about 270 MB.
MAX_NATIVE_PIXELS: Final = 8192 * 8192
#: The ``max_pixels`` of a device that does not set it: 40 megapixels (about 160 MB
#: decoded). JPEGs are carried without decoding and are not limited by it.
DEFAULT_MAX_PIXELS: Final = 40_000_000
BAND_BYTES: Final = 4 << 20
QUARANTINED: Final = "the capture is kept and quarantined"


def check_native_image(
    source: Path | BinaryIO, content_type: ContentType, max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[int, int]:
    """Decode a TIFF or PNG once, as :func:`write_vl_photographic_native` would, and
    return its (columns, rows); raise :class:`WrapError` with the reason it cannot be
    carried. Lets a driver refuse an image before acknowledging it. Blocking.
    ``source`` is a path or a file opened for reading (read from its start).
    """
    content = ContentType(content_type)
    if content not in (ContentType.TIFF, ContentType.PNG):
        raise WrapError(f"the native photo writer does not take {content.value}; {QUARANTINED}")
    kind = "TIFF" if content is ContentType.TIFF else "PNG"
    if not isinstance(source, Path):
        source.seek(0)
        with decoded(source, kind, max_pixels) as (image, _monochrome_image):
            return image.size
    with source.open("rb") as fh, decoded(fh, kind, max_pixels) as (image, _monochrome_image):
        return image.size


#: What Pillow raises for a damaged file besides OSError (seen with fuzzed TIFFs).
_DECODER_ERRORS = (
    SyntaxError,
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    struct.error,
    EOFError,
)


@contextlib.contextmanager
def decoded(fh: BinaryIO, kind: str, max_pixels: int) -> Iterator[tuple[Image.Image, bool]]:
    """The image decoded (whole, once), and whether it is monochrome; refuses what
    cannot be carried losslessly, and, from the header before decoding, images of
    more than ``max_pixels``. Decoder failures become WrapError."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(fh, formats=[kind])
    except Image.DecompressionBombError as err:
        raise _too_large(kind, None, max_pixels) from err
    except (UnidentifiedImageError, SyntaxError, ValueError, struct.error, EOFError) as err:
        raise WrapError(f"the capture is not a readable {kind} image; {QUARANTINED}") from err
    except OSError as err:
        if err.errno is not None:
            raise
        raise WrapError(f"the capture is not a readable {kind} image; {QUARANTINED}") from err
    with image:
        columns, rows = image.size
        if columns <= 0 or rows <= 0:
            raise WrapError(f"the {kind} image has no pixels; {QUARANTINED}")
        if columns * rows > min(max_pixels, MAX_NATIVE_PIXELS):
            raise _too_large(kind, (columns, rows), min(max_pixels, MAX_NATIVE_PIXELS))
        try:
            # Counting images reads every directory of a TIFF: a damaged later one
            # raises whatever the decoder meets (TypeError "Missing dimensions", …).
            frames = int(getattr(image, "n_frames", 1))
            _check_depth(image, kind)
        except _DECODER_ERRORS as err:
            raise WrapError(f"the capture is not a readable {kind} image; {QUARANTINED}") from err
        if frames != 1:
            raise WrapError(
                f"the {kind} file holds {frames} images; DermGate takes one image "
                f"per file; {QUARANTINED}"
            )
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                image.load()
        except OSError as err:
            if err.errno is not None:
                raise
            raise WrapError(
                f"the {kind} image is damaged or truncated ({_plain(err)}); {QUARANTINED}"
            ) from err
        except (*_DECODER_ERRORS, MemoryError) as err:
            raise WrapError(f"the {kind} image is damaged ({_plain(err)}); {QUARANTINED}") from err
        yield image, _monochrome(image, kind)


def _too_large(kind: str, size: tuple[int, int] | None, limit: int) -> WrapError:
    declared = f"{size[0]} x {size[1]} pixels" if size is not None else "too many pixels"
    return WrapError(
        f"the {kind} image declares {declared}, more than this device's max_pixels "
        f"({limit}); DermGate decodes TIFF and PNG images whole, so larger ones are "
        f"refused (JPEGs are not limited); {QUARANTINED}"
    )


def _plain(err: Exception) -> str:
    """A decoder's message, short and without anything but the words (no paths)."""
    text = str(err).split("\n", 1)[0]
    return text[:120] if text and "/" not in text else type(err).__name__


def _check_depth(image: Image.Image, kind: str) -> None:
    """Refuse more than 8 bits per sample before decoding (VL images are 8-bit)."""
    from PIL import TiffImagePlugin

    deep = image.mode in ("I", "F", "I;16", "I;16B", "I;16L", "I;16N")
    if isinstance(image, TiffImagePlugin.TiffImageFile):
        bits = image.tag_v2.get(TiffImagePlugin.BITSPERSAMPLE, (8,))
        values = bits if isinstance(bits, tuple) else (bits,)
        deep = deep or any(int(b) > 8 for b in values)
    for tile in getattr(image, "tile", None) or ():
        args = tile.args if hasattr(tile, "args") else tile[3]
        rawmode = args[0] if isinstance(args, tuple) and args else args
        if isinstance(rawmode, str) and (";16" in rawmode or ";32" in rawmode):
            deep = True
    if deep:
        raise WrapError(
            f"the {kind} image has more than 8 bits per sample; VL Photographic images "
            f"are 8-bit and DermGate does not reduce precision; {QUARANTINED}"
        )


def _monochrome(image: Image.Image, kind: str) -> bool:
    """True for grey images; refuses colour models that cannot become RGB losslessly."""
    mode = image.mode
    if mode in ("1", "L"):
        return True
    if mode in ("RGB", "P", "PA", "RGBA", "LA", "RGBa", "La"):
        alpha = _alpha(image)
        if alpha is not None and alpha != (255, 255):
            raise WrapError(
                f"the {kind} image has transparent pixels, which a DICOM image cannot "
                f"carry; {QUARANTINED}"
            )
        if mode == "LA":
            return True
        if mode in ("P", "PA"):
            palette_mode = image.palette.mode if image.palette is not None else "RGB"
            return palette_mode == "L"
        return False
    raise WrapError(
        f"the {kind} image uses the {mode} colour model, which cannot be turned into "
        f"RGB without loss; {QUARANTINED}"
    )


def _alpha(image: Image.Image) -> tuple[int, int] | None:
    """(min, max) of the image's transparency, ``None`` when it has none."""
    if image.mode in ("RGBA", "LA", "RGBa", "La", "PA"):
        extrema = image.getchannel("A").getextrema()
        return (int(extrema[0]), int(extrema[1]))  # type: ignore[arg-type]
    if image.mode == "P" and "transparency" in image.info:
        extrema = image.convert("RGBA").getchannel("A").getextrema()
        return (int(extrema[0]), int(extrema[1]))  # type: ignore[arg-type]
    return None


def bands(image: Image.Image, mode: str, kind: str) -> Iterator[bytes]:
    """The pixels as ``mode`` bytes, a band of rows at a time (bounded copies)."""
    columns, rows = image.size
    per_row = columns * len(mode)
    step = max(1, BAND_BYTES // max(per_row, 1))
    for top in range(0, rows, step):
        band = image.crop((0, top, columns, min(rows, top + step)))
        if band.mode == "P" and "transparency" in image.info:
            band = band.convert("RGBA")
        if band.mode != mode:
            band = band.convert(mode)
        yield band.tobytes()


# --- shared modules -------------------------------------------------------------------
