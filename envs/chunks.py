"""Resumable chunked output: work cut into fixed chunks, each written atomically, joined at the end.

Sampling and evaluation both roll a policy out over thousands of episodes, and a run killed at hour
five must not start again from zero. So the caller cuts its episodes into fixed chunks (by position
in the input, never by content a model produced) and derives each chunk's seed from the chunk's
index; each finished chunk lands atomically in `<out>.parts/chunk-NNNNNN.jsonl`. A rerun with the
same arguments skips the chunks on disk and redoes the one that was cut short with the same seed, so
the joined file equals an uninterrupted run's byte for byte.

`<out>.parts/manifest.json` records the arguments the parts came from; a rerun with other arguments
is refused rather than mixing two runs' rows into one file.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from envs.atomic import atomic_write, atomic_write_text
from envs.jsonl import write_rows

MANIFEST = "manifest.json"

T = TypeVar("T")


class ResumeMismatch(ValueError):
    """Parts on disk came from a run with other arguments; mixing them would corrupt the output."""


@dataclass(frozen=True)
class ChunkedRun:
    """What `write_chunked` did: chunks in all, chunks found finished on disk, rows in the output."""

    chunks: int
    resumed: int
    rows: int


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of `size` items (the last one shorter), in input order."""
    if size < 1:
        raise ValueError(f"chunk size must be at least 1, got {size}")
    chunk: list[T] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def parts_folder(out_path: Path) -> Path:
    return out_path.with_name(out_path.name + ".parts")


def check_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    """Create `folder` with `manifest`, or check that the work already there came from it."""
    path = folder / MANIFEST
    if path.is_file():
        previous = json.loads(path.read_text(encoding="utf-8"))
        if previous != manifest:
            raise ResumeMismatch(
                f"{folder}: holds work of a run with different {changed_keys(previous, manifest)}; "
                "rerun with the same arguments to resume, or delete that folder to start over"
            )
    else:
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(manifest, indent=2, sort_keys=True))


def changed_keys(previous: dict[str, Any], current: dict[str, Any]) -> str:
    """The top-level keys whose values differ, sorted and comma-separated, for error messages."""
    keys = current.keys() | previous.keys()
    return ", ".join(sorted(key for key in keys if previous.get(key) != current.get(key)))


def write_chunked(
    out_path: Path,
    manifest: dict[str, Any],
    chunks: Iterable[list[T]],
    produce: Callable[[int, list[T]], Iterable[BaseModel | dict[str, Any]]],
    *,
    on_chunk: Callable[[list[T]], None] | None = None,
) -> ChunkedRun:
    """Write `produce(index, chunk)`'s rows for every chunk not yet on disk, then join them into `out_path`.

    `on_chunk` is told about every chunk, finished now or earlier (a progress bar's update). The
    parts folder is removed once `out_path` is complete.
    """
    parts = parts_folder(out_path)
    check_manifest(parts, manifest)
    count = resumed = 0
    for index, chunk in enumerate(chunks):
        count += 1
        part = _chunk_path(parts, index)
        if part.is_file():
            resumed += 1
        else:
            write_rows(part, produce(index, chunk))
        if on_chunk is not None:
            on_chunk(chunk)

    rows = 0
    with atomic_write(out_path, "wb") as out:
        for index in range(count):
            with _chunk_path(parts, index).open("rb") as part_file:
                for line in part_file:
                    rows += 1
                    out.write(line)
    shutil.rmtree(parts)
    return ChunkedRun(chunks=count, resumed=resumed, rows=rows)


def _chunk_path(parts: Path, index: int) -> Path:
    return parts / f"chunk-{index:06d}.jsonl"
