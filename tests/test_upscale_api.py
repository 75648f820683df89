"""The Python API: Upscaler on arrays, PIL images, files and batches; tiled == whole for the compact preset;
scales; errors; the default model; interrupts; and no torch import on the ONNX path."""

import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from realsr_cli.errors import ConfigError, InputError
from realsr_cli.inference import runtime
from realsr_cli.inference.inputs import expand_inputs
from realsr_cli.inference.pipeline import BatchOptions
from realsr_cli.inference.runtime.bundled import MANIFEST
from realsr_cli.inference.tiling import RAMP
from realsr_cli.inference.upscaler import Upscaler
from realsr_cli.photo.pixels import resize
from realsr_cli.photo.read import photo_from_array, read_image
from realsr_cli.photo.write import write_image


def photo(rng, height, width, channels=3):
    """Smooth structure plus noise, uint8, so upscaled results are not trivially flat."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([np.sin(x / 4 + c) * np.cos(y / 5 - c) for c in range(channels)], axis=-1) * 0.4 + 0.5
    noisy = base + rng.normal(0, 0.08, base.shape)
    return (np.clip(noisy, 0, 1) * 255).round().astype(np.uint8)


# ---- tiled == whole, the compact preset


@pytest.mark.parametrize("height, width", [(1, 150), (150, 1), (1, 1), (9, 7), (40, 33), (97, 130), (140, 95)])
def test_compact_tiled_equals_whole(compact_exports, rng, height, width):
    image = photo(rng, height, width)
    with Upscaler(compact_exports["onnx"], device="cpu", tile=0) as up:
        whole = up.upscale(image).astype(int)
        assert whole.shape == (4 * height, 4 * width, 3)
    for tile in (1, 16, 50, 96):  # tiny tiles are raised to twice the overlap
        for batch in (1, 2):
            with Upscaler(compact_exports["onnx"], device="cpu", tile=tile, batch=batch) as up:
                tiled = up.upscale(image).astype(int)
            assert np.abs(tiled - whole).max() <= 1, f"tile {tile} batch {batch}"  # 1/255 on 8-bit output


def test_tiles_are_used_when_the_image_is_large_enough(compact_exports):
    with Upscaler(compact_exports["onnx"], tile=50) as up:
        plan = up.plan(140, 97)
        assert plan.count > 1 and plan.overlap == 2 * up.spec.receptive_field + RAMP
        assert up.plan(40, 30).count == 1  # smaller than a tile: one piece


def test_onnx_equals_torchscript(compact_exports, rng):
    image = rng.random((23, 31, 3), dtype=np.float32)
    with (
        Upscaler(compact_exports["onnx"], tile=0) as onnx_up,
        Upscaler(compact_exports["torchscript"], tile=0, precision="fp32") as ts_up,
    ):
        assert (onnx_up.backend_name, ts_up.backend_name) == ("onnx", "torchscript")
        a, b = onnx_up.upscale(image), ts_up.upscale(image)
    assert a.dtype == np.float32 and a.shape == (92, 124, 3)
    np.testing.assert_allclose(a, b, atol=1e-3)


@pytest.mark.parametrize("input_shape", [("N", 3, "H", "W"), (1, 3, 16, 24)], ids=["dynamic", "fixed-size"])
def test_foreign_model_through_the_upscaler(tmp_path, rng, input_shape):
    # an ONNX model made elsewhere (no realsr metadata): nearest x2, so the exact answer is known for any tiling
    from onnx import TensorProto, helper, save

    scales = helper.make_tensor("scales", TensorProto.FLOAT, [4], [1, 1, 2, 2])
    graph = helper.make_graph(
        [helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="nearest")],
        "elsewhere",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(input_shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", None, None, None])],
        initializer=[scales],
    )
    path = tmp_path / "nearest.onnx"
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)
    image = rng.integers(0, 256, (37, 50, 3), dtype=np.uint8)
    with Upscaler(path, tile=20, scale_hint=2) as up:
        assert up.spec.scale == 2 and up.spec.receptive_field is None
        if input_shape[2] == 16:
            assert up.plan(50, 37).tile_shape == (16, 24)
        out = up.upscale(image)
    np.testing.assert_array_equal(out, image.repeat(2, 0).repeat(2, 1))


# ---- kinds of input


def test_arrays_keep_layout_and_dtype(tiny_exports, rng):
    with Upscaler(tiny_exports["onnx"]) as up:
        assert up.spec.scale == 4 and up.scale == 4 and up.device == "cpu"
        cases = [
            rng.integers(0, 256, (9, 11, 3), dtype=np.uint8),
            rng.integers(0, 256, (9, 11, 4), dtype=np.uint8),
            rng.integers(0, 65536, (9, 11, 3), dtype=np.uint16),
            rng.integers(0, 256, (9, 11), dtype=np.uint8),
            rng.integers(0, 256, (9, 11, 1), dtype=np.uint8),
            rng.integers(0, 256, (9, 11, 2), dtype=np.uint8),
            rng.random((9, 11, 3), dtype=np.float32),
        ]
        for array in cases:
            out = up.upscale(array)
            assert out.dtype == array.dtype
            assert out.shape == (36, 44) + array.shape[2:]
    # alpha never goes through the model: an opaque alpha stays opaque
    rgba = cases[1].copy()
    rgba[..., 3] = 255
    with Upscaler(tiny_exports["onnx"]) as up:
        assert (up.upscale(rgba)[..., 3] == 255).all()


@pytest.mark.parametrize(
    "mode, expected",
    [("RGB", "RGB"), ("RGBA", "RGBA"), ("L", "L"), ("LA", "LA"), ("I;16", "I;16"), ("P", "RGB"), ("CMYK", "RGB")],
)
def test_pil_images_keep_their_mode(tiny_exports, mode, expected):
    image = Image.new(mode, (13, 10))
    with Upscaler(tiny_exports["onnx"]) as up:
        out = up.upscale(image)
    assert isinstance(out, Image.Image) and out.mode == expected and out.size == (52, 40)


def test_grayscale_stays_gray(tiny_exports, rng):
    gray = rng.integers(0, 256, (12, 10), dtype=np.uint8)
    with Upscaler(tiny_exports["onnx"]) as up:
        out = up.upscale(Image.fromarray(gray))
    assert out.mode == "L"


# ---- scale


def test_scale_below_native_is_a_downsampled_native_pass(tiny_ranged_exports, rng):
    image = photo(rng, 15, 22)
    with Upscaler(tiny_ranged_exports["onnx"]) as native, Upscaler(tiny_ranged_exports["onnx"], scale=2) as half:
        full = native.upscale(image)
        out = half.upscale(image)
        assert half.scale == 2.0 and half.native_scale == 4
    assert out.shape == (full.shape[0] // 2, full.shape[1] // 2, 3)
    assert full.std() > 10  # real outputs, so the comparison below can fail
    expected = resize(full, (44, 30))
    assert np.abs(out.astype(int) - expected).max() <= 1
    with Upscaler(tiny_ranged_exports["onnx"], scale=1) as same:
        assert same.upscale(image).shape == image.shape


@pytest.mark.parametrize("scale, message", [(5, "above the model's native x4"), (0.5, "at least 1"), (0, "at least 1")])
def test_scale_outside_1_to_native_is_a_config_error(tiny_exports, scale, message):
    with pytest.raises(ConfigError, match=message):
        Upscaler(tiny_exports["onnx"], scale=scale)


def test_bad_options_are_config_errors(tiny_exports):
    with pytest.raises(ConfigError):
        Upscaler(tiny_exports["onnx"], tile=-1)
    with pytest.raises(ConfigError):
        Upscaler(tiny_exports["onnx"], batch=0)
    with pytest.raises(ConfigError):
        Upscaler(tiny_exports["onnx"], backend="tflite")
    with Upscaler(tiny_exports["onnx"]) as up:
        with pytest.raises(ConfigError, match="quality"):
            up.upscale_files([], quality=0)
        with pytest.raises(ConfigError, match="format"):
            up.upscale_files([], fmt="bmp")


# ---- default model


def test_missing_default_model_says_to_pass_model(monkeypatch, tmp_path):
    monkeypatch.setattr(runtime, "default_model_dirs", lambda: [tmp_path / "installed", tmp_path / "source"])
    with pytest.raises(InputError, match="bundled model .*is missing from .*installed.*--model"):
        Upscaler()


def test_default_model_is_found_in_the_export_folder(monkeypatch, tmp_path, tiny_exports):
    folder = tmp_path / "export"
    folder.mkdir()
    shutil.copy(tiny_exports["onnx"], folder / f"{runtime.DEFAULT_MODEL_STEM}.onnx")
    shutil.copy(tiny_exports["torchscript"], folder / f"{runtime.DEFAULT_MODEL_STEM}.ts")
    shutil.copy(runtime.bundled_models().folder / MANIFEST, folder)  # the manifest names the default model
    monkeypatch.setattr(runtime, "default_model_dirs", lambda: [tmp_path / "missing", folder])
    with Upscaler(device="cpu") as up:  # auto: whichever of the two files runs faster here (test_fastest.py)
        assert up.model_path.parent == folder
    with Upscaler(device="cpu", precision="fp32") as up:  # the ONNX file, unless TorchScript is asked for
        assert up.backend_name == "onnx"
    with Upscaler(backend="torchscript") as up:
        assert up.backend_name == "torchscript"


# ---- files and batches


def write_inputs(folder, rng):
    (folder / "sub").mkdir(parents=True)
    Image.fromarray(photo(rng, 12, 16)).save(folder / "a.png")
    Image.fromarray(photo(rng, 10, 9)).save(folder / "sub" / "b.jpg", quality=95)
    (folder / "bad.png").write_text("this is not a png")
    Image.fromarray(photo(rng, 8, 8, 1)[..., 0]).save(folder / "c.png")
    return folder


def test_on_result_hears_each_result_once_final_before_the_batch_yields_it(tiny_exports, tmp_path, rng):
    """What a Ray worker relies on to report an image the moment it is written, before the next is inferred."""
    items = expand_inputs([write_inputs(tmp_path / "in", rng)], recursive=True)
    heard = []
    with Upscaler(tiny_exports["onnx"], device="cpu") as up:
        options = BatchOptions(out_dir=tmp_path / "out", on_result=heard.append)
        for result in up.upscale_batch(items, options):
            assert any(r is result for r in heard)  # heard before it was yielded
        assert [r.src.name for r in heard] == [item.path.name for item in items]  # input order, failures too
        assert [r.status for r in heard] == ["ok", "failed", "ok", "ok"]

        def ledger_gone(result):
            raise ConnectionError("the ledger is gone")

        with pytest.raises(ConnectionError, match="the ledger is gone"):  # raised on the caller's thread
            list(up.upscale_batch(items, BatchOptions(out_dir=tmp_path / "out2", on_result=ledger_gone)))


def leftovers(folder):
    return [p for p in folder.rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"]


def test_batch_goes_on_past_a_bad_file_and_mirrors_the_tree(tiny_exports, tmp_path, rng):
    src = write_inputs(tmp_path / "in", rng)
    out = tmp_path / "out"
    starts, ticks = [], []
    with Upscaler(tiny_exports["onnx"]) as up:
        results = list(
            up.upscale_files(
                [src, tmp_path / "nothing-here.png"],
                out_dir=out,
                recursive=True,
                on_image=starts.append,
                on_tile=lambda done, total: ticks.append((done, total)),
            )
        )
    by_name = {r.src.name: r for r in results}
    assert [r.src.name for r in results] == ["a.png", "bad.png", "c.png", "b.jpg", "nothing-here.png"]
    assert by_name["bad.png"].status == "failed" and "bad.png" in by_name["bad.png"].error
    assert by_name["bad.png"].exit_code == InputError.exit_code
    assert by_name["nothing-here.png"].status == "failed" and "no such file" in by_name["nothing-here.png"].error
    ok = [r for r in results if r.ok]
    assert {r.dst.relative_to(out).as_posix() for r in ok} == {"a_x4.png", "c_x4.png", "sub/b_x4.jpg"}
    for r in ok:
        assert r.dst.is_file() and r.output_size == (r.input_size[0] * 4, r.input_size[1] * 4)
        assert set(r.timings) == {"decode", "infer", "encode"} and r.seconds > 0
    with Image.open(out / "c_x4.png") as im:
        assert im.mode == "L" and im.size == (32, 32)  # grayscale back to grayscale
    assert [s.src.name for s in starts] == ["a.png", "c.png", "b.jpg"] and starts[0].total == 5
    assert ticks and ticks[-1][0] == ticks[-1][1]
    assert by_name["a.png"].to_dict()["output_size"] == [64, 48]
    assert leftovers(out) == []


def test_skip_existing(tiny_exports, tmp_path, rng):
    src = write_inputs(tmp_path / "in", rng)
    with Upscaler(tiny_exports["onnx"]) as up:
        first = list(up.upscale_files([src / "a.png", src / "c.png"], out_dir=tmp_path / "out"))
        again = list(up.upscale_files([src / "a.png", src / "c.png"], out_dir=tmp_path / "out", skip_existing=True))
    assert [r.status for r in first] == ["ok", "ok"]
    assert [r.status for r in again] == ["skipped", "skipped"] and again[0].dst == first[0].dst


def test_expand_inputs_folders_globs_and_roots(tmp_path, rng):
    src = write_inputs(tmp_path / "in", rng)
    (src / ".hidden.png").write_bytes(b"")
    (src / "notes.txt").write_text("not an image")
    flat = expand_inputs([src])
    assert [i.path.name for i in flat] == ["a.png", "bad.png", "c.png"] and flat[0].root == src
    deep = expand_inputs([src, src / "a.png"], recursive=True)
    assert [i.path.name for i in deep] == ["a.png", "bad.png", "c.png", "b.jpg"]  # a.png listed once
    globbed = expand_inputs([str(src / "**" / "*.jpg")], recursive=True)
    assert [(i.path.name, i.root) for i in globbed] == [("b.jpg", src)]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert expand_inputs([empty])[0].error.endswith("no images found in folder (use -r/--recursive for sub-folders)")


def test_upscale_file_keeps_16_bits_and_alpha(tiny_exports, tmp_path, rng):
    pixels = rng.integers(0, 65536, (10, 14, 3), dtype=np.uint16)
    alpha = np.full((10, 14), 40000, np.uint16)
    src = tmp_path / "deep.png"
    write_image(src, pixels, alpha=alpha, fmt="PNG")
    with Upscaler(tiny_exports["onnx"]) as up:
        result = up.upscale_file(src, out_dir=tmp_path / "out")
    assert result.ok and result.dst == tmp_path / "out" / "deep_x4.png"
    back = read_image(result.dst, max_pixels=10**6)
    assert back.bit_depth == 16 and back.alpha is not None and back.rgb.shape == (40, 56, 3)
    assert back.alpha.dtype == np.uint16 and (back.alpha == 40000).all()


def test_jpeg_output_is_tiled_into_an_encoder_ready_canvas(tiny_ranged_exports, rng):
    photo = photo_from_array(rng.integers(0, 256, (13, 17, 3), dtype=np.uint8))
    with Upscaler(tiny_ranged_exports["onnx"]) as up:
        for_jpeg = up.upscale_photo(photo, fmt="JPEG").pixels
        plain = up.upscale_photo(photo).pixels
    assert for_jpeg.base.shape == (52, 68, 4) and plain.flags.c_contiguous  # RGBX memory for Pillow's JPEG encoder
    assert plain.std() > 10  # real outputs, so the comparison below can fail
    np.testing.assert_array_equal(for_jpeg, plain)


def test_upscale_file_raises_the_same_errors(tiny_exports, tmp_path):
    (tmp_path / "bad.png").write_text("nope")
    with Upscaler(tiny_exports["onnx"], max_pixels=50) as up:
        with pytest.raises(InputError, match="not an image"):
            up.upscale_file(tmp_path / "bad.png")
        Image.new("RGB", (10, 10)).save(tmp_path / "big.png")
        with pytest.raises(InputError, match="limit"):
            up.upscale_file(tmp_path / "big.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.png", "big.png"]


def test_upscale_file_is_a_batch_of_one(tiny_ranged_exports, tmp_path, rng, monkeypatch):
    src = write_inputs(tmp_path / "in", rng) / "a.png"
    with Upscaler(tiny_ranged_exports["onnx"]) as up:
        single = up.upscale_file(src, out_dir=tmp_path / "one")
        (batch,) = up.upscale_files([src], out_dir=tmp_path / "many")
        assert single.dst.read_bytes() == batch.dst.read_bytes()
        assert (single.input_size, single.output_size) == (batch.input_size, batch.output_size) == ((16, 12), (64, 48))
        named = up.upscale_file(src, tmp_path / "named.jpg")  # format "same" follows the named file's extension
        with Image.open(named.dst) as im:
            assert named.dst == tmp_path / "named.jpg" and im.format == "JPEG"

        def out_of_memory(*args, **kwargs):
            raise MemoryError

        monkeypatch.setattr(up, "upscale_photo", out_of_memory)
        with pytest.raises(InputError, match="out of memory upscaling 16x12"):  # as a batch reports it
            up.upscale_file(src, out_dir=tmp_path / "oom")
    assert not (tmp_path / "oom").exists()


def test_serial_pipeline_with_a_tiny_memory_budget_still_finishes(tiny_exports, tmp_path, rng):
    src = write_inputs(tmp_path / "in", rng)
    with Upscaler(tiny_exports["onnx"]) as up:
        results = list(up.upscale_files([src], out_dir=tmp_path / "out", recursive=True, max_inflight_bytes=1))
    assert [r.status for r in results] == ["ok", "failed", "ok", "ok"]


def test_interrupt_leaves_no_partial_output(tiny_exports, tmp_path, rng):
    src = write_inputs(tmp_path / "in", rng)
    out = tmp_path / "out"
    started = []

    def interrupt_second(start):
        started.append(start.src.name)
        if len(started) == 2:
            raise KeyboardInterrupt

    with Upscaler(tiny_exports["onnx"]) as up:
        with pytest.raises(KeyboardInterrupt):
            for _ in up.upscale_files([src], out_dir=out, recursive=True, on_image=interrupt_second):
                pass
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) if out.exists() else []
    assert written in ([], ["a_x4.png"])  # the first image may have been written whole; nothing else
    assert not out.exists() or leftovers(out) == []
    for name in written:
        with Image.open(out / name) as im:
            im.load()  # complete, decodable
    import threading

    assert not [t for t in threading.enumerate() if t.name.startswith("realsr-")]


def test_breaking_out_of_a_batch_stops_the_workers(tiny_exports, tmp_path, rng):
    import threading

    src = write_inputs(tmp_path / "in", rng)
    with Upscaler(tiny_exports["onnx"]) as up:
        for result in up.upscale_files([src], out_dir=tmp_path / "out", recursive=True):  # noqa: B007
            break
    assert result.src.name == "a.png"
    assert not [t for t in threading.enumerate() if t.name.startswith("realsr-")]


# ---- startup cost: no torch on the ONNX path


def test_onnx_upscaling_never_imports_torch(tiny_exports, tmp_path):
    image = tmp_path / "x.png"
    Image.new("RGB", (9, 7), (120, 30, 200)).save(image)
    code = textwrap.dedent(
        f"""
        import sys
        from realsr_cli.inference.upscaler import Upscaler
        with Upscaler({str(tiny_exports["onnx"])!r}) as up:
            result = up.upscale_file({str(image)!r}, out_dir={str(tmp_path / "out")!r})
            assert result.ok, result
            results = list(up.upscale_files([{str(image)!r}], out_dir={str(tmp_path / "out2")!r}))
            assert results[0].ok, results
        assert "torch" not in sys.modules, "run"
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"}
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "" and proc.stderr == ""
    assert (tmp_path / "out" / "x_x4.png").is_file()
