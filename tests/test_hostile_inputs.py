"""Hostile inputs: files with less pixel data than their header claims, broken checksums, outputs aimed at inputs,
and what the user is told about each (the file named, one line, a number a person can act on). Every hostile
file is made here from a small valid one."""

from __future__ import annotations

import gc
import io
import struct
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import png
import pytest
import tifffile
from click.testing import CliRunner
from PIL import Image

from realsr_cli.cli import cli
from realsr_cli.errors import EXIT_SOME_FAILED, InputError
from realsr_cli.photo.read import read_image

LIMIT = 64_000_000
FAST = 1.0  # seconds: refusing a hostile file must not cost the work its header claims


def _pixels(rng, height=32, width=48, channels=3, dtype=np.uint8) -> np.ndarray:
    """Smooth pixels with noise: compressible like a photo, not a flat image."""
    y, x = np.mgrid[0:height, 0:width]
    top = np.iinfo(dtype).max
    base = np.stack([np.sin(x / 5 + c) * np.cos(y / 7) for c in range(channels)], axis=-1) * 0.4 + 0.5
    noisy = np.clip(base + rng.normal(0, 0.03, base.shape), 0, 1) * top
    return noisy.astype(dtype)[..., 0] if channels == 1 else noisy.astype(dtype)


def _png8(rng) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(_pixels(rng)).save(buffer, "PNG")
    return buffer.getvalue()


def _png16(rng, gray=False) -> bytes:
    """A 16-bit PNG: colour goes through Pillow's 16-bit path, gray through pypng's."""
    pixels = _pixels(rng, channels=1 if gray else 3, dtype=np.uint16)
    buffer = io.BytesIO()
    png.Writer(48, 32, greyscale=gray, bitdepth=16).write(buffer, pixels.reshape(32, -1))
    return buffer.getvalue()


def _jpeg(rng, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(_pixels(rng)).save(buffer, "JPEG", quality=90, **options)
    return buffer.getvalue()


def _png_with_height(data: bytes, height: int) -> bytes:
    """The PNG with its IHDR height replaced and the chunk's CRC fixed, so only the pixel data tells."""
    ihdr = bytearray(data[8:33])
    ihdr[12:16] = struct.pack(">I", height)
    ihdr[21:25] = struct.pack(">I", zlib.crc32(bytes(ihdr[4:21])))
    return data[:8] + bytes(ihdr) + data[33:]


def _png_with_bad_idat_crc(data: bytes) -> bytes:
    pos = 8
    while data[pos + 4 : pos + 8] != b"IDAT":
        pos += 12 + struct.unpack(">I", data[pos : pos + 4])[0]
    crc_at = pos + 8 + struct.unpack(">I", data[pos : pos + 4])[0]
    return data[:crc_at] + bytes([data[crc_at] ^ 0xFF]) + data[crc_at + 1 :]


def _jpeg_with_height(data: bytes, height: int) -> bytes:
    """The JPEG with its SOF height replaced: the scan still codes the original rows."""
    pos = 2
    while data[pos + 1] not in (0xC0, 0xC1, 0xC2):
        pos += 2 + struct.unpack(">H", data[pos + 2 : pos + 4])[0]
    return data[: pos + 5] + struct.pack(">H", height) + data[pos + 7 :]


def _jpeg_with_scan_cut(data: bytes, cut: int) -> bytes:
    """The JPEG with the last `cut` bytes of its scan data removed and its end marker kept."""
    end = data.rindex(b"\xff\xd9")
    return data[: end - cut] + data[end:]


def _jpeg_with_width(data: bytes, width: int) -> bytes:
    """The JPEG with its SOF width replaced: the scans still code the original columns."""
    pos = 2
    while data[pos + 1] not in (0xC0, 0xC1, 0xC2):
        pos += 2 + struct.unpack(">H", data[pos + 2 : pos + 4])[0]
    return data[: pos + 7] + struct.pack(">H", width) + data[pos + 9 :]


def _tiff_with_height(path: Path, height: int, tag_name: str = "ImageLength") -> None:
    with tifffile.TiffFile(path) as tif:
        tag = tif.pages[0].tags[tag_name]
        offset, fmt = tag.valueoffset, "<H" if tag.dtype == 3 else "<I"
    data = bytearray(path.read_bytes())
    data[offset : offset + struct.calcsize(fmt)] = struct.pack(fmt, height)
    path.write_bytes(bytes(data))


def hostile_files(folder: Path, rng) -> dict[str, str]:
    """Write one file of every hostile kind into `folder`: {file name: what its error must say}."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tall8.png").write_bytes(_png_with_height(_png8(rng), 64))
    (folder / "tall16.png").write_bytes(_png_with_height(_png16(rng), 64))
    (folder / "tall16gray.png").write_bytes(_png_with_height(_png16(rng, gray=True), 64))
    (folder / "rows65535.png").write_bytes(_png_with_height(_png16(rng, gray=True), 65535))
    (folder / "crc8.png").write_bytes(_png_with_bad_idat_crc(_png8(rng)))
    (folder / "crc16.png").write_bytes(_png_with_bad_idat_crc(_png16(rng)))
    (folder / "crc16gray.png").write_bytes(_png_with_bad_idat_crc(_png16(rng, gray=True)))
    (folder / "tall.jpg").write_bytes(_jpeg_with_height(_jpeg(rng), 64))
    (folder / "rows65000.jpg").write_bytes(_jpeg_with_height(_jpeg(rng), 65000))
    tifffile.imwrite(folder / "tall8.tif", _pixels(rng))
    _tiff_with_height(folder / "tall8.tif", 64)
    tifffile.imwrite(folder / "tall16.tif", _pixels(rng, dtype=np.uint16), compression="zlib")
    _tiff_with_height(folder / "tall16.tif", 64)
    (folder / "cut.jpg").write_bytes(_jpeg_with_scan_cut(_jpeg(rng), 3))
    (folder / "cut444.jpg").write_bytes(_jpeg_with_scan_cut(_jpeg(rng, subsampling=0), 5))
    (folder / "wide_progressive.jpg").write_bytes(_jpeg_with_width(_jpeg(rng, progressive=True), 200))
    Image.fromarray(_pixels(rng)).save(folder / "wide_jpeg.tif", compression="jpeg")
    _tiff_with_height(folder / "wide_jpeg.tif", 64, "ImageWidth")
    return {
        "tall8.png": "truncated PNG: its pixel data fills 50% of the 48x64",
        "tall16.png": "truncated PNG: its pixel data fills 50% of the 48x64",
        "tall16gray.png": "truncated PNG: its pixel data fills 50% of the 48x64",
        "rows65535.png": "its header claims 48x65535, more than its pixel data can hold",
        "crc8.png": "checksum error in its pixel data",
        "crc16.png": "checksum error in its pixel data",
        "crc16gray.png": "checksum error in its pixel data",
        "tall.jpg": "truncated JPEG: its image data ends before the 48x64",
        "rows65000.jpg": "its header claims 48x65000, more than its data can hold",
        "tall8.tif": "truncated TIFF",
        "tall16.tif": "truncated TIFF",
        "cut.jpg": "truncated JPEG: its image data ends before the 48x32",
        "cut444.jpg": "truncated JPEG: its image data ends before the 48x32",
        "wide_progressive.jpg": "truncated JPEG: its image data ends before the 200x32",
        "wide_jpeg.tif": "truncated TIFF: its pixel data cannot fill the 64x32",
    }


# ---- less pixel data than the header claims, on every decode path


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    folder = tmp_path_factory.mktemp("hostile")
    return folder, hostile_files(folder, np.random.default_rng(11))


@pytest.mark.parametrize(
    "name",
    [
        "tall8.png",
        "tall16.png",
        "tall16gray.png",
        "rows65535.png",
        "crc8.png",
        "crc16.png",
        "crc16gray.png",
        "tall.jpg",
        "rows65000.jpg",
        "tall8.tif",
        "tall16.tif",
        "cut.jpg",
        "cut444.jpg",
        "wide_progressive.jpg",
        "wide_jpeg.tif",
    ],
)
def test_hostile_file_is_a_one_line_input_error_found_cheaply(hostile, name):
    folder, expected = hostile
    started = time.perf_counter()
    with pytest.raises(InputError) as err:
        read_image(folder / name, max_pixels=LIMIT)
    assert time.perf_counter() - started < FAST
    text = str(err.value)
    assert text.startswith(f"{folder / name}: ") and expected[name] in text and "\n" not in text


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"subsampling": 0},
        {"subsampling": 2, "optimize": True},
        {"restart_marker_rows": 1},
        {"progressive": True},
    ],
)
@pytest.mark.parametrize("size", [(1, 1), (7, 300), (64, 48), (129, 17)])
def test_valid_jpegs_decode_as_pillow_decodes_them(tmp_path, rng, options, size):
    """The strict JPEG decodes (scan end marker replaced by fill bits and by their inverse) give exactly Pillow's
    pixels."""
    path = tmp_path / "ok.jpg"
    Image.fromarray(_pixels(rng, *size)).save(path, quality=85, **options)
    with Image.open(path) as im:
        expected = np.asarray(im.convert("RGB"))
    assert np.array_equal(read_image(path, max_pixels=LIMIT).rgb, expected)


@pytest.mark.parametrize("options", [{}, {"subsampling": 0}, {"optimize": True}, {"restart_marker_blocks": 1}])
@pytest.mark.parametrize("mode", ["RGB", "L", "CMYK"])
def test_a_jpeg_scan_cut_by_any_few_bytes_is_refused(tmp_path, rng, options, mode):
    """Cut inside its last blocks, end marker kept: libjpeg would decode the missing codes as grey or as "block
    ends here" (zero bits), which the all-ones fill decoded too; the fill and its inverse give different pixels."""
    buffer = io.BytesIO()
    Image.fromarray(_pixels(rng)).convert(mode).save(buffer, "JPEG", quality=90, **options)
    for cut in range(2, 9):
        path = tmp_path / f"cut{cut}.jpg"
        path.write_bytes(_jpeg_with_scan_cut(buffer.getvalue(), cut))
        with pytest.raises(InputError, match="truncated JPEG"):
            read_image(path, max_pixels=LIMIT)


@pytest.mark.parametrize("options", [{}, {"optimize": True}, {"subsampling": 0}])
@pytest.mark.parametrize("size", [(32, 56), (40, 48)])
def test_a_progressive_jpeg_with_a_raised_size_is_refused(tmp_path, rng, options, size):
    data = _jpeg(rng, progressive=True, **options)
    path = tmp_path / "raised.jpg"
    path.write_bytes(_jpeg_with_height(_jpeg_with_width(data, size[1]), size[0]))
    with pytest.raises(InputError, match="truncated JPEG"):
        read_image(path, max_pixels=LIMIT)


@pytest.mark.parametrize("rows_per_strip", [None, 8, 16])
@pytest.mark.parametrize(("tag", "value"), [("ImageWidth", 56), ("ImageLength", 40)])
def test_a_jpeg_compressed_tiff_larger_than_its_strips_is_refused(tmp_path, rng, rows_per_strip, tag, value):
    path = tmp_path / "raised.tif"
    info = {278: rows_per_strip} if rows_per_strip else {}
    Image.fromarray(_pixels(rng)).save(path, compression="jpeg", tiffinfo=info)
    assert read_image(path, max_pixels=LIMIT).rgb.shape == (32, 48, 3)
    _tiff_with_height(path, value, tag)
    with pytest.raises(InputError, match="truncated TIFF"):
        read_image(path, max_pixels=LIMIT)


@pytest.mark.parametrize("rows_per_strip", [8, 16, 64])
@pytest.mark.parametrize("size", [(1, 1), (33, 65), (64, 48)])
def test_valid_jpeg_compressed_tiffs_still_read(tmp_path, rng, rows_per_strip, size):
    path = tmp_path / "ok.tif"
    Image.fromarray(_pixels(rng, *size)).save(path, compression="jpeg", tiffinfo={278: rows_per_strip})
    with Image.open(path) as im:
        expected = np.asarray(im.convert("RGB"))
    assert np.array_equal(read_image(path, max_pixels=LIMIT).rgb, expected)


@pytest.mark.parametrize("interlace", [False, True])
@pytest.mark.parametrize("gray", [False, True])
def test_valid_16_bit_and_interlaced_pngs_still_read(tmp_path, rng, interlace, gray):
    pixels = _pixels(rng, 37, 53, channels=1 if gray else 3, dtype=np.uint16)
    path = tmp_path / "ok.png"
    with open(path, "wb") as fh:
        png.Writer(53, 37, greyscale=gray, bitdepth=16, interlace=interlace).write(fh, pixels.reshape(37, -1))
    photo = read_image(path, max_pixels=LIMIT)
    assert np.array_equal(photo.rgb[..., 0], pixels if gray else pixels[..., 0])


# ---- the smaller ones


def test_max_pixels_message_gives_pixel_counts(tmp_path):
    path = tmp_path / "small.png"
    Image.new("RGB", (201, 200)).save(path)
    with pytest.raises(InputError) as err:
        read_image(path, max_pixels=40_000)
    assert str(err.value) == f"{path}: 201x200 is 40,200 pixels, above the limit of 40,000 (--max-pixels)"


def test_pypng_path_closes_its_file(tmp_path, rng):
    path = tmp_path / "gray16.png"
    path.write_bytes(_png16(rng, gray=True))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        read_image(path, max_pixels=LIMIT)
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]


def _invalid_apng(rng) -> bytes:
    """A PNG with an acTL chunk claiming 0 frames: Pillow warns and reads the default image."""
    data = _png8(rng)
    body = b"acTL" + struct.pack(">II", 0, 0)
    return data[:33] + struct.pack(">I", 8) + body + struct.pack(">I", zlib.crc32(body)) + data[33:]


def test_pillow_warnings_become_the_photos_warnings(tmp_path, rng):
    path = tmp_path / "odd.png"
    path.write_bytes(_invalid_apng(rng))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        photo = read_image(path, max_pixels=LIMIT)
    assert photo.warnings == ["Invalid APNG, will use default PNG image if possible"]
    assert not caught


def test_other_warnings_print_as_one_console_line(capsys):
    from realsr_cli.cli._console import route_warnings

    with warnings.catch_warnings():  # restores the showwarning route_warnings replaces
        warnings.simplefilter("always")
        route_warnings()
        warnings.warn("something odd\nover two lines", UserWarning, stacklevel=1)
    err = capsys.readouterr().err
    assert err == "warning: something odd over two lines (UserWarning)\n"


@pytest.mark.parametrize(
    "kind, message",
    [
        ("random", "not the zip archive torch.save writes"),
        ("text", "a text file"),
        ("empty", "an empty file (0 bytes)"),
        ("truncated", "truncated or damaged"),
    ],
)
def test_checkpoint_errors_say_what_the_file_is(tmp_path, tiny_checkpoint, kind, message):
    from realsr_cli.training.checkpoint import load_checkpoint

    path = tmp_path / "model.pth"
    data = tiny_checkpoint.read_bytes()
    contents = {
        "random": np.random.default_rng(3).bytes(5000),
        "text": b"step 100: loss 0.41\nstep 200: loss 0.38\n",
        "empty": b"",
        "truncated": data[: len(data) // 2],
    }
    path.write_bytes(contents[kind])
    with pytest.raises(InputError) as err:
        load_checkpoint(path)
    assert str(err.value).startswith(f"{path}: not a readable realsr checkpoint: {message}")


# ---- through the CLI


def _upscale(*args) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["upscale", *map(str, args)])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stderr


def test_an_output_never_replaces_an_input(tmp_path, tiny_exports, rng):
    z, z_x4 = tmp_path / "z.png", tmp_path / "z_x4.png"
    Image.fromarray(_pixels(rng, 8, 8)).save(z)
    Image.fromarray(_pixels(rng, 6, 6)).save(z_x4)
    before = z_x4.read_bytes()
    code, err = _upscale(z, z_x4, "--model", tiny_exports["onnx"])
    assert code == EXIT_SOME_FAILED
    assert z_x4.read_bytes() == before
    assert f"{z}: its output {z_x4} is an input of this batch" in err
    assert (tmp_path / "z_x4_x4.png").is_file()  # the other input still ran


def test_a_per_file_error_names_its_file(tmp_path, tiny_exports):
    tall = tmp_path / "tall.png"
    Image.new("RGB", (1, 16400)).save(tall)  # x4 is 65,600 rows: more than a JPEG holds
    ok = tmp_path / "ok.png"
    Image.new("RGB", (8, 8)).save(ok)
    code, err = _upscale(tall, ok, "--model", tiny_exports["onnx"], "--format", "jpg")
    assert code == EXIT_SOME_FAILED
    failed = [line for line in err.splitlines() if line.startswith("failed:")]
    assert len(failed) == 1 and failed[0].startswith(f"failed: {tall}: ")


def test_pillow_warning_reaches_the_console_as_a_notice_naming_the_file(tmp_path, tiny_exports, rng):
    odd = tmp_path / "odd.png"
    odd.write_bytes(_invalid_apng(rng))
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        code, err = _upscale(odd, "--model", tiny_exports["onnx"])
    assert code == 0
    assert f"warning: {odd}: Invalid APNG, will use default PNG image if possible\n" in err
    assert "UserWarning" not in err


def test_batch_of_good_and_hostile_files(tmp_path, tiny_exports, rng):
    """Every good file is written, no partial or temporary file is left, and each bad one is named, exit 6."""
    folder = tmp_path / "in"
    expected = hostile_files(folder, rng)
    good = {"good.png": _png8(rng), "good16.png": _png16(rng, gray=True), "good.jpg": _jpeg(rng)}
    for name, data in good.items():
        (folder / name).write_bytes(data)
    out = tmp_path / "out"
    code, err = _upscale(folder, "-o", out, "--model", tiny_exports["onnx"])
    assert code == EXIT_SOME_FAILED
    written = sorted(p.name for p in out.rglob("*"))
    assert written == sorted(f"{Path(name).stem}_x4{Path(name).suffix}" for name in good)
    for path in out.iterdir():
        with Image.open(path) as im:
            im.load()
            assert im.size == (192, 128)
    failed = [line for line in err.splitlines() if line.startswith("failed:")]
    assert len(failed) == len(expected)
    for name, message in expected.items():
        assert any(line.startswith(f"failed: {folder / name}: ") and message in line for line in failed), name
