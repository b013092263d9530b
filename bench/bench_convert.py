"""Conversion throughput and peak memory: `ftrl convert` against load-everything-then-pandas.

Both sides read the same generated trajectory JSONL and write a parquet file:

- baseline (the paper's way): `json.loads` every line into a list, then
  `pandas.DataFrame(rows).to_parquet(out)`; no validation, and the file has the JSONL's own columns;
- ours: `envs.convert.convert_trajectories`, which validates every row (pydantic, tool code parsed
  with `ast`), writes the training layout VeRL and TRL read, and streams in chunks.

Each side runs in a fresh subprocess so that its peak resident memory (`ru_maxrss`) is its own.

Run: `.venv/bin/python bench/bench_convert.py --rows 200000` (about 3 KB per row).
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CITIES = ["Paris", "Rome", "Madrid", "Berlin", "Vienna", "Lisbon", "Oslo", "Athens", "Dublin", "Prague"]

TOOL_CODE = '''import json

_TABLE = {table!r}


def {name}(city, unit="celsius", details=False):
    """Look up {name} for a city; wrong input returns a helpful message, as FTRL tools do."""
    row = _TABLE.get(city.strip().lower())
    if row is None:
        return "Error: unknown city " + json.dumps(city) + "; known: " + ", ".join(sorted(_TABLE))
    return row if details else row["value"]
'''


def make_environment(rng: random.Random, index: int) -> dict:
    tools, codes, unsolved = [], {}, {}
    for tool_index in range(rng.randint(1, 3)):
        name = f"lookup_{index}_{tool_index}"
        table = {city.lower(): rng.randint(-20, 40) for city in CITIES}
        tools.append(
            {
                "type": "function",
                "function": {
                    "name": name,
                    "description": f"Look up the {name} statistic of a city.",
                    "parameters": {
                        "type": "object",
                        "properties": {
                            "city": {"type": "string", "description": "City name, e.g. 'Paris'."},
                            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                            "details": {"type": "boolean"},
                        },
                        "required": ["city"],
                    },
                },
            }
        )
        codes[name] = TOOL_CODE.format(name=name, table=table)
        unsolved[name] = [str(table[rng.choice(CITIES).lower()])]
    return {"tools": tools, "codes": codes, "unsolved": unsolved, "index": index}


def make_row(rng: random.Random, env: dict) -> dict:
    """A trajectory row after 0-3 tool-calling turns, arguments with varying keys, OpenAI form."""
    names = list(env["codes"])
    messages: list[dict] = [
        {"role": "user", "content": f"Compare the {', '.join(names)} statistics of two cities, please."}
    ]
    turns = rng.randint(0, 3)
    for turn in range(turns):
        calls = []
        for index in range(rng.randint(1, 2)):
            arguments: dict = {"city": rng.choice(CITIES)}
            if rng.random() < 0.5:
                arguments["unit"] = rng.choice(["celsius", "fahrenheit"])
            if rng.random() < 0.3:
                arguments["details"] = True
            calls.append(
                {
                    "id": f"call_{turn}_{index}",
                    "type": "function",
                    "function": {"name": rng.choice(names), "arguments": json.dumps(arguments)},
                }
            )
        messages.append({"role": "assistant", "content": "", "tool_calls": calls})
        messages.extend(
            {"role": "tool", "tool_call_id": call["id"], "content": str(rng.randint(-20, 40))}
            for call in calls
        )
    return {
        "messages": messages,
        "tools": json.dumps(env["tools"]),
        "codes": json.dumps(env["codes"]),
        "unsolved_set": json.dumps(env["unsolved"]),
        "answer": ", ".join(answers[0] for answers in env["unsolved"].values()),
        "solve_rate": round(turns / 4, 2),
        "data_source": "bench",
        "split": "train" if rng.random() < 0.9 else "test",
        "env_id": f"{env['index']:016x}",
        "meta": "{}",
        "turn": turns,
        "policy": "bench-policy",
    }


def write_trajectories(path: Path, rows: int, seed: int) -> None:
    rng = random.Random(seed)
    envs = [make_environment(rng, index) for index in range(500)]
    with path.open("w", encoding="utf-8") as handle:
        for _ in range(rows):
            handle.write(json.dumps(make_row(rng, rng.choice(envs))) + "\n")


def run_side(side: str, src: Path, out: Path) -> None:
    """Child process: convert, then print seconds, rows written and peak memory as one JSON line."""
    if side == "ours":
        from envs.convert import convert_trajectories

        start = time.perf_counter()
        rows = convert_trajectories(src, out, splits=("train", "test")).rows_out
    else:
        import pandas

        start = time.perf_counter()
        with src.open("rb") as handle:
            records = [json.loads(line) for line in handle]
        pandas.DataFrame(records).to_parquet(out)
        rows = len(records)
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "rows": rows, "peak_mb": peak_mb}))


def measure(side: str, src: Path, out: Path) -> dict:
    done = subprocess.run(
        [sys.executable, __file__, "--side", side, "--src", str(src), "--out", str(out)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--side", choices=["ours", "pandas"], help=argparse.SUPPRESS)
    parser.add_argument("--src", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        run_side(args.side, args.src, args.out)
        return

    with tempfile.TemporaryDirectory(prefix="bench_convert_") as folder:
        src = Path(folder) / "trajectories.jsonl"
        write_trajectories(src, args.rows, args.seed)
        size_mb = src.stat().st_size / 2**20
        baseline = measure("pandas", src, Path(folder) / "pandas.parquet")
        ours = measure("ours", src, Path(folder) / "ours.parquet")
        if ours["rows"] != baseline["rows"]:
            raise SystemExit(f"row counts differ: ours {ours['rows']}, pandas {baseline['rows']}")
        ours_mb = (Path(folder) / "ours.parquet").stat().st_size / 2**20
        pandas_mb = (Path(folder) / "pandas.parquet").stat().st_size / 2**20

    print(f"{args.rows} trajectory rows, {size_mb:.0f} MB of JSONL")
    for name, result, file_mb in (
        ("pandas (load all)", baseline, pandas_mb),
        ("ftrl convert", ours, ours_mb),
    ):
        rate = result["rows"] / result["seconds"]
        print(
            f"{name:18s} {rate:9.0f} rows/s  {result['seconds']:7.1f} s  "
            f"peak RSS {result['peak_mb']:7.0f} MB  parquet {file_mb:6.1f} MB"
        )
    print(
        f"ratios ours/pandas: speed {baseline['seconds'] / ours['seconds']:.2f}x, "
        f"peak memory {ours['peak_mb'] / baseline['peak_mb']:.2f}x"
    )


if __name__ == "__main__":
    main()
