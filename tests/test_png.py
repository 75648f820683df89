"""realsr's PNG encoder (realsr_cli.photo.png): every layout and bit depth decodes to the pixels written, whatever
the band size and thread count; the stream is one valid zlib stream with a correct Adler-32; metadata chunks are
readable; a wrong row count is an error, not a short file."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import png
import pytest
from PIL import Image

from realsr_cli.photo import png as png_encoder
from realsr_cli.photo.png import PngWriter, zlib_header


def _chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(tag, data) of every chunk, checking each CRC."""
    assert data[:8] == png_encoder.SIGNATURE
    chunks, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        tag, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(body, zlib.crc32(tag)), tag
        chunks.append((tag, body))
        pos += 12 + length
    return chunks


def _encode(pixels: np.ndarray, *, row_steps=None, **options) -> bytes:
    height, width = pixels.shape[:2]
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    buffer = io.BytesIO()
    writer = PngWriter(buffer, width, height, channels, 16 if pixels.dtype == np.uint16 else 8, **options)
    y = 0
    for step in row_steps or [height]:  # rows arrive in pieces, as bands of a canvas do
        writer.write(pixels[y : y + step])
        y += step
    writer.close()
    return buffer.getvalue()


def _photo_like(height: int, width: int, channels: int, dtype, seed: int = 0) -> np.ndarray:
    """Smooth gradients plus noise: compressible like a photo, with every byte value in play."""
    rng = np.random.default_rng(seed)
    top = np.iinfo(dtype).max
    yy, xx = np.mgrid[0:height, 0:width]
    base = (yy * 7 + xx * 3)[..., None] * np.arange(1, channels + 1) % (top + 1)
    noisy = base + rng.integers(-top // 50, top // 50 + 1, base.shape)
    pixels = np.clip(noisy, 0, top).astype(dtype)
    return pixels[..., 0] if channels == 1 else pixels


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_every_layout_decodes_to_the_pixels_written(channels, dtype, monkeypatch):
    monkeypatch.setattr(png_encoder, "_BAND_BYTES", 700)  # many bands, so the band seams are exercised
    pixels = _photo_like(37, 53, channels, dtype)
    data = _encode(pixels, row_steps=[1, 5, 20, 11], threads=3)
    width, height, rows, info = png.Reader(bytes=data).read()  # pypng: raw 16-bit values, its own checks
    decoded = np.vstack([np.asarray(row, dtype) for row in rows]).reshape(pixels.shape)
    assert (width, height, info["bitdepth"], info["planes"]) == (53, 37, 8 * np.dtype(dtype).itemsize, channels)
    np.testing.assert_array_equal(decoded, pixels)
    if dtype == np.uint8:  # and Pillow, which most viewers' decoders resemble
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(data))), pixels)


def test_the_bands_form_one_zlib_stream_with_a_correct_checksum(monkeypatch):
    monkeypatch.setattr(png_encoder, "_BAND_BYTES", 1000)
    pixels = _photo_like(40, 30, 3, np.uint8)
    chunks = _chunks(_encode(pixels, threads=2))
    idat = [body for tag, body in chunks if tag == b"IDAT"]
    assert len(idat) > 3
    stream = b"".join(idat)
    assert stream[:2] == zlib_header(4)
    inflater = zlib.decompressobj()
    raw = inflater.decompress(stream)  # zlib checks the Adler-32 at the end of the stream
    assert inflater.eof and not inflater.unused_data
    scanlines = np.frombuffer(raw, np.uint8).reshape(40, 1 + 30 * 3)
    assert set(scanlines[:, 0]) == {2}  # the Up filter on every row
    assert [tag for tag, _ in chunks][:1] == [b"IHDR"] and chunks[-1] == (b"IEND", b"")


def test_the_combined_checksum_is_zlibs():
    data = np.random.default_rng(1).integers(0, 256, 100_000, dtype=np.uint8).tobytes()
    for cut in (0, 1, 65520, 65521, 65522, 99_999):
        a, b = data[:cut], data[cut:]
        combined = png_encoder._adler32_combine(zlib.adler32(a), zlib.adler32(b), len(b))
        assert combined == zlib.adler32(data)


@pytest.mark.parametrize("level", [0, 1, 4, 9])
def test_levels_trade_size_for_time_and_say_so_in_the_header(level):
    pixels = _photo_like(64, 64, 3, np.uint8)
    data = _encode(pixels, level=level)
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(data))), pixels)
    assert data[data.index(b"IDAT") + 4 : data.index(b"IDAT") + 6] == zlib.compress(b"", level)[:2]
    if level == 0:  # stored: no smaller than the filtered scanlines
        assert len(data) > 64 * (1 + 64 * 3)


def test_icc_profile_and_exif_are_written_where_readers_find_them():
    exif = Image.Exif()
    exif[0x010F] = "Camera maker"
    icc = b"\0" * 16 + b"RGB " + b"profile body" * 20
    data = _encode(_photo_like(8, 8, 3, np.uint8), icc_profile=icc, exif=b"Exif\0\0" + exif.tobytes())
    tags = [tag for tag, _ in _chunks(data)]
    assert tags.index(b"iCCP") < tags.index(b"IDAT") and tags.index(b"eXIf") < tags.index(b"IDAT")
    image = Image.open(io.BytesIO(data))
    assert image.info["icc_profile"] == icc
    assert image.getexif()[0x010F] == "Camera maker"


def test_a_wrong_number_of_rows_is_an_error():
    pixels = _photo_like(10, 10, 3, np.uint8)
    writer = PngWriter(io.BytesIO(), 10, 10, 3, 8)
    writer.write(pixels[:9])
    with pytest.raises(ValueError, match="9 of the image's 10 rows"):
        writer.close()
    writer = PngWriter(io.BytesIO(), 10, 10, 3, 8)
    with pytest.raises(ValueError, match="more than the 10 rows"):
        writer.write(np.vstack([pixels, pixels[:1]]))
    writer.abort()
    with pytest.raises(ValueError, match="do not fit a 10-wide 8-bit 3-channel PNG"):
        PngWriter(io.BytesIO(), 10, 10, 3, 8).write(pixels.astype(np.uint16))
