"""The image bombs are what they claim (tiny on disk, huge once decoded), and a
61-megapixel JPEG is described from its header without decoding. The folder drivers
refusing bombs under ``dermgate run`` are in ``tests/e2e/test_image_bombs.py``.
"""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from gateway.dicom.jpeg import read_jpeg_info
from tests.support.images import BOMB_SIDE, flat_jpeg, png_bomb, tiff_bomb


def test_the_bombs_are_what_they_claim() -> None:
    png = png_bomb(BOMB_SIDE, BOMB_SIDE)
    tif = tiff_bomb(BOMB_SIDE, BOMB_SIDE)
    assert len(png) < 300_000
    assert len(tif) < 300_000
    for data, kind in ((png, "PNG"), (tif, "TIFF")):
        with Image.open(io.BytesIO(data), formats=[kind]) as image:
            assert image.size == (BOMB_SIDE, BOMB_SIDE)
            assert image.mode == "RGB"
    jpeg = flat_jpeg(9504, 6336)
    assert len(jpeg) < 2_000_000
    with Image.open(io.BytesIO(jpeg)) as image:
        assert image.size == (9504, 6336)


def test_a_61_megapixel_jpeg_is_described_without_decoding(tmp_path: Path) -> None:
    source = tmp_path / "big.jpg"
    source.write_bytes(flat_jpeg(9504, 6336))
    info = read_jpeg_info(source)
    assert (info.columns, info.rows) == (9504, 6336)
