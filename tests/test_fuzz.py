"""Fuzzed PNG, JPEG, WebP and TIFF files against the reader (issue 11): a RealSRError or a plausible photo, in time.

The seed files, mutations and oracles live in fuzz_harness.py, which also runs longer as a command (the README's
development section). A failure prints each failing case's seed, index and mutation, and the command that reruns it.
"""

from __future__ import annotations

import struct
import time

import fuzz_harness as fh
import pytest

from realsr_cli.errors import InputError

CI_SEED = 11
CI_CASES = 3000
CI_SECONDS = 6.0
"""The budget: on a busy 2-core machine about 1,000 cases fit, on an idle one all 3,000."""
CI_MIN_CASES = 300


def test_fuzzed_files_are_refused_cleanly_or_decoded_plausibly_in_time(tmp_path):
    report = fh.run(CI_SEED, CI_CASES, seconds=CI_SECONDS, min_cases=CI_MIN_CASES, workdir=tmp_path)
    print(report.summary(limit=0))
    assert report.outcomes_run >= CI_MIN_CASES
    failures = len(report.failures)
    assert failures == 0, report.summary()


def test_every_seed_file_decodes_unmutated(tmp_path):
    """A seed realsr cannot read would make every case built on it a refusal, testing nothing."""
    sources = fh.seed_files()
    assert {s.kind for s in sources} == {"png", "jpeg", "webp", "tiff"}
    for source in sources:
        outcome = fh.run_case(fh.Case(0, 0, source, [], source.data, None), tmp_path)
        assert outcome.status == "ok", outcome.describe()


def test_cases_are_reproducible_and_cover_every_mutation():
    first = [fh.make_case(CI_SEED, i) for i in range(600)]
    again = [fh.make_case(CI_SEED, i) for i in range(600)]
    assert [(c.source.name, c.steps, c.data) for c in first] == [(c.source.name, c.steps, c.data) for c in again]
    used = {kind for case in first for kind in case.kinds}
    every = {m.__name__.removeprefix("m_") for pool in (fh.GENERIC, *fh.FORMAT_MUTATORS.values()) for m in pool}
    assert every <= used, f"never drawn: {sorted(every - used)}"
    assert sum(c.expect_failure is not None for c in first) > 10  # the short-data oracle gets exercised


def test_png_oracle_flags_a_doubled_height_and_passes_a_split_idat():
    source = next(s for s in fh.seed_files() if s.name == "png16_gray")
    chunks, trailing = fh.png_chunks(source.data)
    assert fh.png_data_shortfall(source.data, fh.MAX_PIXELS) is None
    split = [(t, p[i : i + 5]) for t, p in chunks if t == b"IDAT" for i in range(0, len(p), 5)]
    idat = [i for i, (t, _) in enumerate(chunks) if t == b"IDAT"]
    assert (
        fh.png_data_shortfall(fh.png_build(chunks[: idat[0]] + split + chunks[idat[-1] + 1 :]), fh.MAX_PIXELS) is None
    )
    width, height = struct.unpack(">II", chunks[0][1][:8])
    chunks[0] = (b"IHDR", struct.pack(">II", width, 2 * height) + chunks[0][1][8:])
    assert "IDAT inflates to" in fh.png_data_shortfall(fh.png_build(chunks, trailing), fh.MAX_PIXELS)


def test_the_harness_reports_escapes_implausible_photos_and_overruns(tmp_path, monkeypatch):
    case = fh.make_case(CI_SEED, 0)

    def escapes(path, *, max_pixels):
        raise TypeError("not a RealSRError")

    monkeypatch.setattr(fh, "read_image", escapes)
    outcome = fh.run_case(case, tmp_path)
    assert outcome.status == "escaped" and "builtins.TypeError" in outcome.detail
    assert f"--seed {CI_SEED} --case 0" in outcome.describe()

    def refuses(path, *, max_pixels):
        raise InputError(f"{path}: corrupt")

    monkeypatch.setattr(fh, "read_image", refuses)
    assert fh.run_case(case, tmp_path).status == "refused"

    def hangs(path, *, max_pixels):
        try:
            while True:
                time.sleep(0.01)
        except Exception:  # as read_image's own broad except would: the timeout must get through it
            raise InputError("swallowed") from None

    monkeypatch.setattr(fh, "read_image", hangs)
    monkeypatch.setattr(fh, "BASE_SECONDS", 0.2)
    started = time.perf_counter()
    outcome = fh.run_case(case, tmp_path)
    assert outcome.status == "slow" and time.perf_counter() - started < 5


@pytest.mark.parametrize("photo_shape", [(16, 24), (24, 16), (9, 9)])
def test_the_plausibility_check_holds_the_photo_to_its_header(photo_shape):
    source = next(s for s in fh.seed_files() if s.name == "png8_rgb")
    photo = fh.read_image(_write(source), max_pixels=fh.MAX_PIXELS)
    problem = fh.implausible(photo, photo_shape[::-1], fh.MAX_PIXELS)
    assert (problem is None) == (photo_shape != (9, 9))


def _write(source):
    import tempfile
    from pathlib import Path

    path = Path(tempfile.mkdtemp(prefix="realsr-fuzz-")) / f"seed.{source.ext}"
    path.write_bytes(source.data)
    return path
