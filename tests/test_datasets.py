"""Data-set folders (train, eval, degrade) are walked like `realsr upscale` walks a folder: by the one walker,
which skips hidden files and hidden folders such as a file manager's .thumbnails/."""

from pathlib import Path

from PIL import Image

from realsr_cli.inference.inputs import expand_inputs
from realsr_cli.quality.datasets import list_images, list_pairs


def images(root: Path, *names: str) -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 4), (200, 100, 50)).save(path)


def test_list_images_skips_hidden_folders_as_upscale_does(tmp_path):
    images(tmp_path, "a.png", "sub/b.png", ".thumbnails/a.png", "sub/.cache/c.png", ".hidden.png")
    assert list(list_images(tmp_path, "HR")) == ["a.png", "sub/b.png"]
    upscaled = expand_inputs([tmp_path], recursive=True)
    assert [item.path.relative_to(tmp_path).as_posix() for item in upscaled] == ["a.png", "sub/b.png"]


def test_a_thumbnail_cache_on_one_side_does_not_break_pairing(tmp_path):
    images(tmp_path, "lr/p.png", "hr/p.png", "lr/.thumbnails/p.png")
    assert [name for name, _, _ in list_pairs(tmp_path / "lr", tmp_path / "hr")] == ["p.png"]
