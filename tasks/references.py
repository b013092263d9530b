"""What crosses a stage boundary: a file or folder on disk plus a small reference that names its content.

A stage never hands the next one data, only a `FileRef`: where the output lies, the sha256 of its
bytes, and (for row files) how many rows and which schema version. Caching keys on the digest, so
two runs that produced the same bytes share downstream work, and a path alone never decides
anything. References are small pydantic models: Prefect persists them as JSON results and the UI
shows them as forms when a stage is triggered alone.

A folder's digest covers every file under it, by relative path and content, in sorted order; so a
model folder is one reference, like a parquet file.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from envs.atomic import file_sha256

__all__ = ["FileRef", "RefKind", "file_ref", "folder_sha256", "path_sha256", "stat_fingerprint"]

RefKind = Literal["envs", "trajectories", "parquet", "checkpoint", "model", "eval", "report"]


class FileRef(BaseModel):
    """A stage's output (or a run's input) named by its content.

    `sha256` may be left empty when a user triggers a stage by hand with only a path: `resolved()`
    fills it in. When it is given, `resolved()` checks it, so a reference never silently names
    other bytes than the ones it was made for.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: Path = Field(description="File or folder.")
    kind: RefKind = Field(description="What the file holds (which stage wrote it).")
    sha256: str = Field("", pattern=r"^([0-9a-f]{64})?$", description="Content digest; empty: computed.")
    rows: int | None = Field(None, ge=0, description="Rows in a row file (JSONL, parquet).")
    schema_version: str | None = Field(None, description="Schema version of a row file, when it has one.")

    def resolved(self) -> FileRef:
        """This reference with its digest computed (or checked, when it has one).

        Raises `FileNotFoundError` when the path is gone, `ValueError` when its content is not the
        content the digest names (the file changed after the reference was made).
        """
        actual = path_sha256(self.path)
        if not self.sha256:
            return self.model_copy(update={"sha256": actual})
        if actual != self.sha256:
            raise ValueError(
                f"{self.path}: content changed since it was recorded (sha256 {actual[:12]}, "
                f"expected {self.sha256[:12]}); rerun the stage that writes it"
            )
        return self

    @property
    def short(self) -> str:
        """The first 12 hex digits, enough to tell versions apart in names and logs."""
        return self.sha256[:12]


def file_ref(
    path: str | Path, kind: RefKind, *, rows: int | None = None, schema_version: str | None = None
) -> FileRef:
    """A reference to what is at `path` now, with its digest computed."""
    path = Path(path)
    return FileRef(path=path, kind=kind, sha256=path_sha256(path), rows=rows, schema_version=schema_version)


def path_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes, or `folder_sha256` of a folder."""
    path = Path(path)
    if path.is_dir():
        return folder_sha256(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file or folder")
    return file_sha256(path)


def folder_sha256(folder: str | Path) -> str:
    """Digest of every regular file under `folder`: its relative path and its sha256, in sorted order.

    Temporary files of an unfinished atomic write (`.name.tmp-...`) are left out: they are not part
    of what the folder holds once the writer is done.
    """
    digest = hashlib.sha256()
    root = Path(folder)
    for relative in _files(root):
        digest.update(f"{relative}\0{file_sha256(root / relative)}\n".encode())
    return digest.hexdigest()


def stat_fingerprint(path: str | Path) -> list[tuple[str, int, int]]:
    """(relative path, size, modification time in ns) of every file: what tells a changed input from an
    unchanged one without reading it, as make and git's index do. Empty when the path does not exist."""
    path = Path(path)
    if path.is_file():
        stat = path.stat()
        return [(".", stat.st_size, stat.st_mtime_ns)]
    if not path.is_dir():
        return []
    fingerprint = []
    for relative in _files(path):
        stat = (path / relative).stat()
        fingerprint.append((relative, stat.st_size, stat.st_mtime_ns))
    return fingerprint


def _files(root: Path) -> Iterator[str]:
    found = []
    for directory, _, names in os.walk(root):
        for name in names:
            full = Path(directory) / name
            if ".tmp-" in name or not full.is_file():
                continue
            found.append(full.relative_to(root).as_posix())
    yield from sorted(found)
