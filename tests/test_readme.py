"""Every ```python example in the README runs as written: in a folder holding the files the examples name (a
photo.jpg and a folder/ of photos, as a user's would), with the bundled model."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SAMPLE = ROOT / "realsr_cli" / "samples" / "kodim23.png"


def python_blocks() -> list[tuple[int, str]]:
    """(line number, code) of each ```python block of the README."""
    text = README.read_text(encoding="utf-8")
    return [
        (text.count("\n", 0, match.start()) + 1, match.group(1))
        for match in re.finditer(r"^```python\n(.*?)^```", text, re.DOTALL | re.MULTILINE)
    ]


BLOCKS = python_blocks()


def test_readme_has_python_examples():
    assert BLOCKS, "README.md has no ```python block: this test would check nothing"


@pytest.mark.parametrize(("line", "code"), BLOCKS, ids=[f"README.md:{line}" for line, _ in BLOCKS])
def test_readme_python_example_runs(line, code, tmp_path, monkeypatch):
    # small crops of the Kodak sample keep the bundled model's work to a fraction of a second per photo
    with Image.open(SAMPLE) as sample:
        photo = sample.convert("RGB").crop((300, 200, 348, 232))
    photo.save(tmp_path / "photo.jpg", quality=92)
    (tmp_path / "folder" / "sub").mkdir(parents=True)
    photo.save(tmp_path / "folder" / "a.png")
    photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(tmp_path / "folder" / "sub" / "b.jpg")
    monkeypatch.chdir(tmp_path)

    exec(compile(code, f"README.md:{line}", "exec"), {"__name__": "readme_example"})

    # whatever an example writes is a photo four times the size of its input
    written = [path for path in tmp_path.rglob("*_x4.*") if path.is_file()]
    for path in written:
        with Image.open(path) as result:
            assert result.size == (48 * 4, 32 * 4), path
