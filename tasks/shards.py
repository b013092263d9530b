"""Scale-out by shards: an environment file cut into contiguous pieces, and their outputs joined back.

Sampling and evaluation cut their episodes into fixed chunks (`envs.chunks`), and every episode is
seeded by its own identity, not by its batch. A shard here is a run of whole chunks: it holds a
multiple of `env_unit(...)` environments, so the episodes of each of its chunks are exactly the
episodes of one chunk of the unsharded run, batched the same way. Each shard's output therefore
equals the matching stretch of the unsharded output, and joining the shard outputs in shard order
(`concat_files`) gives the unsharded file byte for byte.

Shards are contiguous and balanced to within one unit; when there are fewer units than shards, the
last shards are empty (zero rows) and their stages write empty outputs without loading a model.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from itertools import islice
from pathlib import Path

from envs.atomic import atomic_write
from envs.jsonl import iter_rows, write_rows
from envs.schema import EnvRow

__all__ = ["concat_files", "env_unit", "shard_ranges", "split_envs"]


def env_unit(chunk_episodes: int, samples_per_env: int) -> int:
    """The fewest environments whose episodes fill whole chunks: lcm(chunk, samples) / samples.

    >>> env_unit(64, 1), env_unit(32, 2), env_unit(6, 4)
    (64, 16, 3)
    """
    if chunk_episodes < 1 or samples_per_env < 1:
        raise ValueError(
            f"chunk_episodes and samples_per_env must be >= 1, got {chunk_episodes} and {samples_per_env}"
        )
    return math.lcm(chunk_episodes, samples_per_env) // samples_per_env


def shard_ranges(count: int, shards: int, unit: int) -> list[range]:
    """`shards` contiguous index ranges covering `range(count)`, each a whole number of `unit`s (but the
    one holding the last, partial unit); sizes differ by at most one unit, larger ones first.

    >>> shard_ranges(10, 3, 2)
    [range(0, 4), range(4, 8), range(8, 10)]
    >>> shard_ranges(3, 3, 2)
    [range(0, 2), range(2, 3), range(3, 3)]
    """
    if shards < 1 or unit < 1 or count < 0:
        raise ValueError(f"need shards >= 1, unit >= 1 and count >= 0, got {shards}, {unit}, {count}")
    per_shard, extra = divmod(math.ceil(count / unit), shards)
    ranges, start = [], 0
    for index in range(shards):
        end = min(count, start + (per_shard + (index < extra)) * unit)
        ranges.append(range(start, end))
        start = end
    return ranges


def split_envs(
    source: Path,
    out_dir: Path,
    shards: int,
    unit: int,
    *,
    split: str | None = None,
    limit: int | None = None,
    offset: int = 0,
) -> list[tuple[Path, int]]:
    """Write `shard-NNN.jsonl` files into `out_dir` (the rows of `split`, or all rows; of those, the
    `limit` rows after the first `offset` when given); return each file with its row count. Rows are
    validated on the way, so a bad row fails here, naming its line."""
    count = sum(1 for _ in _selected(source, split, limit, offset))
    written = []
    rows = _selected(source, split, limit, offset)
    for index, bounds in enumerate(shard_ranges(count, shards, unit)):
        path = out_dir / f"shard-{index:03d}.jsonl"
        written.append((path, write_rows(path, (next(rows) for _ in bounds))))
    return written


def _selected(source: Path, split: str | None, limit: int | None, offset: int = 0) -> Iterator[EnvRow]:
    rows = (row for row in iter_rows(source, EnvRow) if split is None or row.split == split)
    return islice(rows, offset, None if limit is None else offset + limit)


def concat_files(parts: Sequence[Path], out: Path) -> int:
    """Join `parts` byte for byte, in order, into `out` (atomically); return the number of lines."""
    lines = 0
    with atomic_write(out, "wb") as handle:
        for part in parts:
            with Path(part).open("rb") as source:
                for line in source:
                    lines += 1
                    handle.write(line)
    return lines
