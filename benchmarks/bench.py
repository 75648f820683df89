"""Run `realsr bench` with its full default settings and write the results for the record.

    .venv/bin/python benchmarks/bench.py                 # -> benchmarks/results/bench.json and bench.md
    .venv/bin/python benchmarks/bench.py --device cuda --json /tmp/gpu.json --markdown /tmp/gpu.md

Run it on a quiet machine: the numbers are only as steady as the cores they run on. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from realsr_cli.bench.benchmark import run_benchmark
from realsr_cli.bench.report import save_report, to_markdown
from realsr_cli.config import DEVICES, BenchConfig
from realsr_cli.errors import RealSRError

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> int:
    parser = argparse.ArgumentParser(description="Benchmark realsr with the full default settings.")
    parser.add_argument("--model", default=None, help="exported .onnx or .ts model (default: the bundled model)")
    parser.add_argument("--device", choices=DEVICES, default="auto", help="where the model runs")
    parser.add_argument("--json", type=Path, default=RESULTS / "bench.json", help="where the JSON report goes")
    parser.add_argument("--markdown", type=Path, default=RESULTS / "bench.md", help="where the Markdown table goes")
    args = parser.parse_args()
    try:
        report = run_benchmark(
            BenchConfig(model=args.model, device=args.device),
            progress=lambda line: print(line, file=sys.stderr, flush=True),
        )
        save_report(report, args.json, args.markdown)
    except RealSRError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    print(to_markdown(report))
    print(f"wrote {args.json} and {args.markdown}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
