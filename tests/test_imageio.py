"""Photo I/O: every photo case round-trips through real files (orientation, ICC, EXIF, alpha, 16-bit, grayscale),
bad inputs give their one-line InputError, writes are atomic, names and formats follow the CLI's rules."""

from __future__ import annotations

import io
import os
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import png
import pytest
import tifffile
from conftest import shared_data
from PIL import Image, ImageCms, ImageOps

from realsr_cli.config import scaled_size
from realsr_cli.errors import ConfigError, InputError
from realsr_cli.photo import pixels as photo_pixels
from realsr_cli.photo import write as photo_write
from realsr_cli.photo.formats import OUTPUT_FORMATS, output_format_for, output_path
from realsr_cli.photo.pixels import compose, quantize, resize, to_pil
from realsr_cli.photo.png import PngWriter
from realsr_cli.photo.read import photo_from_array, photo_from_pil, read_image
from realsr_cli.photo.write import new_canvas, write_image

LIMIT = 64_000_000
SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _edge(name: str) -> Path:
    return shared_data("real_inputs", "edge_cases", name)


def _read(path: Path):
    return read_image(path, max_pixels=LIMIT)


def _ints(photo):
    """The photo's pixels as contiguous arrays: (rgb (H, W, 3), alpha (H, W) or None), at its own bit depth."""
    assert photo.rgb.dtype == (np.uint16 if photo.bit_depth == 16 else np.uint8)
    alpha = None if photo.alpha is None else np.ascontiguousarray(photo.alpha)
    return np.ascontiguousarray(photo.rgb), alpha


def _write_back(photo, path: Path, fmt: str, **kwargs) -> list[str]:
    rgb, alpha = _ints(photo)
    return write_image(
        path,
        rgb,
        alpha=alpha,
        grayscale=photo.grayscale,
        icc_profile=photo.icc_profile,
        exif=photo.exif,
        fmt=fmt,
        **kwargs,
    )


def _pypng_pixels(path: Path) -> np.ndarray:
    width, height, rows, info = png.Reader(filename=str(path)).read()
    return np.vstack([np.frombuffer(row, np.uint16) for row in rows]).reshape(height, width, info["planes"])


def _write_pypng(path: Path, pixels: np.ndarray, **kwargs) -> None:
    height, width, planes = pixels.shape
    writer = png.Writer(width, height, greyscale=planes <= 2, alpha=planes in (2, 4), bitdepth=16, **kwargs)
    with open(path, "wb") as fh:
        writer.write(fh, pixels.reshape(height, width * planes).tolist())


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture
def photo_rgb(rng) -> np.ndarray:
    return rng.integers(0, 256, (23, 31, 3), dtype=np.uint8)


@pytest.fixture
def values16(rng) -> np.ndarray:
    """(19, 27, 4) uint16 whose low bytes matter: none survives a trip through 8 bits."""
    return rng.integers(0, 65536, (19, 27, 4), dtype=np.uint16) | 1


# ---- orientation and EXIF


def test_jpeg_orientation_6_is_applied_and_reset_on_write(tmp_path, photo_rgb):
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "RealSR Camera"
    exif.get_ifd(0x8769)[0x9003] = "2024:05:06 07:08:09"  # DateTimeOriginal, in the Exif sub-IFD
    src = tmp_path / "portrait.jpg"
    Image.fromarray(photo_rgb).save(src, quality=95, exif=exif.tobytes())

    photo = _read(src)
    assert photo.rgb.shape == (31, 23, 3)  # stored 31 wide, 23 high: upright it is 23 wide, 31 high
    expected = np.asarray(ImageOps.exif_transpose(Image.open(src)))
    np.testing.assert_array_equal(photo.rgb, expected)

    out = tmp_path / "portrait_x4.jpg"
    _write_back(photo, out, "JPEG")
    written = Image.open(out).getexif()
    assert written[0x0112] == 1
    assert written[0x010F] == "RealSR Camera"
    assert written.get_ifd(0x8769)[0x9003] == "2024:05:06 07:08:09"
    assert _read(out).rgb.shape == (31, 23, 3)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_orientation_matches_pillow_exif_transpose(tmp_path, orientation, rng):
    pixels = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    src = tmp_path / "o.png"
    Image.fromarray(pixels).save(src, exif=exif.tobytes())
    expected = np.asarray(ImageOps.exif_transpose(Image.open(src)))
    np.testing.assert_array_equal(_read(src).rgb, expected)


@pytest.mark.parametrize("depth", [8, 16])
def test_tiff_orientation_is_applied_once(tmp_path, rng, depth):
    dtype = np.uint8 if depth == 8 else np.uint16
    pixels = rng.integers(0, np.iinfo(dtype).max + 1, (4, 6, 3)).astype(dtype)
    src = tmp_path / "o.tif"
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "RealSR Camera"
    if depth == 8:
        Image.fromarray(pixels).save(src, exif=exif.tobytes())
    else:
        tags = [(274, "H", 1, 6, True), (271, "s", 0, "RealSR Camera", True)]
        tifffile.imwrite(src, pixels, photometric="rgb", extratags=tags)
    photo = _read(src)
    np.testing.assert_array_equal(_ints(photo)[0], np.rot90(pixels, -1))
    kept = Image.Exif()
    kept.load(photo.exif)
    assert kept[0x010F] == "RealSR Camera" and kept.get(0x0112, 1) == 1
    assert 273 not in kept  # StripOffsets: this file's layout, not the photo's


def test_unreadable_exif_is_dropped_with_a_warning_not_a_failure(tmp_path, photo_rgb):
    src = tmp_path / "odd.jpg"
    Image.fromarray(photo_rgb).save(src, exif=b"Exif\0\0not a tiff header")
    photo = _read(src)
    assert photo.exif is None
    assert photo.warnings == ["EXIF unreadable: not carried over"]
    assert photo.rgb.shape == (23, 31, 3)


def test_exif_that_fails_to_serialise_is_dropped_with_a_warning(tmp_path, photo_rgb, monkeypatch):
    exif = Image.Exif()
    exif[0x0112] = 6
    src = tmp_path / "e.jpg"
    Image.fromarray(photo_rgb).save(src, exif=exif.tobytes())

    def broken(self, offset=8):
        raise struct.error("bad rational")

    monkeypatch.setattr(Image.Exif, "tobytes", broken)
    photo = _read(src)
    assert photo.exif is None
    assert photo.warnings == ["EXIF unreadable (bad rational): not carried over"]
    assert photo.rgb.shape == (31, 23, 3)  # the orientation was read before the failure, and applied


# ---- ICC profile


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "TIFF"])
def test_icc_profile_is_carried_into_each_output_format(tmp_path, fmt, photo_rgb):
    src = tmp_path / "tagged.png"
    Image.fromarray(photo_rgb).save(src, icc_profile=SRGB)
    photo = _read(src)
    assert photo.icc_profile == SRGB
    out = tmp_path / f"out{OUTPUT_FORMATS[fmt].extension}"
    assert _write_back(photo, out, fmt) == []
    assert Image.open(out).info["icc_profile"] == SRGB


@pytest.mark.parametrize("fmt, depth", [("PNG", 8), ("PNG", 16), ("JPEG", 8), ("WEBP", 8), ("TIFF", 8), ("TIFF", 16)])
def test_written_files_carry_icc_and_exif_at_their_bit_depth(tmp_path, fmt, depth, photo_rgb):
    exif = Image.Exif()
    exif[0x010F] = "RealSR Camera"
    exif[0x0112] = 1
    pixels = photo_rgb if depth == 8 else photo_rgb.astype(np.uint16) * 257 + 3
    out = tmp_path / f"out{OUTPUT_FORMATS[fmt].extension}"
    assert write_image(out, pixels, icc_profile=SRGB, exif=exif.tobytes(), fmt=fmt) == []
    back = _read(out)
    assert back.icc_profile == SRGB and back.bit_depth == depth
    kept = Image.Exif()
    kept.load(back.exif)
    assert kept[0x010F] == "RealSR Camera"
    if fmt in ("PNG", "TIFF"):
        np.testing.assert_array_equal(_ints(back)[0], pixels)


def test_profile_of_the_wrong_colour_space_is_not_embedded(tmp_path, photo_rgb):
    gray_profile = _read(_edge("wolf_gray.jpg")).icc_profile
    assert gray_profile[16:20] == b"GRAY"
    out = tmp_path / "out.png"
    found = write_image(out, photo_rgb, icc_profile=gray_profile)
    assert "icc_profile" not in Image.open(out).info
    assert found == ["the GRAY colour profile does not fit a RGB output: not embedded"]


# ---- alpha


def test_rgba_png_alpha_round_trips_exactly():
    photo = _read(_edge("children-alpha.png"))
    source = np.asarray(Image.open(_edge("children-alpha.png")))
    assert photo.alpha is not None and photo.alpha.dtype == np.uint8
    rgb, alpha = _ints(photo)
    np.testing.assert_array_equal(rgb, source[..., :3])
    np.testing.assert_array_equal(alpha, source[..., 3])


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "TIFF"])
def test_alpha_is_written_by_formats_that_hold_it(tmp_path, fmt, photo_rgb, rng):
    alpha = rng.integers(0, 256, photo_rgb.shape[:2], dtype=np.uint8)
    out = tmp_path / f"a{OUTPUT_FORMATS[fmt].extension}"
    write_image(out, photo_rgb, alpha=alpha, fmt=fmt, quality=100)
    back = _read(out)
    np.testing.assert_array_equal(_ints(back)[1], alpha)
    np.testing.assert_array_equal(_ints(back)[0], photo_rgb)  # WebP at quality 100 is lossless


def test_jpeg_flattens_alpha_onto_white_with_a_warning(tmp_path):
    rgb = np.zeros((16, 16, 3), np.uint8)
    alpha = np.zeros((16, 16), np.uint8)
    alpha[:, :8] = 255  # left half opaque black, right half fully transparent
    out = tmp_path / "flat.jpg"
    found = write_image(out, rgb, alpha=alpha, fmt="JPEG")
    assert found == ["JPEG has no transparency: the image is flattened onto white"]
    back = np.asarray(Image.open(out))
    assert Image.open(out).mode == "RGB"
    assert back[:, :6].max() < 10 and back[:, 10:].min() > 245


def test_palette_transparency_and_colour_keys_become_alpha(tmp_path):
    pal = Image.new("P", (6, 4), 1)
    pal.putpalette([0, 0, 0, 200, 30, 40, 10, 220, 30] + [0] * 759)
    pal.putpixel((0, 0), 2)
    pal.save(tmp_path / "p.png", transparency=2)
    photo = _read(tmp_path / "p.png")
    rgb, alpha = _ints(photo)
    assert photo.grayscale is False
    assert alpha[0, 0] == 0 and alpha[1, 1] == 255
    np.testing.assert_array_equal(rgb[1, 1], [200, 30, 40])

    keyed = np.full((4, 5, 3), 90, np.uint8)
    keyed[2, 3] = (1, 2, 3)
    Image.fromarray(keyed).save(tmp_path / "key.png", transparency=(1, 2, 3))
    alpha = _ints(_read(tmp_path / "key.png"))[1]
    assert alpha[2, 3] == 0 and alpha.sum() == 255 * 19

    gray = np.full((3, 4), 50, np.uint8)
    gray[1, 2] = 9
    Image.fromarray(gray).save(tmp_path / "gray_key.png", transparency=9)
    photo = _read(tmp_path / "gray_key.png")
    assert photo.grayscale and _ints(photo)[1][1, 2] == 0 and _ints(photo)[1].sum() == 255 * 11


def test_gray_with_alpha_stays_gray_with_alpha(tmp_path, rng):
    la = rng.integers(0, 256, (9, 11, 2), dtype=np.uint8)
    Image.fromarray(la).save(tmp_path / "la.png")
    photo = _read(tmp_path / "la.png")
    assert photo.grayscale and photo.alpha is not None
    _write_back(photo, tmp_path / "la_x4.png", "PNG")
    back = Image.open(tmp_path / "la_x4.png")
    assert back.mode == "LA"
    np.testing.assert_array_equal(np.asarray(back), la)


# ---- 16 bits


def test_16bit_rgba_png_is_read_with_all_its_bits():
    path = _edge("tree_alpha_16bit.png")
    photo = _read(path)
    assert photo.bit_depth == 16 and photo.alpha is not None
    rgb, alpha = _ints(photo)
    reference = _pypng_pixels(path)
    np.testing.assert_array_equal(rgb, reference[..., :3])
    np.testing.assert_array_equal(alpha, reference[..., 3])
    assert (rgb % 257 != 0).any()  # real 16-bit content, not 8 bits scaled up


def test_16bit_png_round_trips_with_its_profile(tmp_path):
    path = _edge("tree_alpha_16bit.png")
    photo = _read(path)
    out = tmp_path / "tree_x4.png"
    assert _write_back(photo, out, "PNG") == []
    np.testing.assert_array_equal(_pypng_pixels(out), _pypng_pixels(path))
    assert Image.open(out).info["icc_profile"] == photo.icc_profile == Image.open(path).info["icc_profile"]


@pytest.mark.parametrize(
    "planes, kwargs",
    [(3, {}), (4, {}), (1, {}), (2, {}), (3, {"interlace": True})],
    ids=["rgb", "rgba", "gray", "gray-alpha", "rgb-interlaced"],
)
def test_16bit_png_layouts_survive_read_write_read(tmp_path, values16, planes, kwargs):
    pixels = values16[..., :planes]
    src = tmp_path / "src.png"
    _write_pypng(src, pixels, **kwargs)
    photo = _read(src)
    assert photo.bit_depth == 16
    assert photo.grayscale == (planes <= 2)
    assert (photo.alpha is not None) == (planes in (2, 4))
    out = tmp_path / "out.png"
    _write_back(photo, out, "PNG")
    np.testing.assert_array_equal(_pypng_pixels(out), pixels)


def test_16bit_gray_png_colour_key_becomes_alpha(tmp_path, values16):
    gray = values16[..., :1].copy()
    gray[3, 4] = 4321
    src = tmp_path / "key16.png"
    _write_pypng(src, gray, transparent=4321)
    alpha = _ints(_read(src))[1]
    assert alpha[3, 4] == 0 and (alpha == 0).sum() == (gray == 4321).sum()


@pytest.mark.parametrize("planes", [1, 3, 4], ids=["gray", "rgb", "rgba"])
def test_16bit_tiff_is_read_with_all_its_bits_and_its_profile(tmp_path, values16, planes):
    pixels = values16[..., :planes]
    src = tmp_path / "src.tif"
    tifffile.imwrite(
        src,
        pixels,
        photometric="minisblack" if planes == 1 else "rgb",
        extrasamples=["unassalpha"] if planes == 4 else None,
        extratags=[(34675, 7, len(SRGB), SRGB, True)],
    )
    photo = _read(src)
    assert (photo.bit_depth, photo.grayscale, photo.icc_profile) == (16, planes == 1, SRGB)
    rgb, alpha = _ints(photo)
    np.testing.assert_array_equal(rgb[..., : min(planes, 3)], pixels[..., :3])
    if planes == 4:
        np.testing.assert_array_equal(alpha, pixels[..., 3])


@pytest.mark.parametrize("planes", [1, 2, 3, 4], ids=["gray", "gray-alpha", "rgb", "rgba"])
def test_16bit_tiff_output_holds_every_layout(tmp_path, values16, planes):
    pixels = values16[..., :planes]
    src = tmp_path / "src.png"
    _write_pypng(src, pixels)
    out = tmp_path / "out.tif"
    assert _write_back(_read(src), out, "TIFF", compress_level=9) == []
    with tifffile.TiffFile(out) as tif:
        page = tif.pages[0]
        np.testing.assert_array_equal(page.asarray().reshape(pixels.shape), pixels)
        assert page.compression == tifffile.COMPRESSION.ADOBE_DEFLATE
        assert page.photometric == (tifffile.PHOTOMETRIC.MINISBLACK if planes <= 2 else tifffile.PHOTOMETRIC.RGB)
        assert len(page.extrasamples) == (planes in (2, 4))


def test_16bit_lzw_tiff_without_imagecodecs_says_what_to_install(tmp_path, values16):
    try:
        import imagecodecs  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("imagecodecs is installed, so LZW decodes")
    src = tmp_path / "lzw.tif"
    tifffile.imwrite(src, values16[..., :3], photometric="rgb")
    # relabel the strip as LZW: Compression (259), SHORT, count 1, value 1 -> 5
    data = src.read_bytes()
    entry = struct.pack("<HHIH", 259, 3, 1, 1)
    assert data.count(entry) == 1
    src.write_bytes(data.replace(entry, struct.pack("<HHIH", 259, 3, 1, 5)))
    with pytest.raises(InputError, match=r"lzw.tif: reading a 16-bit LZW TIFF needs the imagecodecs package \(pip"):
        _read(src)


def test_premultiplied_16bit_tiff_alpha_is_divided_out(tmp_path):
    straight = np.array([[[40000, 20000, 0, 32768]]], np.uint16)
    premultiplied = straight.copy()
    premultiplied[..., :3] = np.round(straight[..., :3] * (32768 / 65535)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "pm.tif", premultiplied, photometric="rgb", extrasamples=["assocalpha"])
    rgb, alpha = _ints(_read(tmp_path / "pm.tif"))
    np.testing.assert_allclose(rgb[0, 0], straight[0, 0, :3], atol=2)
    assert alpha[0, 0] == 32768


def test_16bit_to_jpeg_and_webp_drops_to_8_bits_with_a_warning(tmp_path, values16):
    for fmt in ("JPEG", "WEBP"):
        out = tmp_path / f"o{OUTPUT_FORMATS[fmt].extension}"
        found = write_image(out, values16[..., :3], fmt=fmt)
        assert found == [f"{fmt} holds 8 bits per channel: the 16-bit result is written with 8"]
        assert Image.open(out).mode == "RGB"


def test_16bit_alpha_to_8bit_output_rounds_exactly(tmp_path, values16):
    out = tmp_path / "a.webp"
    write_image(out, values16[..., :3], alpha=values16[..., 3], fmt="WEBP", quality=100)
    back = np.asarray(Image.open(out))
    np.testing.assert_array_equal(back[..., 3], np.round(values16[..., 3] / 257))
    np.testing.assert_array_equal(back[..., :3], np.round(values16[..., :3] / 257))


# ---- grayscale, palette, CMYK


def test_gray_png_stays_gray():
    path = _edge("00017_gray.png")
    photo = _read(path)
    assert photo.grayscale and photo.bit_depth == 8 and photo.alpha is None
    np.testing.assert_array_equal(photo.rgb[..., 0], photo.rgb[..., 2])


def test_gray_jpeg_writes_gray_with_its_gray_profile(tmp_path):
    photo = _read(_edge("wolf_gray.jpg"))
    assert photo.grayscale
    out = tmp_path / "wolf_x4.jpg"
    assert _write_back(photo, out, "JPEG") == []
    back = Image.open(out)
    assert back.mode == "L"
    assert back.info["icc_profile"] == photo.icc_profile
    source = np.asarray(Image.open(_edge("wolf_gray.jpg")), np.float32)
    assert np.abs(np.asarray(back, np.float32) - source).mean() < 2  # JPEG re-encoding only


def test_gray_output_to_webp_is_rgb_without_a_gray_profile(tmp_path):
    photo = _read(_edge("wolf_gray.jpg"))
    out = tmp_path / "wolf.webp"
    found = _write_back(photo, out, "WEBP")
    assert Image.open(out).mode == "RGB"
    assert "icc_profile" not in Image.open(out).info
    assert found == ["the GRAY colour profile does not fit a RGB output: not embedded"]


def test_grayscale_output_is_luma_of_the_upscaled_rgb(tmp_path):
    rgb = np.zeros((2, 3, 3), np.uint8)
    rgb[0, 0] = (255, 0, 0)
    rgb[0, 1] = (0, 255, 0)
    rgb[0, 2] = (0, 0, 255)
    rgb[1] = 77
    out = tmp_path / "g.png"
    write_image(out, rgb, grayscale=True)
    back = np.asarray(Image.open(out))
    np.testing.assert_array_equal(back, [[76, 150, 29], [77, 77, 77]])


def test_palette_without_transparency_becomes_rgb(tmp_path, photo_rgb):
    pal = Image.fromarray(photo_rgb).quantize(16)
    pal.save(tmp_path / "p.png")
    photo = _read(tmp_path / "p.png")
    assert photo.alpha is None and not photo.grayscale
    np.testing.assert_array_equal(photo.rgb, np.asarray(pal.convert("RGB")))


def test_cmyk_jpeg_becomes_rgb_and_keeps_no_cmyk_profile(tmp_path):
    cmyk = Image.new("CMYK", (8, 6), (0, 255, 255, 0))
    cmyk.save(tmp_path / "plain.jpg", quality=100)
    photo = _read(tmp_path / "plain.jpg")
    assert photo.icc_profile is None and photo.warnings == []
    assert np.abs(photo.rgb.astype(int) - [255, 0, 0]).max() <= 3

    # an RGB profile on CMYK pixels cannot transform them: Pillow's conversion, and a warning saying so
    cmyk.save(tmp_path / "tagged.jpg", quality=100, icc_profile=SRGB)
    tagged = _read(tmp_path / "tagged.jpg")
    assert tagged.icc_profile is None
    assert tagged.warnings == ["CMYK colour profile unusable (cannot build transform): converted to RGB without it"]


# ---- animated


def test_animated_gif_is_read_whole_and_stays_a_gif(tmp_path):
    frames = [Image.new("RGB", (6, 4), color) for color in ((250, 0, 0), (0, 250, 0), (0, 0, 250))]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:], duration=50)
    photo = _read(tmp_path / "a.gif")
    assert photo.warnings == [] and len(photo.animation.frames) == 2  # tests/test_formats.py has the rest
    assert np.abs(photo.rgb.astype(int) - [250, 0, 0]).max() <= 8  # GIF palette rounding
    assert output_format_for(photo.format, "same", animated=True) == "GIF"


def test_animated_png_gives_first_frame_and_a_warning(tmp_path):
    frames = [Image.new("RGBA", (5, 5), (10, 20, 30, 255)), Image.new("RGBA", (5, 5), (200, 100, 0, 128))]
    frames[0].save(tmp_path / "a.png", save_all=True, append_images=frames[1:])
    photo = _read(tmp_path / "a.png")
    assert photo.warnings == ["animated or multi-page image: only the first frame is upscaled"]
    np.testing.assert_array_equal(_ints(photo)[0][0, 0], [10, 20, 30])


def test_still_image_has_no_warnings(tmp_path, photo_rgb):
    Image.fromarray(photo_rgb).save(tmp_path / "s.webp", lossless=True)
    photo = _read(tmp_path / "s.webp")
    assert photo.warnings == [] and photo.format == "WEBP"
    np.testing.assert_array_equal(photo.rgb, photo_rgb)


# ---- decompression bombs


def _png_claiming(path: Path, width: int, height: int) -> None:
    """A real 1x1 PNG whose IHDR says width x height (CRC fixed), so only a decode would notice."""
    buffer = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))


def test_decompression_bomb_is_refused_from_the_header(tmp_path):
    bomb = tmp_path / "bomb.png"
    _png_claiming(bomb, 12000, 10000)
    saved = Image.MAX_IMAGE_PIXELS
    with pytest.raises(InputError) as err:
        read_image(bomb, max_pixels=64_000_000)
    assert str(err.value) == f"{bomb}: 12000x10000 is 120,000,000 pixels, above the limit of 64,000,000 (--max-pixels)"
    assert Image.MAX_IMAGE_PIXELS == saved


def test_pillows_own_limit_does_not_preempt_ours(tmp_path, photo_rgb, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # far below this 713-pixel photo
    Image.fromarray(photo_rgb).save(tmp_path / "p.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a DecompressionBombWarning would fail the test
        photo = read_image(tmp_path / "p.png", max_pixels=1000)
    assert photo.rgb.shape == (23, 31, 3)
    assert Image.MAX_IMAGE_PIXELS == 100


# ---- bad inputs


def _truncated(kind: str, folder: Path, rgb: np.ndarray) -> Path:
    path = folder / f"cut.{kind}"
    if kind.startswith("png16"):
        path = folder / "cut16.png"
        planes = 1 if kind == "png16gray" else 3  # gray decodes with pypng, colour with Pillow
        _write_pypng(path, (rgb[..., :planes].astype(np.uint16) * 257 + 1))
    else:
        Image.fromarray(rgb).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    return path


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", "{path}: no such file"),
        ("empty", "{path}: empty file (0 bytes)"),
        ("text", "{path}: not an image realsr can read (unknown or unsupported format)"),
        ("folder", "{path}: is a directory, not an image"),
        ("jpg", "{path}: corrupt or truncated image (image file is truncated"),
        ("png", "{path}: truncated PNG: its pixel data fills "),
        ("png16", "{path}: truncated PNG: its pixel data fills "),
        ("png16gray", "{path}: truncated PNG: its pixel data fills "),
        ("float-tiff", "{path}: 32-bit float pixels are not supported"),
    ],
)
def test_bad_input_gives_a_one_line_input_error(tmp_path, case, message, rng):
    rgb = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    if case == "missing":
        path = tmp_path / "nowhere.png"
    elif case == "empty":
        path = tmp_path / "empty.jpg"
        path.write_bytes(b"")
    elif case == "text":
        path = tmp_path / "notes.png"
        path.write_text("this is not a picture\n")
    elif case == "folder":
        path = tmp_path / "album.png"
        path.mkdir()
    elif case == "float-tiff":
        path = tmp_path / "hdr.tif"
        tifffile.imwrite(path, rgb[..., 0].astype(np.float32) / 255)
    else:
        path = _truncated(case, tmp_path, rgb)
    with pytest.raises(InputError) as err:
        _read(path)
    text = str(err.value)
    assert text.startswith(message.format(path=path))
    assert "\n" not in text


# ---- atomic writes


class _Boom(Exception):
    pass


@pytest.mark.parametrize("interrupt", [_Boom, KeyboardInterrupt])
@pytest.mark.parametrize("depth", [8, 16])
def test_failed_encode_leaves_nothing_behind_and_keeps_the_old_file(tmp_path, monkeypatch, interrupt, depth, photo_rgb):
    out = tmp_path / "out.png"
    out.write_bytes(b"previous result")

    def half_written(self, rows):  # the encoder fails after writing the file's first bytes
        self.fh.write(b"\x89PNG partial")
        raise interrupt()

    monkeypatch.setattr(PngWriter, "write", half_written)
    pixels = photo_rgb if depth == 8 else photo_rgb.astype(np.uint16) * 257
    with pytest.raises(interrupt):
        write_image(out, pixels)
    assert _files(tmp_path) == ["out.png"]
    assert out.read_bytes() == b"previous result"


def test_successful_write_creates_parents_and_leaves_only_the_result(tmp_path, photo_rgb):
    out = tmp_path / "a" / "b" / "photo_x4.png"
    write_image(out, photo_rgb)
    assert _files(out.parent) == ["photo_x4.png"]
    np.testing.assert_array_equal(np.asarray(Image.open(out)), photo_rgb)
    assert out.stat().st_mode & 0o044  # umask permissions, not a private temp file's 0600


def test_output_folder_under_a_regular_file_is_an_input_error(tmp_path, photo_rgb):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")
    with pytest.raises(InputError, match=f"^{blocker}/sub: cannot create the output folder"):
        write_image(blocker / "sub" / "o.png", photo_rgb)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through chmod 0o500; the regular-file parent test covers it")
def test_read_only_output_folder_is_an_input_error(tmp_path, photo_rgb):
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(InputError, match=f"^{folder}: cannot write to the output folder"):
            write_image(folder / "o.png", photo_rgb)
        assert _files(folder) == []
    finally:
        folder.chmod(0o700)


def test_too_large_for_webp_fails_before_anything_is_written(tmp_path):
    with pytest.raises(ConfigError, match="WEBP cannot hold a 16384x1 image"):
        write_image(tmp_path / "wide.webp", np.zeros((1, 16384, 3), np.uint8), fmt="WEBP")
    assert _files(tmp_path) == []


# ---- encoder options


def test_jpeg_canvas_encodes_without_a_copy_and_writes_the_same_file(tmp_path, photo_rgb, monkeypatch):
    canvas = new_canvas(*photo_rgb.shape[:2], np.uint8, "JPEG")
    canvas[...] = photo_rgb
    assert canvas.base.shape == (*photo_rgb.shape[:2], 4)  # RGBX memory, RGB view
    exif = Image.Exif()
    exif[0x010F] = "RealSR Camera"
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    kwargs = {"fmt": "JPEG", "quality": 95, "exif": exif.tobytes(), "icc_profile": profile}
    write_image(tmp_path / "plain.jpg", photo_rgb, **kwargs)
    copies = []
    real = photo_write.to_pil
    monkeypatch.setattr(photo_write, "to_pil", lambda *a, **k: copies.append(1) or real(*a, **k))
    write_image(tmp_path / "canvas.jpg", canvas, **kwargs)
    assert copies == []  # Pillow read the canvas where it lies
    assert (tmp_path / "canvas.jpg").read_bytes() == (tmp_path / "plain.jpg").read_bytes()


def test_other_formats_get_a_plain_canvas():
    for fmt, dtype in [
        ("PNG", np.uint8),
        ("WEBP", np.uint8),
        ("TIFF", np.uint8),
        ("JPEG", np.uint16),
        (None, np.uint8),
    ]:
        canvas = new_canvas(5, 7, dtype, fmt)
        assert canvas.shape == (5, 7, 3) and canvas.dtype == dtype and canvas.flags.c_contiguous


def test_png_compress_level_trades_size_for_speed(tmp_path, photo_rgb):
    smooth = np.repeat(np.repeat(photo_rgb, 8, axis=0), 8, axis=1)
    write_image(tmp_path / "fast.png", smooth, compress_level=0)
    write_image(tmp_path / "small.png", smooth, compress_level=9)
    assert (tmp_path / "small.png").stat().st_size < (tmp_path / "fast.png").stat().st_size / 4
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "small.png")), smooth)


def test_webp_quality_100_is_lossless_and_lower_is_not(tmp_path, photo_rgb):
    write_image(tmp_path / "l.webp", photo_rgb, fmt="WEBP", quality=100)
    write_image(tmp_path / "q.webp", photo_rgb, fmt="WEBP", quality=60)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "l.webp")), photo_rgb)
    assert not np.array_equal(np.asarray(Image.open(tmp_path / "q.webp")), photo_rgb)


def test_tiff_output_keeps_main_exif_tags_and_warns_about_the_rest(tmp_path, photo_rgb):
    exif = Image.Exif()
    exif[0x010F] = "RealSR Camera"
    exif[0x0112] = 1
    exif.get_ifd(0x8769)[0x9003] = "2024:05:06 07:08:09"
    found = write_image(tmp_path / "t.tif", photo_rgb, fmt="TIFF", exif=exif.tobytes())
    assert found == ["TIFF output keeps the main EXIF tags (camera, date, author) but not exposure or GPS details"]
    back = _read(tmp_path / "t.tif")
    kept = Image.Exif()
    kept.load(back.exif)
    assert kept[0x010F] == "RealSR Camera" and kept[0x0112] == 1
    np.testing.assert_array_equal(back.rgb, photo_rgb)


# ---- pixels: quantise, resize, compose


def test_quantize_rounds_clips_and_maps_nan_to_zero():
    values = np.array([-0.5, 0.0, 0.4 / 255, 0.6 / 255, 0.5, 1.0, 7.0, np.nan], np.float32)
    np.testing.assert_array_equal(quantize(values, np.uint8), [0, 0, 0, 1, 128, 255, 255, 0])
    assert quantize(values, np.uint16).dtype == np.uint16
    assert quantize(values, np.uint16)[4] == 32768


def test_quantize_writes_into_a_band_of_a_preallocated_output():
    out = np.zeros((4, 5, 3), np.uint16)
    band = np.full((2, 5, 3), 0.25, np.float32)
    returned = quantize(band, np.uint16, out=out[1:3])
    assert np.shares_memory(returned, out)
    assert (out[1:3] == 16384).all() and (out[0] == 0).all() and (out[3] == 0).all()


def test_band_wise_resize_equals_whole_image_resize(monkeypatch, rng):
    src = rng.integers(0, 65536, (90, 70, 3), dtype=np.uint16)
    whole = resize(src, (44, 57))
    monkeypatch.setattr(photo_pixels, "_BAND_PIXELS", 70 * 5)  # bands of 5 output rows
    banded = resize(src, (44, 57))
    assert banded.dtype == np.uint16 and banded.shape == (57, 44, 3)
    assert np.abs(banded.astype(int) - whole.astype(int)).max() <= 1  # float32 ties at .5 only
    assert (banded == whole).mean() > 0.99


def test_resize_keeps_16_bit_precision_and_flat_areas_exact():
    flat = np.full((40, 40, 3), 12345, np.uint16)
    np.testing.assert_array_equal(resize(flat, (25, 25)), 12345)
    ramp = np.tile(np.arange(0, 64000, 800, dtype=np.uint16)[None, :, None], (8, 1, 1))  # (8, 80, 1)
    down = resize(ramp[..., 0], (32, 4))
    assert (down % 257 != 0).any() and np.all(np.diff(down[0].astype(int)) > 0)


def test_resize_upscales_alpha_and_clips_lanczos_overshoot():
    alpha = np.zeros((6, 6), np.uint16)
    alpha[:, 3:] = 65535
    up = resize(alpha, (24, 24))
    assert up.dtype == np.uint16 and up.shape == (24, 24)
    reference = np.asarray(Image.fromarray(alpha.astype(np.float32)).resize((24, 24), Image.Resampling.LANCZOS))
    assert reference.min() < -100 and reference.max() > 65635  # Lanczos rings at a hard edge
    np.testing.assert_array_equal(up, np.clip(np.rint(reference), 0, 65535))
    assert resize(np.full((3, 3), 255, np.uint8), (7, 5)).min() == 255


def test_scaled_size_rounds_and_never_reaches_zero():
    assert scaled_size(37, 53, 4) == (148, 212)
    assert scaled_size(37, 53, 2.5) == (93, 133)
    assert scaled_size(1, 1, 0.1) == (1, 1)


def test_compose_layouts_and_to_pil_modes(photo_rgb):
    alpha = np.full(photo_rgb.shape[:2], 7, np.uint8)
    assert compose(photo_rgb) is photo_rgb
    assert compose(photo_rgb, alpha).shape == (23, 31, 4)
    assert compose(photo_rgb, grayscale=True).shape == (23, 31)
    assert compose(photo_rgb, alpha, grayscale=True)[..., 1].max() == 7
    assert to_pil(photo_rgb, alpha).mode == "RGBA"
    assert to_pil(photo_rgb.astype(np.uint16) * 257, grayscale=True).mode == "L"


# ---- Python API inputs


@pytest.mark.parametrize(
    "shape, dtype, depth, gray, has_alpha",
    [
        ((5, 6), np.uint8, 8, True, False),
        ((5, 6, 2), np.uint16, 16, True, True),
        ((5, 6, 3), np.float32, 16, False, False),
        ((5, 6, 4), np.uint8, 8, False, True),
    ],
)
def test_photo_from_array(shape, dtype, depth, gray, has_alpha, rng):
    if dtype == np.float32:
        array = rng.random(shape, dtype=np.float32)
    else:
        array = rng.integers(0, np.iinfo(dtype).max + 1, shape).astype(dtype)
    photo = photo_from_array(array)
    assert (photo.bit_depth, photo.grayscale, photo.alpha is not None) == (depth, gray, has_alpha)
    assert photo.rgb.shape == (5, 6, 3) and photo.rgb.dtype == (np.uint8 if depth == 8 else np.uint16)
    if dtype != np.float32:
        np.testing.assert_array_equal(photo.rgb[..., 0], array.reshape(5, 6, -1)[..., 0])
    else:
        np.testing.assert_allclose(photo.rgb / 65535, array[..., :3], atol=0.5 / 65535)


def test_photo_from_array_refuses_what_is_not_an_image():
    with pytest.raises(InputError, match="shape"):
        photo_from_array(np.zeros((4, 4, 5), np.uint8))
    with pytest.raises(InputError, match="dtype int32"):
        photo_from_array(np.zeros((4, 4, 3), np.int32))
    with pytest.raises(InputError, match="NaN"):
        photo_from_array(np.full((4, 4), np.nan, np.float32))
    assert photo_from_array(np.full((2, 2, 3), 1.5, np.float32)).rgb.max() == 65535  # clipped to 1.0


def test_photo_from_pil_applies_orientation_and_keeps_16_bit_gray(rng):
    image = Image.fromarray(rng.integers(0, 256, (4, 9, 3), dtype=np.uint8))
    exif = image.getexif()
    exif[0x0112] = 8
    buffer = io.BytesIO()
    image.save(buffer, "PNG", exif=exif.tobytes())
    photo = photo_from_pil(Image.open(buffer))
    assert photo.rgb.shape == (9, 4, 3) and photo.format == "PNG"

    gray16 = Image.fromarray(rng.integers(0, 65536, (3, 5), dtype=np.uint16))
    photo = photo_from_pil(gray16)
    assert (photo.bit_depth, photo.grayscale, photo.format) == (16, True, "")
    np.testing.assert_array_equal(photo.rgb[..., 1], np.asarray(gray16))


def test_photo_from_pil_refuses_32_bit_modes():
    with pytest.raises(InputError, match="32-bit float pixels are not supported"):
        photo_from_pil(Image.new("F", (2, 2)))


# ---- naming and formats


def test_output_path_beside_input_in_folder_and_mirrored(tmp_path):
    src = tmp_path / "in" / "trip" / "day1" / "IMG_01.jpeg"
    assert output_path(src, None, 4, "PNG") == src.parent / "IMG_01_x4.png"
    assert output_path(src, tmp_path / "out", 2.5, "JPEG") == tmp_path / "out" / "IMG_01_x2.5.jpg"
    assert output_path(src, tmp_path / "out", 4.0, "TIFF", input_root=tmp_path / "in") == (
        tmp_path / "out" / "trip" / "day1" / "IMG_01_x4.tif"
    )
    assert output_path("a.b.webp", "o", 3, "WEBP").name == "a.b_x3.webp"


@pytest.mark.parametrize(
    "source, requested, expected",
    [
        ("PNG", "same", "PNG"),
        ("JPEG", "same", "JPEG"),
        ("WEBP", "same", "WEBP"),
        ("TIFF", "same", "TIFF"),
        ("GIF", "same", "PNG"),
        ("", "same", "PNG"),
        ("JPEG", "png", "PNG"),
        ("PNG", "JPG", "JPEG"),
        ("PNG", "tiff", "TIFF"),
    ],
)
def test_output_format_for(source, requested, expected):
    assert output_format_for(source, requested) == expected


def test_unknown_output_format_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown output format 'bmp'"):
        output_format_for("PNG", "bmp")


def test_quantize_rounds_integer_levels_with_a_scale_and_in_place():
    levels = np.arange(65536, dtype=np.uint16)
    # 16 -> 8 bits is round(v * 255 / 65535) exactly, the same as integer arithmetic gives
    np.testing.assert_array_equal(quantize(levels, np.uint8, scale=255 / 65535), (levels.astype(int) + 128) // 257)
    resampled = np.array([-3.2, 0.5, 1.5, 254.49, 300.0, np.nan], np.float32)  # levels, as Lanczos leaves them
    np.testing.assert_array_equal(quantize(resampled, np.uint8, scale=1), [0, 0, 2, 254, 255, 0])
    scratch = np.array([0.25, 0.75], np.float32)
    out = np.zeros(2, np.uint16)
    quantize(scratch, np.uint16, out=out, in_place=True)
    np.testing.assert_array_equal(out, [16384, 49151])
    np.testing.assert_array_equal(scratch, [16384, 49151])  # worked in the scratch values themselves


def test_the_format_table_names_every_choice_and_extension():
    from realsr_cli.photo.formats import FORMAT_CHOICES, format_of, image_extensions

    assert FORMAT_CHOICES == ("same", "png", "jpg", "webp", "tiff", "avif", "heic", "gif")
    assert [output_format_for("PNG", choice) for choice in FORMAT_CHOICES] == [
        "PNG", "PNG", "JPEG", "WEBP", "TIFF", "AVIF", "HEIF", "GIF"
    ]  # fmt: skip
    for fmt in OUTPUT_FORMATS.values():
        assert set(fmt.extensions) <= image_extensions()
        assert all(format_of(f"photo{ext.upper()}") == fmt.name for ext in fmt.extensions)
    assert format_of("x.bmp") == "" and ".bmp" in image_extensions()
