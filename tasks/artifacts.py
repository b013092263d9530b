"""What the Prefect UI shows for a run besides states and logs: progress bars, tables, the report.

- Progress artifacts for long stages. Building reports progress through a callback; sampling,
  evaluation and training write their progress to disk anyway (finished chunks in `<out>.parts/`,
  one metrics line per logging step), so `polled_progress` reads it from there in a background
  thread instead of threading callbacks through the domain code.
- Table artifacts for the environment report and the evaluation results.
- The run report as a Markdown artifact (linking its charts) and its tables as table artifacts. The
  report stage saves them beside the report (`save_report_artifacts`) and the flow posts them
  (`publish_report`), so every flow run has its report in the UI, one whose stages were all cached too.

Artifact keys may hold only lowercase letters, digits and dashes (`artifact_key` makes one); the UI
lists a key's latest version on its Artifacts page.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from envs.atomic import atomic_write_text
from envs.chunks import parts_folder
from envs.evaluation.reports import metric_names

__all__ = [
    "ProgressArtifact",
    "artifact_key",
    "chunk_progress",
    "env_report_table",
    "eval_table",
    "markdown_artifact",
    "metrics_progress",
    "polled_progress",
    "publish_report",
    "save_report_artifacts",
    "table_artifact",
]

_logger = logging.getLogger(__name__)
#: Seconds between two looks at a running stage's files.
POLL_S = 2.0
#: The file in a report folder holding what `publish_report` posts.
REPORT_ARTIFACTS = "artifacts.json"
#: Descriptions of the report's tables in the UI.
REPORT_TABLES = {
    "results": "Evaluation results per model, with each metric's change from the reference model",
    "scenarios": "Solve-F1 per scenario type per model, with the last iteration's gain",
    "training reward": "GRPO reward per iteration",
}


def artifact_key(*parts: str) -> str:
    """A valid artifact key from free text: lowercase, runs of other characters become one dash.

    >>> artifact_key("smoke", "sample-1/shard-0")
    'smoke-sample-1-shard-0'
    """
    return re.sub(r"[^a-z0-9]+", "-", "-".join(parts).lower()).strip("-")


class ProgressArtifact:
    """A progress artifact of the running task, updated only when the whole percentage changes."""

    def __init__(self, key: str, description: str) -> None:
        self._id = create_progress_artifact(0.0, key=key, description=description)
        self._percent = 0

    def update(self, done: int, total: int) -> None:
        """`done` of `total`; a total of 0 means unknown, shown as 0% until `finish`."""
        percent = 0 if total <= 0 else min(100, 100 * done // total)
        if percent != self._percent:
            self._percent = percent
            update_progress_artifact(self._id, float(percent))

    def finish(self) -> None:
        self.update(1, 1)


@contextmanager
def polled_progress(key: str, description: str, poll: Callable[[], tuple[int, int]]) -> Iterator[None]:
    """Show `poll()`'s (done, total) as a progress artifact every `POLL_S` seconds while the block runs,
    and 100% when it finishes. A failing poll is logged and skipped: progress is never worth a stage."""
    artifact = ProgressArtifact(key, description)
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(POLL_S):
            try:
                artifact.update(*poll())
            except Exception as error:  # files may move under the watcher; it looks again next time
                _logger.debug("progress of %s: %s", key, error)

    context = contextvars.copy_context()  # the Prefect client settings live in context variables
    thread = threading.Thread(target=context.run, args=(watch,), name=f"progress-{key}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
    artifact.finish()


def chunk_progress(out_file: Path, total_chunks: int) -> Callable[[], tuple[int, int]]:
    """Finished chunks of a chunked output (`envs.chunks`): part files on disk, all once it is joined."""

    def poll() -> tuple[int, int]:
        if out_file.is_file():
            return total_chunks, total_chunks
        parts = parts_folder(out_file)
        done = sum(1 for path in parts.glob("chunk-*.jsonl")) if parts.is_dir() else 0
        return done, total_chunks

    return poll


def metrics_progress(metrics_files: Mapping[Path, int]) -> Callable[[], tuple[int, int]]:
    """Training steps done: the last `step` in each metrics JSONL, against each file's planned steps."""

    def last_step(path: Path) -> int:
        if not path.is_file():
            return 0
        lines = path.read_text(encoding="utf-8").splitlines()
        return int(json.loads(lines[-1]).get("step", 0)) if lines else 0

    def poll() -> tuple[int, int]:
        done = sum(min(last_step(path), steps) for path, steps in metrics_files.items())
        return done, sum(metrics_files.values())

    return poll


def env_report_table(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The environment build report (`BuildReport` as JSON) as rows: what, which value, how many."""
    rows: list[dict[str, Any]] = [
        {"count": name, "value": "", "environments": report[name]}
        for name in (
            "requested",
            "attempted",
            "written",
            "train",
            "test",
            "left_out_for_test",
            "duplicates_removed",
        )
        if name in report
    ]
    for group in ("scenario_types", "domains", "scaling_operations", "tools_per_environment", "rejected"):
        for value, count in (report.get(group) or {}).items():
            rows.append({"count": group, "value": value, "environments": count})
    return rows


def eval_table(summaries: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per evaluated model: its tasks, episodes and every metric of its summary."""
    rows = []
    for label, summary in summaries.items():
        row: dict[str, Any] = {
            "model": label,
            "tasks": summary.get("tasks"),
            "episodes": summary.get("episodes"),
        }
        row.update({name: round(float(summary[name]), 4) for name in metric_names(dict(summary))})
        rows.append(row)
    return rows


def table_artifact(key: str, rows: list[dict[str, Any]], description: str) -> None:
    create_table_artifact(rows, key=key, description=description)


def markdown_artifact(key: str, markdown: str, description: str) -> None:
    create_markdown_artifact(markdown, key=key, description=description)


def save_report_artifacts(
    out_dir: Path, markdown: str, description: str, tables: Mapping[str, list[dict[str, Any]]]
) -> Path:
    """Keep a report's Markdown (absolute links) and tables beside it, for `publish_report`."""
    data = {"markdown": markdown, "description": description, "tables": dict(tables)}
    path = out_dir / REPORT_ARTIFACTS
    atomic_write_text(path, json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    return path


def publish_report(report_dir: Path, run_name: str, label: str) -> None:
    """Post the report saved in `report_dir` as artifacts of the running flow: the Markdown under the
    key `<run>-<label>`, each table under `<run>-<label>-<table>`.

    The flow posts them itself, not the report stage: a cached stage does not run, and the UI shows
    a flow run the artifacts created during it.
    """
    data = json.loads((report_dir / REPORT_ARTIFACTS).read_text(encoding="utf-8"))
    markdown_artifact(artifact_key(run_name, label), data["markdown"], data["description"])
    for name, rows in data["tables"].items():
        table_artifact(artifact_key(run_name, label, name), rows, REPORT_TABLES.get(name, name))
