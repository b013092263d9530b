"""Trajectory JSONL -> the training parquet that VeRL's `RLHFDataset` and TRL's `GRPOTrainer` read.

The file (`TRAINING_SCHEMA`, version `TRAINING_SCHEMA_VERSION`, stamped in the parquet key-value
metadata) has one row per trajectory row:

- `data_source`, `prompt` (the messages), `reward_model` {style: "rule", ground_truth: answer} and
  `extra_info` {codes, unsolved_set, solve_rate, split, env_id, tools, turn, policy, meta, index}: what
  VeRL reads; `extra_info` is what VeRL hands our `rewards.verl.compute_score`.
- `agent_name`: the VeRL agent loop each row asks for (`AGENT_NAME`, registered by
  `policies.verl_agent_loop`), the one that renders the row with its *own* tool schemas.
- `codes`, `unsolved_set`, `solve_rate`, `split`, `answer`, `tools` again as top-level columns:
  TRL passes top-level columns (not `extra_info`) to `rewards.trl` reward functions as keywords.

Arrow needs one type per column, so everything whose shape varies from row to row is stored as JSON
text: tool schemas, codes, sub-answers, and tool-call `arguments` inside `prompt` (OpenAI's own form).
Arrow also gives every message every field of the message struct (`None` where a message has none).
`decode_prompt` undoes both, and every consumer renders `decode_prompt(prompt)` with
`row_tools(extra_info)`, so VeRL, TRL and the sampler tokenize the same text. Messages are stored in
`policies.rendering.normalize_messages` form, which renders exactly like the sampler's messages.

Conversion streams: rows are validated one line at a time and written `chunk_rows` at a time, so
memory stays bounded by a chunk, not the input (the paper's script loaded whole files).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field, field_validator

from envs.atomic import atomic_write, file_sha256
from envs.jsonl import ReadReport, RowError, iter_rows
from envs.schema import EnvRow, json_type_name
from policies.rendering import normalize_messages, render_prompt

__all__ = [
    "AGENT_NAME",
    "MESSAGE_FIELDS",
    "SPLITS",
    "TRAINING_SCHEMA",
    "TRAINING_SCHEMA_VERSION",
    "ConvertReport",
    "convert_trajectories",
    "decode_prompt",
    "iter_training_rows",
    "load_for_trl",
    "row_tools",
    "training_metadata",
]

logger = logging.getLogger(__name__)

TRAINING_SCHEMA_VERSION = "1"
VERSION_KEY = "ftrl_schema_version"
AGENT_NAME = "ftrl_tool_prompt"
SPLITS = ("train", "test")

_TOOL_CALL = pa.struct(
    [
        ("id", pa.string()),
        ("type", pa.string()),
        ("function", pa.struct([("name", pa.string()), ("arguments", pa.string())])),
    ]
)
_MESSAGE = pa.struct(
    [
        ("role", pa.string()),
        ("content", pa.string()),
        ("reasoning_content", pa.string()),
        ("tool_calls", pa.list_(_TOOL_CALL)),
        ("tool_call_id", pa.string()),
        ("name", pa.string()),
    ]
)
MESSAGE_FIELDS = tuple(_MESSAGE.field(i).name for i in range(_MESSAGE.num_fields))
_TEXT_FIELDS = ("role", "content", "reasoning_content", "tool_call_id", "name")

TRAINING_SCHEMA = pa.schema(
    [
        ("data_source", pa.string()),
        ("prompt", pa.list_(_MESSAGE)),
        ("reward_model", pa.struct([("style", pa.string()), ("ground_truth", pa.string())])),
        (
            "extra_info",
            pa.struct(
                [
                    ("codes", pa.string()),
                    ("unsolved_set", pa.string()),
                    ("solve_rate", pa.float64()),
                    ("split", pa.string()),
                    ("env_id", pa.string()),
                    ("tools", pa.string()),
                    ("turn", pa.int64()),
                    ("policy", pa.string()),
                    ("meta", pa.string()),
                    ("index", pa.int64()),
                ]
            ),
        ),
        ("agent_name", pa.string()),
        ("codes", pa.string()),
        ("unsolved_set", pa.string()),
        ("solve_rate", pa.float64()),
        ("split", pa.string()),
        ("answer", pa.string()),
        ("tools", pa.string()),
    ]
)


@dataclass
class ConvertReport:
    """What a conversion did; `rows_in == rows_out + skipped_split + len(skipped_bad)`."""

    src: Path
    out: Path
    rows_in: int = 0
    rows_out: int = 0
    skipped_split: int = 0
    skipped_bad: list[RowError] = field(default_factory=list)
    sha256: str = ""
    schema_version: str = TRAINING_SCHEMA_VERSION


class _TrainingRow(EnvRow):
    """A row to train on, whose messages fit the parquet's message struct, already in stored form.

    Our trajectory rows carry `turn` and `policy`; FTRL's released training files do not, so both
    default here and such files convert unchanged (their `env_id` is then computed from content).

    Checking here, inside row validation, makes a misfit a `path:line` error like any other bad row
    (and skippable with `skip_bad`), instead of a failure deep inside Arrow or, worse, a silent loss:
    Arrow drops dict keys that its struct type does not name.
    """

    turn: int = Field(0, ge=0)
    policy: str = ""

    @field_validator("messages")
    @classmethod
    def _fit_message_struct(cls, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        stored = []
        for index, message in enumerate(normalize_messages(messages)):
            unknown = [key for key in message if key not in MESSAGE_FIELDS]
            if unknown:
                raise ValueError(
                    f"messages[{index}] has key {unknown[0]!r}, which the training parquet does not store "
                    f"(it stores {', '.join(MESSAGE_FIELDS)})"
                )
            for key in _TEXT_FIELDS:
                value = message.get(key)
                if value is not None and not isinstance(value, str):
                    raise ValueError(f"messages[{index}].{key} must be a string, got {json_type_name(value)}")
            stored.append({key: value for key, value in message.items() if value is not None})
        return stored


def convert_trajectories(
    src: str | Path,
    out: str | Path,
    *,
    splits: Collection[str] = ("train",),
    chunk_rows: int = 1024,
    skip_bad: bool = False,
) -> ConvertReport:
    """Write the training parquet for the rows of `src` whose split is in `splits`.

    A bad row raises `RowError` ("path:line: reason"), or with `skip_bad=True` is listed in
    `skipped_bad`. The file appears only complete: it is written to a temporary name and renamed at
    the end, so a failure part way leaves neither `out` nor a temporary file.
    """
    source, target = Path(src), Path(out)
    wanted = {splits} if isinstance(splits, str) else set(splits)  # "train" is one split, not five letters
    if not wanted or not wanted <= set(SPLITS):
        raise ValueError(f"splits must name some of {', '.join(SPLITS)}; got {sorted(wanted)}")
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be at least 1, got {chunk_rows}")
    if target.resolve() == source.resolve():
        raise ValueError(f"{target}: the output would overwrite the input")
    read = ReadReport(source)
    rows = iter_rows(source, _TrainingRow, skip_bad=skip_bad, report=read)
    report = ConvertReport(source, target)
    schema = TRAINING_SCHEMA.with_metadata(
        {VERSION_KEY: TRAINING_SCHEMA_VERSION, "source": source.name, "splits": ",".join(sorted(wanted))}
    )
    # zstd: codes and tools repeat across the rows of one environment, and a chunk-sized row group
    # dictionary-encodes only the repeats inside it; zstd halves what is left (measured: 2.6 -> 1.4 MB).
    with atomic_write(target, "wb") as handle, pq.ParquetWriter(handle, schema, compression="zstd") as writer:
        chunk: list[dict[str, Any]] = []
        for row in rows:
            if row.split not in wanted:
                report.skipped_split += 1
                continue
            chunk.append(_record(row, report.rows_out))
            report.rows_out += 1
            if len(chunk) == chunk_rows:
                writer.write_table(pa.Table.from_pylist(chunk, schema=schema))
                chunk = []
        if chunk:
            writer.write_table(pa.Table.from_pylist(chunk, schema=schema))
    report.skipped_bad = read.skipped
    report.rows_in = read.rows + len(read.skipped)
    report.sha256 = file_sha256(target)
    logger.info(
        "%s -> %s: %d rows written, %d of other splits, %d bad rows skipped",
        source,
        target,
        report.rows_out,
        report.skipped_split,
        len(report.skipped_bad),
    )
    return report


def decode_prompt(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The stored `prompt` as render-ready messages, exactly the messages that were converted.

    Struct fields a message lacks (Arrow's `None`s) are removed, since templates may test `'name' in
    message`; tool-call arguments are decoded from JSON text back to dicts, since Qwen2.5's template
    prints `arguments | tojson`, which would encode text a second time.
    """
    decoded = []
    for message in messages:
        plain = {key: value for key, value in message.items() if value is not None}
        if plain.get("tool_calls"):
            plain["tool_calls"] = [
                {
                    **call,
                    "function": {**call["function"], "arguments": json.loads(call["function"]["arguments"])},
                }
                for call in plain["tool_calls"]
            ]
        decoded.append(plain)
    return decoded


def row_tools(extra_info: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The row's tool schemas, decoded: what the sampler passed as `tools=` when it rendered the row."""
    return json.loads(extra_info["tools"])


def training_metadata(path: str | Path) -> dict[str, str]:
    """The file's key-value metadata (schema version, source); reads only the parquet footer."""
    metadata = pq.read_schema(path).metadata or {}
    return {key.decode(): value.decode() for key, value in metadata.items()}


def iter_training_rows(path: str | Path, *, batch_rows: int = 1024) -> Iterator[dict[str, Any]]:
    """Stream the rows back as stored (Arrow -> Python), after checking the schema version."""
    _check_version(path)
    with pq.ParquetFile(path) as parquet:
        for batch in parquet.iter_batches(batch_size=batch_rows):
            yield from batch.to_pylist()


def load_for_trl(path: str | Path, tokenizer: Any) -> Any:
    """The file as a `datasets.Dataset` for TRL's `GRPOTrainer`, `prompt` rendered to text with tools.

    TRL renders conversational prompts with one tool list for the whole run and cannot take per-row
    schemas, and a dataset `map` cannot hand it decoded messages either (their argument dicts vary in
    keys, which Arrow cannot type). So the prompt is rendered here, exactly as the sampler renders it,
    and TRL tokenizes that text. The other columns pass through to the reward functions.
    """
    import datasets

    _check_version(path)
    dataset = datasets.load_dataset("parquet", data_files=str(path), split="train")
    return dataset.map(
        lambda row: {
            "prompt": render_prompt(tokenizer, decode_prompt(row["prompt"]), json.loads(row["tools"]))
        },
        desc="Rendering prompts with their tools",
    )


def _record(row: _TrainingRow, index: int) -> dict[str, Any]:
    return {
        "data_source": row.data_source,
        "prompt": [_stored_message(message) for message in row.messages],
        "reward_model": {"style": "rule", "ground_truth": row.answer},
        "extra_info": {
            "codes": row.codes,
            "unsolved_set": row.unsolved_set,
            "solve_rate": row.solve_rate,
            "split": row.split,
            "env_id": row.env_id,
            "tools": row.tools,
            "turn": row.turn,
            "policy": row.policy,
            "meta": row.meta,
            "index": index,
        },
        "agent_name": AGENT_NAME,
        "codes": row.codes,
        "unsolved_set": row.unsolved_set,
        "solve_rate": row.solve_rate,
        "split": row.split,
        "answer": row.answer,
        "tools": row.tools,
    }


def _stored_message(message: dict[str, Any]) -> dict[str, Any]:
    if not message.get("tool_calls"):
        return message
    calls = [
        {
            **call,
            "function": {
                **call["function"],
                "arguments": json.dumps(call["function"]["arguments"], ensure_ascii=False),
            },
        }
        for call in message["tool_calls"]
    ]
    return {**message, "tool_calls": calls}


def _check_version(path: str | Path) -> None:
    version = training_metadata(path).get(VERSION_KEY)
    if version != TRAINING_SCHEMA_VERSION:
        found = "no schema version" if version is None else f"schema version {version}"
        raise ValueError(
            f"{path}: the file has {found}; this code reads version {TRAINING_SCHEMA_VERSION}. "
            "Convert the trajectories again with `ftrl convert`."
        )
