"""Environment verification throughput: batched `Verifier` against one environment at a time.

Both sides run the same checks in the same sandbox pool (golden calls, perturbed calls, the oracle
episode) on the same environments, so the difference is only batching:

- baseline: `Verifier.verify([row])` for each environment — three sandbox round trips and one
  episode run per environment, with the workers mostly waiting on one call;
- ours: `Verifier.verify(batch)` — all golden calls of the batch in one `run_batch`, all perturbed
  calls in another, every oracle episode in one episode run.

The target is 1000 verified environments per minute on 2 cores. Environments are the packaged
examples' numbered variants, or any environment file (e.g. a `ftrl envs build` output) via --envs.

Run: `.venv/bin/python bench/bench_verify.py` (or `--envs runs/x/envs/train.jsonl --count 5000`).
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

from envs.examples import numbered_variants
from envs.jsonl import iter_rows
from envs.sandbox import SandboxPool
from envs.schema import EnvRow
from envs.verify import Verification, Verifier

TARGET_PER_MINUTE = 1000


def load(envs: Path | None, count: int) -> list[EnvRow]:
    if envs is None:
        return numbered_variants(count)
    return list(itertools.islice(iter_rows(envs), count))


def verify_batched(verifier: Verifier, rows: list[EnvRow], batch: int) -> list[Verification]:
    verdicts: list[Verification] = []
    for start in range(0, len(rows), batch):
        verdicts += verifier.verify(rows[start : start + batch])
    return verdicts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=3000, help="environments verified in batches")
    parser.add_argument("--baseline-count", type=int, default=300, help="environments verified one by one")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--envs", type=Path, default=None, help="environment JSONL; default: example variants"
    )
    args = parser.parse_args()

    rows = load(args.envs, args.count)
    with SandboxPool(workers=args.workers) as pool:
        verifier = Verifier(pool)
        verifier.verify(rows[:8])  # warm the workers' code caches, as a long build would have them

        started = time.perf_counter()
        single = [verifier.verify([row])[0] for row in rows[: args.baseline_count]]
        baseline_s = time.perf_counter() - started

        started = time.perf_counter()
        batched = verify_batched(verifier, rows, args.batch)
        batched_s = time.perf_counter() - started

    if [v.valid for v in single] != [v.valid for v in batched[: len(single)]]:
        raise SystemExit("batched and one-at-a-time verification disagree")
    baseline_rate = len(single) / baseline_s * 60
    batched_rate = len(batched) / batched_s * 60
    valid = sum(v.valid for v in batched)
    source = args.envs or "packaged example variants"
    print(f"{len(rows)} environments ({source}), {valid} valid; {args.workers} sandbox workers")
    print(f"baseline (one environment at a time): {baseline_rate:10.0f} environments/min")
    print(f"batched (batch {args.batch}):              {batched_rate:10.0f} environments/min")
    print(
        f"ratio batched/baseline: {batched_rate / baseline_rate:.1f}x; target {TARGET_PER_MINUTE}/min: ",
        end="",
    )
    print("met" if batched_rate >= TARGET_PER_MINUTE else "NOT met")


if __name__ == "__main__":
    main()
