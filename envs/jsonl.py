"""JSONL files of rows: stream them in, write them whole, or append to them resumably.

Environment and trajectory files reach millions of rows, so reading never loads a whole file (the
paper's scripts did). A bad line is reported as `path:line: reason`, the way compilers do, so a user
can open the file at that line; callers that would rather lose a row than a run ask to skip bad rows
and get them counted in a `ReadReport`.
"""

from __future__ import annotations

import codecs
import json
import logging
import os
from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any, TypeVar

from pydantic import BaseModel, ValidationError

from envs.atomic import atomic_write
from envs.schema import EnvRow, format_validation_error, json_type_name

logger = logging.getLogger(__name__)

T = TypeVar("T", bound=BaseModel)
K = TypeVar("K", bound=Hashable)

_TAIL_CHUNK = 1 << 16


class RowError(ValueError):
    """One unusable line of a JSONL file; `str()` gives `path:line: reason`."""

    def __init__(self, path: str | Path, line: int, reason: str) -> None:
        super().__init__(path, line, reason)  # all three in `args`, so the error survives pickling
        self.path = Path(path)
        self.line = line
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}"


@dataclass
class ReadReport:
    """What a read produced: rows yielded, and the bad rows skipped (only with `skip_bad=True`)."""

    path: Path
    rows: int = 0
    skipped: list[RowError] = field(default_factory=list)

    @property
    def skipped_count(self) -> int:
        return len(self.skipped)


def iter_rows(
    path: str | Path,
    model: type[T] = EnvRow,  # type: ignore[assignment]
    *,
    skip_bad: bool = False,
    report: ReadReport | None = None,
) -> Iterator[T]:
    """Stream validated rows, one line at a time; blank lines are ignored.

    A bad line (invalid UTF-8 or JSON, not an object, failing `model`'s validation) raises `RowError`,
    or with `skip_bad=True` is appended to `report.skipped`, logged, and passed over. A missing file
    raises `FileNotFoundError` at the call, before the first row is asked for.
    """
    source = Path(path)
    if not source.exists():
        raise FileNotFoundError(f"{source}: no such JSONL file")
    return _iter_rows(source, model, skip_bad, report if report is not None else ReadReport(source))


def iter_numbered(
    path: str | Path,
    model: type[T] = EnvRow,  # type: ignore[assignment]
) -> Iterator[tuple[int, T | RowError]]:
    """Every non-blank line as (line number, row or the `RowError` saying why it is not one).

    For callers that report bad lines in place (validation) rather than stop or skip; `iter_rows`
    is built on it. A missing file raises `FileNotFoundError` at the call.
    """
    source = Path(path)
    if not source.exists():
        raise FileNotFoundError(f"{source}: no such JSONL file")
    return _iter_numbered(source, model)


def _iter_numbered(source: Path, model: type[T]) -> Iterator[tuple[int, T | RowError]]:
    for number, raw in _numbered_lines(source):
        try:
            obj = _decode_object(source, number, raw)
        except RowError as error:
            yield number, error
            continue
        try:
            yield number, model.model_validate(obj)
        except ValidationError as exc:
            yield number, RowError(source, number, format_validation_error(exc))


def write_rows(path: str | Path, rows: Iterable[BaseModel | dict[str, Any]]) -> int:
    """Write all rows, one JSON object per line, atomically; return how many were written.

    If `rows` raises part way (or a row cannot be encoded), no file appears and an old one is kept.
    """
    count = 0
    with atomic_write(path, "wb") as handle:
        for row in rows:
            handle.write(_encode(row))
            count += 1
    return count


class JsonlAppender:
    """Append rows to a JSONL file that a killed process may have left with half a last line.

    On entry, a last line without its newline is dropped (or, if it is a complete JSON object that
    only lacks the newline, completed), so a resumed run never reads or extends half a row. Each row
    is written as one line with one write and flushed at once, so a kill loses at most that line.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._handle: IO[bytes] | None = None

    def __enter__(self) -> JsonlAppender:
        if self._handle is not None:
            raise RuntimeError(f"JsonlAppender for {self.path} is already open")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _repair_tail(self.path)
        self._handle = self.path.open("ab")
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def write(self, row: BaseModel | dict[str, Any]) -> None:
        if self._handle is None:
            raise RuntimeError(f"JsonlAppender for {self.path} is not open; use it in a `with` block")
        self._handle.write(_encode(row))
        self._handle.flush()

    def close(self) -> None:
        """Flush to disk and close; safe to call twice."""
        if self._handle is None:
            return
        os.fsync(self._handle.fileno())
        self._handle.close()
        self._handle = None

    @staticmethod
    def existing_keys(path: str | Path, key_fn: Callable[[dict[str, Any]], K]) -> set[K]:
        """Keys of the rows already in `path` (none if it does not exist), for resuming without duplicates.

        A partial last line is ignored, as the appender drops it; any other bad line raises `RowError`:
        guessing what a corrupt file holds would duplicate or lose work.
        """
        source = Path(path)
        keys: set[K] = set()
        if not source.exists():
            return keys
        for number, raw in _numbered_lines(source):
            try:
                obj = _decode_object(source, number, raw)
            except RowError:
                if not raw.endswith(b"\n"):
                    break  # the partial last line
                raise
            try:
                keys.add(key_fn(obj))
            except (KeyError, TypeError, ValueError) as exc:
                raise RowError(source, number, f"cannot compute the resume key: {exc!r}") from None
        return keys


existing_keys = JsonlAppender.existing_keys


def _iter_rows(source: Path, model: type[T], skip_bad: bool, report: ReadReport) -> Iterator[T]:
    for _, item in _iter_numbered(source, model):
        if isinstance(item, RowError):
            if not skip_bad:
                raise item
            report.skipped.append(item)
            logger.warning("skipped a bad row: %s", item)
            continue
        report.rows += 1
        yield item


def _numbered_lines(source: Path) -> Iterator[tuple[int, bytes]]:
    """Non-blank lines with 1-based numbers. Bytes split on b"\\n" only, so numbers match an editor's."""
    with source.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if raw.strip():
                yield number, raw


def _decode_object(source: Path, number: int, raw: bytes) -> dict[str, Any]:
    if number == 1 and raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8) :]
    try:
        text = raw.rstrip(b"\r\n").decode("utf-8")  # without the terminator, errors point into the line
    except UnicodeDecodeError as exc:
        raise RowError(source, number, f"not valid UTF-8 (byte {exc.start + 1} of the line)") from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RowError(source, number, f"invalid JSON: {exc.msg} at column {exc.colno}") from None
    if not isinstance(obj, dict):
        raise RowError(source, number, f"expected a JSON object, got {json_type_name(obj)}")
    return obj


def _encode(row: BaseModel | dict[str, Any]) -> bytes:
    """One line of strict JSON (no NaN, which other readers reject), non-ASCII kept as UTF-8."""
    data = row.model_dump(mode="json") if isinstance(row, BaseModel) else row
    return (json.dumps(data, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")


def _repair_tail(path: Path) -> None:
    """Make `path` end in a newline: complete a whole last object, or drop a partial last line."""
    if not path.exists():
        return
    with path.open("r+b") as handle:
        size = handle.seek(0, os.SEEK_END)
        if size == 0:
            return
        handle.seek(size - 1)
        if handle.read(1) == b"\n":
            return
        start = _last_line_start(handle, size)
        handle.seek(start)
        if _is_json_object(handle.read()):
            handle.write(b"\n")
            return
        handle.truncate(start)
    logger.warning(
        "%s: dropped a partial last line (%d bytes) left by an interrupted writer", path, size - start
    )


def _last_line_start(handle: IO[bytes], size: int) -> int:
    """Offset just after the last b"\\n", read backwards in chunks so a huge file is not loaded."""
    end = size
    while end > 0:
        begin = max(0, end - _TAIL_CHUNK)
        handle.seek(begin)
        index = handle.read(end - begin).rfind(b"\n")
        if index >= 0:
            return begin + index + 1
        end = begin
    return 0


def _is_json_object(data: bytes) -> bool:
    try:
        return isinstance(json.loads(data.decode("utf-8")), dict)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return False
