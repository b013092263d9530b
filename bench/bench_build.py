"""Environment construction throughput: verified environments per minute from `ftrl envs build`.

Generates environments with the offline template generator through all five stages and keeps only
those the verifier proves solvable in the sandbox (golden calls, perturbed calls, oracle episode),
exactly as `ftrl envs build` does. The baseline is the same build verifying one environment at a
time instead of in batches. Target: at least 1,000 verified environments per minute on 2 cores.

Run: `make bench-build` (or `.venv/bin/python bench/bench_build.py --count 2000`).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from envs.construction.build import build_environments
from envs.construction.template import TemplateGenerator
from envs.sandbox import SandboxPool
from envs.verify import Verifier


def timed_build(count: int, batch: int, workers: int, out: Path) -> tuple[float, int]:
    with SandboxPool(workers=workers) as pool:
        start = time.perf_counter()
        report = build_environments(TemplateGenerator(seed=0), count, 0, out, Verifier(pool), batch=batch)
        return time.perf_counter() - start, report.written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--baseline-count", type=int, default=300, help="the one-at-a-time side is slower")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        seconds, written = timed_build(args.count, 256, args.workers, Path(folder) / "batched")
        base_seconds, base_written = timed_build(args.baseline_count, 1, args.workers, Path(folder) / "one")
    rate, base_rate = 60 * written / seconds, 60 * base_written / base_seconds
    print(f"template generator, {args.workers} sandbox workers")
    print(f"baseline (verify one environment at a time): {base_rate:8.0f} verified environments/min")
    print(
        f"ftrl envs build (batches of 256):            {rate:8.0f} verified environments/min "
        f"({written} in {seconds:.1f} s)"
    )
    verdict = "met" if rate >= 1000 else "missed"
    print(f"ratio batched/baseline: {rate / base_rate:.1f}x; target 1000/min: {verdict}")


if __name__ == "__main__":
    main()
