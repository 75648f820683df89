"""Phone and web formats: HEIC/HEIF and AVIF in and out, what counts as an image, the JPEG/PNG output policy,
metadata (EXIF sizes, GPS, stripping) and animated GIF/WebP, each checked by reading the written file back. The
CLI tests run the installed console script with the bundled model on tiny files."""

from __future__ import annotations

import json
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms, JpegImagePlugin

from realsr_cli.config import EncodeConfig
from realsr_cli.errors import ConfigError, InputError
from realsr_cli.inference.inputs import expand_inputs
from realsr_cli.photo import formats
from realsr_cli.photo.formats import OUTPUT_FORMATS, image_extensions, output_format_for, register_codecs
from realsr_cli.photo.read import EXIF_IFD, GPS_IFD, ORIENTATION_TAG, Animation, read_image
from realsr_cli.photo.write import encoder_settings, write_image

REALSR = Path(sys.executable).with_name("realsr")
LIMIT = 64_000_000
SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
MAKE, PIXEL_X, PIXEL_Y = 0x010F, 0xA002, 0xA003

register_codecs()  # the tests write HEIC files through Pillow, as a phone's would arrive


def realsr(*args) -> subprocess.CompletedProcess:
    return subprocess.run([str(REALSR), *map(str, args)], capture_output=True, text=True, timeout=300)


def camera_exif(orientation: int = 1) -> Image.Exif:
    """EXIF as a phone writes it: make, orientation, the pixel size tags and a GPS position."""
    exif = Image.Exif()
    exif[MAKE] = "RealSR Phone"
    exif[ORIENTATION_TAG] = orientation
    exif.get_ifd(EXIF_IFD).update({PIXEL_X: 40, PIXEL_Y: 30})
    exif.get_ifd(GPS_IFD).update({1: "N", 2: (48.0, 51.0, 30.0)})
    return exif


def smooth(height: int, width: int) -> np.ndarray:
    """(H, W, 3) uint8 with gentle gradients: what lossy codecs keep close, unlike noise."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), (x + y) % 64 + 96], -1).astype(
        np.uint8
    )


def exif_of(path: Path) -> Image.Exif:
    with Image.open(path) as im:
        return im.getexif()


def frames_of(path: Path) -> tuple[list[np.ndarray], list[int], int | None]:
    """(each frame as RGBA, each frame's duration, loop count) of an animation file."""
    frames, durations = [], []
    with Image.open(path) as im:
        for index in range(getattr(im, "n_frames", 1)):
            im.seek(index)
            frames.append(np.asarray(im.convert("RGBA")))
            durations.append(im.info.get("duration"))
        return frames, durations, im.info.get("loop")


def moving_square(count: int = 3, size: tuple[int, int] = (16, 12)) -> list[Image.Image]:
    """Frames of a square moving across a transparent canvas, each in its own colour."""
    frames = []
    for index in range(count):
        frame = Image.new("RGBA", size, (0, 0, 0, 0))
        frame.paste((220, 60 * index, 40, 255), (index * 3, 2, index * 3 + 6, 8))
        frames.append(frame)
    return frames


# ---- HEIC/HEIF and AVIF in


@pytest.mark.parametrize("ext", [".heic", ".avif"])
def test_phone_formats_are_read_upright_with_exif_and_profile(tmp_path, ext):
    pixels = smooth(30, 40)
    src = tmp_path / f"phone{ext}"
    # orientation 6: the camera was turned; HEIC stores it as a rotation of the image, AVIF as EXIF (irot alike)
    Image.fromarray(pixels).save(src, quality=95, exif=camera_exif(6).tobytes(), icc_profile=SRGB)
    photo = read_image(src, max_pixels=LIMIT)
    assert photo.format == ("HEIF" if ext == ".heic" else "AVIF")
    assert photo.rgb.shape == (40, 30, 3)  # upright: turned a quarter clockwise
    upright = np.rot90(pixels, -1).astype(int)
    assert np.abs(photo.rgb.astype(int) - upright).mean() < 4
    assert photo.icc_profile == SRGB
    exif = Image.Exif()
    exif.load(photo.exif)
    assert exif[MAKE] == "RealSR Phone" and exif[ORIENTATION_TAG] == 1
    assert exif.get_ifd(GPS_IFD)[1] == "N"


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
def test_phone_formats_round_trip_with_quality_subsampling_and_metadata(tmp_path, fmt):
    pixels = smooth(48, 64)
    ext = OUTPUT_FORMATS[fmt].extension
    sizes = {}
    for quality, subsampling in [(95, "4:4:4"), (95, "4:2:0"), (30, "4:2:0")]:
        out = tmp_path / f"{quality}_{subsampling.replace(':', '')}{ext}"
        kwargs = {"quality": quality, "subsampling": subsampling, "icc_profile": SRGB, "exif": camera_exif().tobytes()}
        assert write_image(out, pixels, fmt=fmt, **kwargs) == []
        sizes[quality, subsampling] = out.stat().st_size
        back = read_image(out, max_pixels=LIMIT)
        assert back.format == fmt and back.rgb.shape == pixels.shape and back.icc_profile == SRGB
        assert np.abs(back.rgb.astype(int) - pixels).mean() < (3 if quality == 95 else 12)
        exif = exif_of(out)
        assert exif[MAKE] == "RealSR Phone" and exif.get_ifd(EXIF_IFD)[PIXEL_X] == 64
        if fmt == "HEIF":  # pillow-heif reports the chroma it decoded
            with Image.open(out) as im:
                assert im.info["chroma"] == int(subsampling.replace(":", "")[:3])
    assert sizes[95, "4:4:4"] > sizes[95, "4:2:0"] > sizes[30, "4:2:0"]


def test_phone_formats_keep_alpha_and_gray(tmp_path, rng):
    rgb = smooth(20, 24)
    alpha = np.where(np.arange(24) < 12, 255, 0).astype(np.uint8)[None].repeat(20, 0)
    for fmt in ("HEIF", "AVIF"):
        out = tmp_path / f"a{OUTPUT_FORMATS[fmt].extension}"
        write_image(out, rgb, alpha=alpha, fmt=fmt, quality=95)
        back = read_image(out, max_pixels=LIMIT)
        assert back.alpha is not None and np.abs(back.alpha.astype(int) - alpha).max() <= 8
        gray = tmp_path / f"g{OUTPUT_FORMATS[fmt].extension}"
        write_image(gray, rgb, grayscale=True, fmt=fmt, quality=95)
        assert read_image(gray, max_pixels=LIMIT).grayscale


def test_a_missing_encoder_is_a_one_line_config_error_and_same_falls_back_to_png(monkeypatch):
    monkeypatch.delitem(Image.SAVE, "AVIF")
    monkeypatch.delitem(Image.SAVE, "HEIF")
    for choice in ("avif", "heic"):
        with pytest.raises(ConfigError, match=rf"--format {choice}: this installation cannot write") as err:
            output_format_for("PNG", choice)
        assert "\n" not in str(err.value)
    assert output_format_for("AVIF", "same") == output_format_for("HEIF", "same") == "PNG"


# ---- what counts as an image


def test_image_extensions_are_the_decoders_this_machine_has():
    extensions = image_extensions()
    assert {".heic", ".heif", ".hif", ".avif", ".jpg", ".png", ".gif", ".webp", ".tif", ".bmp"} <= extensions
    assert all(ext in extensions for f in OUTPUT_FORMATS.values() for ext in f.extensions)
    # write-only (PDF), header-only (MPEG) and handler-less stubs (HDF5, WMF) are not images here
    assert not {".pdf", ".mpg", ".h5", ".wmf", ".txt"} & extensions
    assert all(ext == ext.lower() and ext.startswith(".") for ext in extensions)


def test_folders_and_globs_find_heic_and_avif(tmp_path):
    folder = tmp_path / "phone"
    (folder / "sub").mkdir(parents=True)
    for name in ("a.heic", "b.AVIF", "sub/c.heif"):
        Image.fromarray(smooth(8, 8)).save(folder / name, format="AVIF" if name.endswith("AVIF") else "HEIF")
    (folder / "notes.txt").write_text("not an image")
    found = [item.path.relative_to(folder).as_posix() for item in expand_inputs([folder])]
    assert found == ["a.heic", "b.AVIF"]
    found = [item.path.relative_to(folder).as_posix() for item in expand_inputs([folder], recursive=True)]
    assert found == ["a.heic", "b.AVIF", "sub/c.heif"]
    globbed = [item.path.name for item in expand_inputs([str(folder / "*")])]
    assert globbed == ["a.heic", "b.AVIF"]


# ---- JPEG output policy


@pytest.mark.parametrize("quality", [30, 75, 92, 100])
@pytest.mark.parametrize(("code", "subsampling"), [(0, "4:4:4"), (1, "4:2:2"), (2, "4:2:0")])
def test_a_jpeg_sources_quality_and_subsampling_are_read_from_its_header(tmp_path, quality, code, subsampling):
    Image.fromarray(smooth(16, 16)).save(tmp_path / "s.jpg", quality=quality, subsampling=code)
    photo = read_image(tmp_path / "s.jpg", max_pixels=LIMIT)
    assert (photo.jpeg_quality, photo.jpeg_subsampling) == (quality, subsampling)


def test_gray_jpeg_and_other_sources_have_no_chroma_to_keep(tmp_path):
    Image.fromarray(smooth(16, 16)[..., 0]).save(tmp_path / "g.jpg", quality=80)
    gray = read_image(tmp_path / "g.jpg", max_pixels=LIMIT)
    assert (gray.jpeg_quality, gray.jpeg_subsampling) == (80, None)
    Image.fromarray(smooth(16, 16)).save(tmp_path / "p.png")
    png = read_image(tmp_path / "p.png", max_pixels=LIMIT)
    assert (png.jpeg_quality, png.jpeg_subsampling) == (None, None)


@pytest.mark.parametrize(
    ("encoding", "fmt", "source", "expected"),
    [
        (EncodeConfig(), "JPEG", (75, "4:2:0"), (75, "4:2:0")),  # a JPEG keeps its source's coding
        (EncodeConfig(), "JPEG", (98, "4:4:4"), (95, "4:4:4")),  # within 75..95
        (EncodeConfig(), "JPEG", (40, "4:2:2"), (75, "4:2:2")),
        (EncodeConfig(), "AVIF", (75, "4:4:4"), (85, "4:4:4")),  # another format: its default, the source's chroma
        (EncodeConfig(), "HEIF", (None, None), (65, "4:2:0")),
        (EncodeConfig(), "JPEG", (None, None), (90, "4:2:0")),  # not a JPEG source
        (EncodeConfig(quality=60, subsampling="4:4:4"), "JPEG", (75, "4:2:0"), (60, "4:4:4")),  # asked for
    ],
)
def test_the_quality_and_subsampling_an_output_gets(encoding, fmt, source, expected):
    assert encoder_settings(encoding, fmt, *source) == expected


@pytest.mark.parametrize(("kwargs", "message"), [({"quality": 0}, "quality"), ({"png_compression": 10}, "PNG")])
def test_encoding_options_are_checked(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        EncodeConfig(**kwargs)
    with pytest.raises(ConfigError, match="subsampling"):
        EncodeConfig(subsampling="4:1:1")


def test_jpeg_output_uses_the_subsampling_asked_for(tmp_path):
    for code, subsampling in [(0, "4:4:4"), (1, "4:2:2"), (2, "4:2:0")]:
        write_image(tmp_path / "o.jpg", smooth(16, 16), fmt="JPEG", quality=80, subsampling=subsampling)
        with Image.open(tmp_path / "o.jpg") as im:
            assert JpegImagePlugin.get_sampling(im) == code


# ---- metadata


def test_exif_sizes_follow_the_output_and_gps_can_be_dropped(tmp_path):
    exif = camera_exif().tobytes()
    write_image(tmp_path / "k.png", smooth(30, 50), exif=exif)
    kept = exif_of(tmp_path / "k.png")
    assert (kept.get_ifd(EXIF_IFD)[PIXEL_X], kept.get_ifd(EXIF_IFD)[PIXEL_Y]) == (50, 30)
    assert kept.get_ifd(GPS_IFD)[2] == (48.0, 51.0, 30.0)
    write_image(tmp_path / "s.jpg", smooth(30, 50), fmt="JPEG", exif=exif, strip_gps=True)
    stripped = exif_of(tmp_path / "s.jpg")
    assert GPS_IFD not in stripped and not stripped.get_ifd(GPS_IFD)
    assert stripped[MAKE] == "RealSR Phone" and stripped.get_ifd(EXIF_IFD)[PIXEL_X] == 50


# ---- animations


def test_an_animated_gif_and_webp_are_read_whole(tmp_path):
    frames = moving_square()
    # GIF: frame 2 is not disposed of, so frame 3 shows over it (its square stays)
    gif = {"duration": [40, 80, 120], "loop": 0, "disposal": [2, 1, 2]}
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:], **gif)
    frames[0].save(tmp_path / "a.webp", save_all=True, append_images=frames[1:], duration=[40, 80, 120], loop=2)
    composed = [np.asarray(f) for f in frames]
    composed[2] = np.where(composed[2][..., 3:] == 255, composed[2], composed[1])
    for name, loop, disposals, expected_frames in [
        ("a.gif", 0, [2, 1, 2], composed),
        ("a.webp", 2, None, [np.asarray(f) for f in frames]),
    ]:
        photo = read_image(tmp_path / name, max_pixels=LIMIT)
        assert photo.warnings == [] and photo.alpha is not None
        animation = photo.animation
        assert isinstance(animation, Animation) and len(animation.frames) == 2
        assert animation.durations == [40, 80, 120] and animation.loop == loop and animation.disposals == disposals
        for (rgb, alpha), expected in zip([(photo.rgb, photo.alpha), *animation.frames], expected_frames, strict=True):
            assert np.array_equal(alpha, expected[..., 3])
            assert np.abs(rgb.astype(int) - expected[..., :3])[alpha == 255].max() <= 8


def test_the_pixel_limit_counts_every_frame(tmp_path):
    frames = moving_square(4)
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    assert read_image(tmp_path / "a.gif", max_pixels=4 * 16 * 12).animation is not None
    with pytest.raises(InputError, match=r"4 frames of 16x12 are 768 pixels, above the limit of 767"):
        read_image(tmp_path / "a.gif", max_pixels=767)


@pytest.mark.parametrize("fmt", ["GIF", "WEBP"])
def test_an_animation_is_written_with_its_frames_durations_and_loop(tmp_path, fmt):
    frames = [np.asarray(f) for f in moving_square(3)]
    animation = Animation([(f[..., :3], f[..., 3]) for f in frames[1:]], [30, 60, 90], [2, 2, 2], 3)
    out = tmp_path / f"a{OUTPUT_FORMATS[fmt].extension}"
    options = {"quality": 100} if fmt == "WEBP" else {}
    assert write_image(out, frames[0][..., :3], alpha=frames[0][..., 3], fmt=fmt, animation=animation, **options) == []
    written, durations, loop = frames_of(out)
    assert durations == [30, 60, 90] and loop == 3
    assert len(written) == 3
    for got, expected in zip(written, frames, strict=True):
        assert np.array_equal(got[..., 3], expected[..., 3])
        opaque = expected[..., 3] == 255
        assert np.abs(got[..., :3].astype(int) - expected[..., :3])[opaque].max() <= 8


def test_an_animation_in_a_still_format_gives_its_first_frame_and_says_so(tmp_path):
    frames = [np.asarray(f) for f in moving_square(2)]
    animation = Animation([(frames[1][..., :3], frames[1][..., 3])], [50, 50], None, 0)
    warnings = write_image(tmp_path / "a.png", frames[0][..., :3], alpha=frames[0][..., 3], animation=animation)
    assert warnings == [
        "animated image: only the first frame is upscaled (png holds no animation; --format gif or webp keeps "
        "every frame)"
    ]
    assert np.array_equal(np.asarray(Image.open(tmp_path / "a.png")), frames[0])


def test_gif_output_keeps_transparency_of_gray_and_resized_alpha(tmp_path):
    gray = smooth(20, 30)[..., :1].repeat(3, axis=2)
    alpha = np.zeros((20, 30), np.uint8)
    alpha[5:15], alpha[15] = 255, 100  # a resize's soft edge: GIF's one transparent colour takes it as clear
    assert write_image(tmp_path / "g.gif", gray, alpha=alpha, grayscale=True, fmt="GIF") == []
    with Image.open(tmp_path / "g.gif") as im:
        assert np.array_equal(np.asarray(im.convert("RGBA"))[..., 3], np.where(alpha > 127, 255, 0))


def test_same_keeps_an_animated_gif_and_turns_a_still_one_into_png():
    assert output_format_for("GIF", "same", animated=True) == "GIF"
    assert output_format_for("GIF", "same") == "PNG"
    assert output_format_for("WEBP", "same", animated=True) == "WEBP"
    assert formats.format_of("x.gif") == "GIF" and formats.format_of("x.HEIC") == "HEIF"


# ---- through the console script


needs_cli = pytest.mark.skipif(not REALSR.exists(), reason=f"console script not installed at {REALSR}")


@needs_cli
def test_cli_upscales_a_phone_folder_heic_avif_and_an_animation(tmp_path):
    folder = tmp_path / "phone"
    folder.mkdir()
    Image.fromarray(smooth(12, 16)).save(folder / "a.heic", exif=camera_exif(6).tobytes(), icc_profile=SRGB)
    Image.fromarray(smooth(12, 16)).save(folder / "b.avif", exif=camera_exif().tobytes())
    frames = moving_square()
    gif = {"duration": [40, 80, 120], "loop": 0, "disposal": [2, 1, 2]}
    frames[0].save(folder / "c.gif", save_all=True, append_images=frames[1:], **gif)
    result = realsr("upscale", folder, "-o", tmp_path / "out", "--json", "-q")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(Path(r["output"]).name, r["output_size"]) for r in lines] == [
        ("a_x4.heic", [48, 64]),  # upright
        ("b_x4.avif", [64, 48]),
        ("c_x4.gif", [64, 48]),
    ]
    heic = exif_of(tmp_path / "out" / "a_x4.heic")
    assert heic[MAKE] == "RealSR Phone" and heic.get_ifd(EXIF_IFD)[PIXEL_X] == 48 and heic.get_ifd(GPS_IFD)
    with Image.open(tmp_path / "out" / "a_x4.heic") as im:
        assert im.info["icc_profile"] == SRGB
    assert exif_of(tmp_path / "out" / "b_x4.avif").get_ifd(EXIF_IFD)[PIXEL_Y] == 48
    written, durations, loop = frames_of(tmp_path / "out" / "c_x4.gif")
    assert len(written) == 3 and durations == [40, 80, 120] and loop == 0
    source, _, _ = frames_of(folder / "c.gif")
    for got, expected in zip(written, source, strict=True):  # it plays the same: each frame's shapes, at x4
        assert (got[2::4, 2::4, 3] == expected[..., 3]).mean() > 0.9


@needs_cli
def test_cli_jpeg_policy_and_metadata_flags(tmp_path):
    src = tmp_path / "p.jpg"
    Image.fromarray(smooth(24, 32)).save(src, quality=75, subsampling=2, exif=camera_exif().tobytes())
    assert realsr("upscale", src, "-q").returncode == 0
    kept = read_image(tmp_path / "p_x4.jpg", max_pixels=LIMIT)
    assert (kept.jpeg_quality, kept.jpeg_subsampling) == (75, "4:2:0")  # the source's coding
    exif = exif_of(tmp_path / "p_x4.jpg")
    assert exif.get_ifd(EXIF_IFD)[PIXEL_X] == 128 and exif.get_ifd(GPS_IFD)

    args = ["--quality", "92", "--subsampling", "4:4:4", "--strip-gps"]
    assert realsr("upscale", src, "-o", tmp_path / "g.jpg", "-q", *args).returncode == 0
    chosen = read_image(tmp_path / "g.jpg", max_pixels=LIMIT)
    assert (chosen.jpeg_quality, chosen.jpeg_subsampling) == (92, "4:4:4")
    exif = exif_of(tmp_path / "g.jpg")
    assert exif[MAKE] == "RealSR Phone" and not exif.get_ifd(GPS_IFD)

    assert realsr("upscale", src, "-o", tmp_path / "s.heic", "-q", "--strip-metadata").returncode == 0
    with Image.open(tmp_path / "s.heic") as im:
        assert im.format == "HEIF" and not im.getexif() and not im.info.get("exif")


def _zlib_level_class(path: Path) -> int:
    """The FLEVEL bits of a PNG's zlib stream header: 0 fastest (levels 0-1), 1 fast (2-5), 2 default, 3 best."""
    data = path.read_bytes()
    start = data.index(b"IDAT") + 4
    assert data[start] & 0x0F == zlib.DEFLATED and int.from_bytes(data[start : start + 2], "big") % 31 == 0
    return data[start + 1] >> 6


@needs_cli
def test_cli_animation_to_a_still_format_png_level_and_pixel_limit(tmp_path):
    frames = moving_square(4)
    src = tmp_path / "a.gif"
    frames[0].save(src, save_all=True, append_images=frames[1:], duration=50, loop=0)
    result = realsr("upscale", src, "--format", "png", "-q")
    assert result.returncode == 0, result.stderr
    assert "only the first frame is upscaled (png holds no animation" in result.stderr
    assert _zlib_level_class(tmp_path / "a_x4.png") == 1  # level 4, the default
    assert realsr("upscale", src, "-o", tmp_path / "best.png", "--png-compression", "9", "-q").returncode == 0
    assert _zlib_level_class(tmp_path / "best.png") == 3

    result = realsr("upscale", src, "-o", tmp_path / "big.gif", "--max-pixels", str(4 * 16 * 12 - 1))
    assert result.returncode == 3, result.stderr
    assert "4 frames of 16x12 are 768 pixels, above the limit of 767 (--max-pixels)" in result.stderr
    assert not (tmp_path / "big.gif").exists()
