"""What the terminal shows: per-image progress bars in a pseudo-terminal, JSON lines that the bars do not overdraw,
whole unwrapped lines when the output is not a terminal, and per-image times that are the image's own."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from realsr_cli.inference.upscaler import Upscaler

REALSR = Path(sys.executable).with_name("realsr")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


@pytest.fixture
def images(tmp_path, rng) -> list[Path]:
    """Four tiny PNGs, s0.png .. s3.png."""
    folder = tmp_path / "in"
    folder.mkdir()
    paths = []
    for i in range(4):
        path = folder / f"s{i}.png"
        Image.fromarray((rng.random((24, 32, 3)) * 255).astype(np.uint8)).save(path)
        paths.append(path)
    return paths


class _PtyReader:
    """Everything written to a pseudo-terminal's slave side, read from its master side on a thread."""

    def __init__(self) -> None:
        self.master, self.slave = pty.openpty()
        self.chunks: list[bytes] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:  # EIO once the slave side is closed
                return
            if not data:
                return
            self.chunks.append(data)

    def text(self) -> str:
        """All output so far, escape sequences removed, one fragment per line or carriage return."""
        os.close(self.slave)
        self.thread.join(timeout=10)
        os.close(self.master)
        return ANSI.sub("", b"".join(self.chunks).decode("utf-8", "replace"))


def test_progress_bars_count_each_image_from_its_own_start(tiny_exports, images, tmp_path, monkeypatch):
    """In a terminal each image gets its own bar: its elapsed time starts at zero and its ETA is live, for every
    image of the run (a reused bar counted from the run's start and, from the third image on, froze at ETA 0:00:00).
    Rich reads time through the console's clock, so a fake clock makes each image take 100 s without waiting."""
    from realsr_cli.cli import _console, cli

    reader = _PtyReader()
    stream = open(reader.slave, "w", closefd=False, encoding="utf-8")
    monkeypatch.setattr(sys, "stderr", stream)
    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.setenv("COLUMNS", "120")
    clock = [1000.0]
    monkeypatch.setattr(_console.console, "get_time", lambda: clock[0])
    # rich decides once, when the console is made, whether to draw live displays; this one was made at import,
    # under pytest's capture
    monkeypatch.setattr(_console.console, "is_interactive", True)
    original = Upscaler.upscale_photo

    def slow_image(self, photo, **kwargs):
        clock[0] += 100  # the image's work, as the bars see it
        time.sleep(0.4)  # wall time for the display to draw this state (it refreshes 6 times a second)
        return original(self, photo, **kwargs)

    monkeypatch.setattr(Upscaler, "upscale_photo", slow_image)
    assert _console.console.is_terminal
    code = cli.main(
        ["upscale", *map(str, images), "--model", str(tiny_exports["onnx"]), "-o", str(tmp_path / "out")],
        prog_name="realsr",
        standalone_mode=False,
    )
    stream.flush()
    text = reader.text()
    assert code in (None, 0), text
    fragments = [" ".join(f.split()) for f in re.split(r"[\r\n]+", text)]
    for i in range(4):
        # the image's own bar, mid-image: 0 of 1 tile, 100 s of its own, the time left not yet known
        assert any(re.search(rf"s{i}\.png (\S+ )?0/1 0:01:40 -:--:--", f) for f in fragments), (i, fragments)
        # the run's bar counts the run: 100 s per image so far
        minutes, seconds = divmod((i + 1) * 100, 60)
        assert any(re.search(rf"images (\S+ )?\d/4 0:{minutes:02d}:{seconds:02d}", f) for f in fragments), i
    for i in range(4):
        assert (tmp_path / "out" / f"s{i}_x4.png").is_file()


def test_json_lines_stay_whole_on_a_terminal(tiny_exports, images, tmp_path):
    """stdout and stderr on one terminal: each JSON line is printed above the live bars, never overdrawn."""
    reader = _PtyReader()
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "100"}
    args = [str(REALSR), "upscale", *map(str, images), "--model", str(tiny_exports["onnx"]), "--json"]
    process = subprocess.run(
        [*args, "-o", str(tmp_path / "out")], stdout=reader.slave, stderr=reader.slave, env=env, timeout=120
    )
    text = reader.text()
    assert process.returncode == 0, text
    records = [json.loads(line) for line in text.splitlines() if line.lstrip().startswith("{")]
    assert [Path(r["input"]).name for r in records] == [p.name for p in images]
    assert all(r["status"] == "ok" and r["output_size"] == [128, 96] for r in records)


def test_piped_output_is_whole_lines(tiny_exports, tmp_path, rng):
    """Not a terminal: eval's table and upscale's lines are printed whole, however long, never cut or wrapped."""
    name = "a_photo_with_a_long_descriptive_name_taken_on_a_long_walk_by_the_river.png"
    for folder, size in (("lr", (16, 12)), ("hr", (64, 48))):
        (tmp_path / folder).mkdir()
        pixels = (rng.random((size[1], size[0], 3)) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(tmp_path / folder / name)
    env = {**os.environ, "COLUMNS": "60"}  # even a narrow terminal elsewhere must not narrow a log
    args = ["eval", "--model", tiny_exports["onnx"], "--lr", tmp_path / "lr", "--hr", tmp_path / "hr", "--no-niqe"]
    result = subprocess.run([str(REALSR), *map(str, args)], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert "…" not in result.stderr
    assert any(re.search(r"PSNR-Y\s+PSNR-Y\s+SSIM-Y\s+SSIM-Y\s+PSNR-RGB\s+PSNR-RGB\s+grid\s+grid", ln) for ln in lines)
    row = next(ln for ln in lines if name in ln)  # the whole name and every value on one line
    assert len(re.findall(r"\d+\.\d{4}\b", row)) >= 2  # SSIM-Y of model and bicubic, all four decimals
    assert any("PSNR/SSIM on BT.601 Y (PSNR-RGB on RGB), 4-pixel border crop; grid:" in ln for ln in lines)

    photo = tmp_path / "lr" / name
    args = ["upscale", photo, "--model", tiny_exports["onnx"], "-o", tmp_path / "out"]
    result = subprocess.run([str(REALSR), *map(str, args)], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert re.fullmatch(r"model tiny\.onnx \(x4, \w+\) on onnx/cpu fp32; output x4; 1 input\(s\)", lines[0]), lines
    assert re.fullmatch(
        rf"{re.escape(str(photo))} 16x12 -> \S+_x4\.png 64x48 \(\d+\.\d s: decode \d+\.\d, infer \d+\.\d, "
        r"encode \d+\.\d\)",
        lines[1],
    ), lines


def test_per_image_seconds_are_the_images_own_work(tiny_exports, images, tmp_path, monkeypatch):
    """In a batch the next image is decoded while this one runs; its seconds must not count that wait."""
    original = Upscaler.upscale_photo

    def slow_image(self, photo, **kwargs):
        time.sleep(0.3)
        return original(self, photo, **kwargs)

    monkeypatch.setattr(Upscaler, "upscale_photo", slow_image)
    with Upscaler(tiny_exports["onnx"]) as up:
        results = list(up.upscale_files(images, out_dir=tmp_path / "out"))
    for result in results:
        assert result.ok
        assert set(result.timings) == {"decode", "infer", "encode"}
        assert result.seconds == pytest.approx(sum(result.timings.values()))
        assert result.timings["infer"] >= 0.3
        # the wait for the image before (another 0.3 s of inference) is not in it
        assert result.seconds < 0.55, result.timings
