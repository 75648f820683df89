"""`realsr compare --html`: a self-contained page with a before/after slider per image, zoom and each column's
`realsr eval` scores, checked as text and in a real headless Chromium (skipped, saying why, without one)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from realsr_cli.cli import cli
from realsr_cli.config import CompareConfig
from realsr_cli.quality.compare import compare_images
from realsr_cli.quality.compare_page import render_page
from realsr_cli.quality.datasets import bicubic_upscale
from realsr_cli.quality.evaluate import evaluate_images

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "realsr_cli" / "samples" / "kodim23.png"
CROP = 32  # LR pixels: 128 px cells at x4

# Debian's chromium in a closed network: without the background-networking flags its own connections are refused
# and logged; a fresh profile per run is playwright's default
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def kodak_pairs(tmp_path) -> tuple[Path, Path]:
    """Two LR/HR pairs cut from the bundled Kodak photo, the LR a bicubic quarter of the HR."""
    lr_dir, hr_dir = tmp_path / "lr", tmp_path / "hr"
    lr_dir.mkdir(), hr_dir.mkdir()
    with Image.open(SAMPLE) as sample:
        photo = sample.convert("RGB")
    for name, box in (("parrots.png", (180, 60, 436, 252)), ("feathers.png", (420, 240, 676, 432))):
        hr = photo.crop(box)
        hr.save(hr_dir / name)
        hr.resize((hr.width // 4, hr.height // 4), Image.BICUBIC).save(lr_dir / name)
    return lr_dir, hr_dir


def test_page_is_self_contained_and_carries_the_eval_scores(kodak_pairs):
    lr_dir, hr_dir = kodak_pairs
    model = ("same as bicubic", lambda lr: bicubic_upscale(lr, 4))
    comparison = compare_images(lr_dir, hr_dir, [model], CompareConfig(crop=CROP, count=2), scored=True)
    page = render_page(comparison, zoom=2)

    assert comparison.labels == ("bicubic", "same as bicubic", "HR")
    # nothing to fetch: no URL but data: ones, and a policy that would block any other
    assert not re.search(r"(src|href)\s*=\s*[\"'](?!data:)[^\"']", page)
    assert "https:" not in page and "http:" not in page
    assert "default-src 'none'" in page
    assert page.count("data:image/png;base64,") == 2 * 3
    # each column's scores are exactly `realsr eval`'s, on the whole image
    first = comparison.rows[0]
    lr = np.asarray(Image.open(lr_dir / first.name))
    hr = np.asarray(Image.open(hr_dir / first.name))
    (expected,) = evaluate_images(lambda x: bicubic_upscale(x, 4), [(first.name, lr, hr)])
    assert first.scores[0] == expected.bicubic and first.scores[1] == expected.model
    assert first.scores[2] == expected.hr
    assert f"<td>{expected.model.psnr_y:.2f}</td>" in page or f"<td class=best>{expected.model.psnr_y:.2f}</td>" in page


def test_compare_command_writes_the_page(kodak_pairs, tmp_path):
    lr_dir, hr_dir = kodak_pairs
    page = tmp_path / "compare.html"
    args = ["compare", "--lr", str(lr_dir), "--hr", str(hr_dir), "--model", "realsr-compact-x4", "--crop", str(CROP)]
    result = CliRunner().invoke(cli, [*args, "--html", str(page)])
    assert result.exit_code == 0, result.output
    text = page.read_text(encoding="utf-8")
    assert "realsr-compact-x4" in text and text.count('<section class="image"') == 2
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    assert "give -o FILE.png, --html FILE.html or both" in result.output


def test_page_in_a_headless_browser(kodak_pairs, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (the dev extra installs it)")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("needs Chromium (Debian: apt-get install chromium; .ci/run installs it)")
    lr_dir, hr_dir = kodak_pairs
    page_path = tmp_path / "compare.html"
    result = CliRunner().invoke(
        cli,
        ["compare", "--lr", str(lr_dir), "--hr", str(hr_dir), "--model", "realsr-compact-x4", "--crop", str(CROP)]
        + ["--label", "realsr", "--zoom", "2", "--html", str(page_path)],
    )
    assert result.exit_code == 0, result.output

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 900, "height": 700})
            problems = []  # console errors, script errors, and any request but the page itself and its data: URIs

            def on_console(message):
                if message.type == "error":
                    problems.append(message.text)

            def on_request(request):
                if request.url != page_path.as_uri() and not request.url.startswith("data:"):
                    problems.append(f"fetched {request.url}")

            page.on("console", on_console)
            page.on("pageerror", lambda error: problems.append(str(error)))
            page.on("request", on_request)
            page.goto(page_path.as_uri())
            page.wait_for_load_state("load")

            section = page.locator("section.image").first
            viewer = section.locator(".viewer")
            left, right = viewer.locator("img").nth(0), viewer.locator("img").nth(1)
            for img in (left, right):  # both pictures decoded at the cell size
                assert img.evaluate("img => img.complete && img.naturalWidth") == CROP * 4
            assert right.evaluate("img => img.style.clipPath") == "inset(0px 0px 0px 50%)"
            assert viewer.evaluate("v => v.getBoundingClientRect().width") == CROP * 4 * 2

            # a drag across the picture moves the split to the pointer
            box = viewer.bounding_box()
            page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] / 2)
            page.mouse.down()
            page.mouse.move(box["x"] + box["width"] * 0.25, box["y"] + box["height"] / 2, steps=5)
            page.mouse.up()
            assert section.locator("input.split").input_value() == "25"
            assert right.evaluate("img => img.style.clipPath") == "inset(0px 0px 0px 25%)"
            # so does the slider itself, from the keyboard
            section.locator("input.split").focus()
            page.keyboard.press("ArrowRight")
            assert right.evaluate("img => img.style.clipPath") == "inset(0px 0px 0px 26%)"

            # the menus pick the columns: the right picture becomes the HR, and its score row is marked
            hr_cell = page.evaluate("JSON.parse(document.getElementById('cells').textContent)[0][2]")
            section.locator("select").nth(1).select_option(label="HR")
            assert right.get_attribute("src") == hr_cell
            assert section.locator("tr.shown td:first-child").all_inner_texts() == ["bicubic", "HR"]
            assert section.locator(".tag.right").inner_text() == "HR"

            # zoom applies to every picture
            page.locator("#zoom").select_option("4")
            assert viewer.evaluate("v => v.getBoundingClientRect().width") == CROP * 4 * 4

            shot = tmp_path / "compare.png"
            page.screenshot(path=str(shot), full_page=True)
            with Image.open(shot) as image:
                assert image.width >= 900 and image.height > CROP * 4 * 4
            assert problems == []
        finally:
            browser.close()
