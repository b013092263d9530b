"""Write files so that a reader sees the old content or the complete new one, never a half.

A stage killed mid-write must not leave a file that looks finished: the next run would cache on it.
So content goes to a temporary file beside the target (same directory, hence same filesystem, so the
rename is atomic), is flushed to disk, and only then replaces the target with `os.replace`.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


@contextmanager
def atomic_write(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO[Any]]:
    """Open a temporary file for writing; on a clean exit it replaces `path`, on an exception it is deleted.

    `mode` is "w" (text) or "wb" (bytes). Parent directories are created. The temporary file is named
    `.{name}.tmp-{pid}-{random}` so that concurrent writers never share one and leftovers of a
    killed process (which no `finally` can clean up) are recognisable as such.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write mode must be 'w' or 'wb', got {mode!r}")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(f".{target.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    binary = mode == "wb"
    handle = open(temp, "xb" if binary else "x", encoding=None if binary else encoding)
    try:
        with handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _fsync_directory(target.parent)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_write(path, "wb") as handle:
        handle.write(data)


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> None:
    with atomic_write(path, "w", encoding=encoding) as handle:
        handle.write(text)


def atomic_write_png(figure: Any, path: str | Path, *, dpi: int) -> Path:
    """Save a matplotlib figure as a PNG written under a temporary name and renamed into place, then
    close it (pyplot keeps every figure alive until closed). The caller has picked the backend."""
    import matplotlib.pyplot as plt

    target = Path(path)
    with atomic_write(target, "wb") as handle:
        figure.savefig(handle, format="png", dpi=dpi)
    plt.close(figure)
    return target


def _fsync_directory(directory: Path) -> None:
    """Persist the rename itself; without this a power cut can bring back the old directory entry."""
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks (files here can be larger than memory)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def swap_in_folder(staging: Path, out_dir: Path) -> None:
    """Move a finished folder to `out_dir`, replacing a folder there without a moment of absence.

    An old folder is renamed aside first and deleted after, and put back if the swap fails, so
    `out_dir` always holds either the old or the new folder whole. `staging` must sit beside
    `out_dir` (same filesystem) for the renames to be atomic.
    """
    if not out_dir.exists():
        staging.rename(out_dir)
        return
    trash = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".replaced", dir=out_dir.parent))
    out_dir.rename(trash / "old")
    try:
        staging.rename(out_dir)
    except BaseException:
        (trash / "old").rename(out_dir)
        raise
    finally:
        shutil.rmtree(trash, ignore_errors=True)
