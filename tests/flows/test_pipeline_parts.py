"""The parts of the orchestration layer that need no Prefect server: references and digests, cache
keys and profile views, shards, retry classification, fault injection, reports and artifacts' tables."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from envs.examples import numbered_variants
from envs.jsonl import RowError, iter_rows, write_rows
from envs.schema import EnvRow
from flows.pipeline import check_run, train_view
from policies.backends.base import BackendError
from policies.training.verl_backend import VerlLaunchError
from tasks import caching
from tasks.artifacts import artifact_key, env_report_table, eval_table
from tasks.caching import canonical, output_dir, stage_key, stage_view
from tasks.profile import PipelineConfig, ProfileError, load_profile
from tasks.references import FileRef, file_ref, folder_sha256, stat_fingerprint
from tasks.report import write_run_report
from tasks.retries import FAULT_ENV, InjectedFault, inject_fault, is_transient
from tasks.shards import concat_files, env_unit, shard_ranges, split_envs
from tasks.train import LATEST_VERL_STEP, latest_verl_actor, training_plots, training_steps


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- references -------------------------------------------------------------------------------------


def test_folder_digest_is_paths_and_contents_in_sorted_order(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "b.txt").write_bytes(b"bee")
    (tmp_path / "sub" / "a.txt").write_bytes(b"ay")
    (tmp_path / ".b.txt.tmp-1-ab").write_bytes(b"half written")  # an unfinished atomic write
    expected = sha(f"b.txt\0{sha(b'bee')}\nsub/a.txt\0{sha(b'ay')}\n".encode())
    assert folder_sha256(tmp_path) == expected
    assert file_ref(tmp_path, "model").sha256 == expected


def test_a_reference_fills_in_its_digest_checks_it_and_notices_a_change(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text("{}\n", encoding="utf-8")
    by_hand = FileRef(path=path, kind="envs")
    resolved = by_hand.resolved()
    assert resolved.sha256 == sha(b"{}\n") and resolved.resolved() == resolved
    path.write_text("{}\n{}\n", encoding="utf-8")
    with pytest.raises(ValueError, match=re.escape(f"{path}: content changed since it was recorded")):
        resolved.resolved()
    path.unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(f"{path}: no such file or folder")):
        by_hand.resolved()


def test_stat_fingerprint_sees_a_rewrite_without_reading(tmp_path: Path) -> None:
    path = tmp_path / "model"
    path.mkdir()
    (path / "w.bin").write_bytes(b"1234")
    before = stat_fingerprint(path)
    assert [(name, size) for name, size, _ in before] == [("w.bin", 4)]
    os.utime(path / "w.bin", ns=(1, 1))
    assert stat_fingerprint(path) != before
    assert stat_fingerprint(tmp_path / "missing") == []


# --- cache keys ----------------------------------------------------------------------------------------


def ref(path: str, digest: str) -> FileRef:
    return FileRef(path=Path(path), kind="envs", sha256=digest * 64, rows=3)


def test_a_key_depends_on_content_config_and_code_version_not_on_paths(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = stage_view(PipelineConfig(), "sample")
    key = stage_key("sample", {"config": config, "envs": ref("/a/envs.jsonl", "a")})
    assert stage_key("sample", {"config": config, "envs": ref("/elsewhere/x.jsonl", "a")}) == key
    assert stage_key("sample", {"config": config, "envs": ref("/a/envs.jsonl", "b")}) != key
    hotter = stage_view(load_profile(None, ["generation.temperature=0.5"]), "sample")
    assert stage_key("sample", {"config": hotter, "envs": ref("/a/envs.jsonl", "a")}) != key
    monkeypatch.setitem(caching.CODE_VERSIONS, "sample", "2")
    assert stage_key("sample", {"config": config, "envs": ref("/a/envs.jsonl", "a")}) != key


def test_the_stage_cache_leaves_out_where_and_under_which_name_results_go() -> None:
    policy = caching.StageCache(stage="convert")
    inputs = {"trajectories": ref("/r/t.jsonl", "c"), "run_dir": Path("/runs/one"), "label": "convert-1"}
    moved = {**inputs, "run_dir": Path("/runs/two"), "label": "convert-7"}
    assert policy.compute_key(None, inputs, {}) == policy.compute_key(None, moved, {})  # type: ignore[arg-type]


def test_bare_paths_and_undigested_references_cannot_key_a_cache() -> None:
    with pytest.raises(TypeError, match=re.escape("/data/x.jsonl: a bare path cannot key a cache")):
        canonical({"envs": Path("/data/x.jsonl")})
    with pytest.raises(ValueError, match="a reference without a digest cannot key a cache"):
        canonical(FileRef(path=Path("/data/x.jsonl"), kind="envs"))
    assert canonical(ref("/data/x.jsonl", "d")) == {
        "kind": "envs",
        "sha256": "d" * 64,
        "rows": 3,
        "schema": None,
    }


def test_a_stage_sees_only_its_sections() -> None:
    config = load_profile(
        None,
        ["generation.temperature=0.3", "build.count=7", "model.parser=hermes", "train.local.max_steps=9"],
    )
    sample = stage_view(config, "sample")
    assert sample.generation.temperature == 0.3 and sample.model.parser == "hermes"
    assert sample.build == PipelineConfig().build and sample.train == PipelineConfig().train
    train = stage_view(config, "train")
    assert train.train.local.max_steps == 9 and train.generation.temperature == 1.0
    assert stage_view(config, "convert") == PipelineConfig()


def test_the_sft_warm_start_belongs_to_the_first_iteration() -> None:
    config = load_profile(None, ["train.local.sft.steps=5"])
    assert train_view(config, 1).train.local.sft.steps == 5
    assert train_view(config, 2).train.local.sft is None
    assert train_view(config, 2).train.local.max_steps == config.train.local.max_steps


def test_output_dir_needs_a_running_task(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="names folders by the running task's cache key"):
        output_dir(tmp_path, "eval", "evaluate-base")


def test_a_profile_that_cannot_make_a_full_run_lists_every_reason(tmp_path: Path) -> None:
    config = load_profile(
        None,
        [
            "generation.backend=openai",
            f"model.path={tmp_path}",
            f"eval.data={tmp_path / 'missing.jsonl'}",
        ],
    )
    with pytest.raises(ValueError) as error:
        check_run(config)
    assert str(error.value).splitlines() == [
        "the profile cannot make a full run:",
        "  generation.backend: a full run samples with the models it trains; use transformers or vllm "
        "(an OpenAI-compatible endpoint serves a fixed model)",
        f"  model.path: {tmp_path} is not a model folder (no config.json)",
        f"  eval.data: {tmp_path / 'missing.jsonl'}: no such file",
    ]
    with pytest.raises(ValueError, match="build.test_fraction is 0, so the run builds no test split"):
        check_run(load_profile(None, ["build.test_fraction=0"]))


# --- shards ---------------------------------------------------------------------------------------------


def test_env_unit_and_shard_ranges_by_hand() -> None:
    assert env_unit(64, 1) == 64 and env_unit(32, 2) == 16 and env_unit(6, 4) == 3
    assert shard_ranges(10, 3, 2) == [range(0, 4), range(4, 8), range(8, 10)]
    assert shard_ranges(3, 3, 2) == [range(0, 2), range(2, 3), range(3, 3)]
    assert shard_ranges(0, 2, 4) == [range(0, 0), range(0, 0)]
    with pytest.raises(ValueError, match="need shards >= 1"):
        shard_ranges(5, 0, 1)


@given(count=st.integers(0, 500), shards=st.integers(1, 12), unit=st.integers(1, 40))
def test_shards_cover_the_input_in_order_in_whole_units(count: int, shards: int, unit: int) -> None:
    ranges = shard_ranges(count, shards, unit)
    assert len(ranges) == shards
    assert [index for bounds in ranges for index in bounds] == list(range(count))
    starts = [bounds.start for bounds in ranges if bounds]
    assert all(start % unit == 0 for start in starts)  # every shard starts on a chunk boundary
    sizes = [len(bounds) for bounds in ranges]
    units = [-(-size // unit) for size in sizes]
    assert max(units) - min(units) <= 1 and units == sorted(units, reverse=True)


def test_split_then_concat_gives_back_the_selected_rows(tmp_path: Path) -> None:
    rows = numbered_variants(7)
    rows = [
        row.model_copy(update={"split": "test" if index % 3 == 0 else "train"})
        for index, row in enumerate(rows)
    ]
    source = tmp_path / "envs.jsonl"
    write_rows(source, rows)
    pieces = split_envs(source, tmp_path / "shards", 3, 2, split="train")
    assert [count for _, count in pieces] == [2, 2, 0]
    joined = tmp_path / "joined.jsonl"
    assert concat_files([path for path, _ in pieces], joined) == 4
    expected = tmp_path / "expected.jsonl"
    write_rows(expected, [row for row in rows if row.split == "train"])
    assert joined.read_bytes() == expected.read_bytes()
    assert [row.env_id for row in iter_rows(joined, EnvRow)] == [r.env_id for r in rows if r.split == "train"]


def test_a_bad_row_fails_the_split_naming_its_line(tmp_path: Path) -> None:
    source = tmp_path / "envs.jsonl"
    source.write_text('{"messages": []}\n', encoding="utf-8")
    with pytest.raises(RowError, match=re.escape(f"{source}:1:")):
        split_envs(source, tmp_path / "shards", 2, 1)


# --- retries and faults ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (InjectedFault("x"), True),
        (ConnectionError("reset"), True),
        (TimeoutError("slow"), True),
        (VerlLaunchError("verl exited with status 1"), True),
        (OSError(28, "No space left on device"), True),
        (ValueError("bad"), False),
        (RowError(Path("a.jsonl"), 3, "not JSON"), False),
        (ProfileError("profile x: run.name: String should match pattern"), False),
        (FileNotFoundError("gone"), False),
        (BackendError("no chat template"), False),
    ],
)
def test_transient_failures_are_told_from_bad_input(error: BaseException, transient: bool) -> None:
    assert is_transient(error) is transient


def test_an_injected_fault_fires_once_per_run_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inject_fault("train", "train-1", tmp_path)  # not asked for: nothing happens
    monkeypatch.setenv(FAULT_ENV, "convert, train")
    for label in ("train-1", "train-2"):  # a stage name matches every run of it
        with pytest.raises(
            InjectedFault, match=re.escape(f"{label}: transient fault injected by {FAULT_ENV}")
        ):
            inject_fault("train", label, tmp_path)
        inject_fault("train", label, tmp_path)
    monkeypatch.setenv(FAULT_ENV, "sample-1/shard-0")
    with pytest.raises(InjectedFault):
        inject_fault("sample", "sample-1/shard-0", tmp_path)
    inject_fault("sample", "sample-1/shard-1", tmp_path)
    assert sorted(path.name for path in (tmp_path / ".faults").iterdir()) == [
        "sample-1__shard-0",
        "train-1",
        "train-2",
    ]


# --- training outputs -----------------------------------------------------------------------------------


def test_verl_checkpoint_is_the_actor_of_the_step_it_recorded(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="VeRL finished without saving a checkpoint"):
        latest_verl_actor(tmp_path)
    (tmp_path / LATEST_VERL_STEP).write_text("40\n", encoding="utf-8")
    with pytest.raises(RuntimeError, match="recorded step 40 but its actor folder is missing"):
        latest_verl_actor(tmp_path)
    (tmp_path / "global_step_40" / "actor").mkdir(parents=True)
    assert latest_verl_actor(tmp_path) == tmp_path / "global_step_40" / "actor"


def test_training_progress_files_and_plots_of_a_local_run(tmp_path: Path) -> None:
    config = load_profile(None, ["train.local.max_steps=6", "train.local.sft.steps=30"])
    assert training_steps(config, tmp_path) == {
        tmp_path / "metrics.jsonl": 6,
        tmp_path / "sft" / "metrics.jsonl": 30,
    }
    assert training_steps(load_profile(None, ["train.backend=verl"]), tmp_path) == {}
    (tmp_path / "model").mkdir()
    (tmp_path / "metrics.png").write_bytes(b"png")
    assert training_plots(tmp_path / "model") == {"GRPO": tmp_path / "metrics.png"}
    assert training_plots(tmp_path / "global_step_3" / "actor") == {}


# --- reports and tables -------------------------------------------------------------------------------------


def summary(model: str, f1: float) -> dict:
    return {
        "benchmark": "ftrl",
        "model": model,
        "tasks": 4,
        "episodes": 4,
        "failed_episodes": 0,
        "solve_f1": f1,
    }


def test_the_run_report_compares_and_links_its_plots(tmp_path: Path) -> None:
    evals = []
    for name, f1 in (("base", 0.25), ("iter-1", 0.5)):
        folder = tmp_path / "eval" / name
        folder.mkdir(parents=True)
        (folder / "summary.json").write_text(json.dumps(summary(name, f1)), encoding="utf-8")
        evals.append(folder)
    plot = tmp_path / "checkpoints" / "metrics.png"
    written = write_run_report(evals, ["base", "iter-1"], tmp_path / "report", plots={"iter-1: GRPO": plot})
    text = written.path.read_text(encoding="utf-8")
    assert "| iter-1 | 4 | 0.5000 (+0.2500) |" in text
    assert text.endswith(
        "## Plots\n\n- [comparison chart](comparison.png)\n- [iter-1: GRPO](../checkpoints/metrics.png)\n"
    )
    single = write_run_report(evals[:1], ["base"], tmp_path / "one")
    assert (
        single.path.read_text(encoding="utf-8").startswith("# ftrl evaluation: base\n") and single.plots == {}
    )


def test_tables_for_the_ui() -> None:
    report = {"requested": 5, "written": 4, "train": 3, "test": 1, "scenario_types": {"single-hop": 4}}
    assert env_report_table(report) == [
        {"count": "requested", "value": "", "environments": 5},
        {"count": "written", "value": "", "environments": 4},
        {"count": "train", "value": "", "environments": 3},
        {"count": "test", "value": "", "environments": 1},
        {"count": "scenario_types", "value": "single-hop", "environments": 4},
    ]
    assert eval_table({"base": summary("base", 1 / 3)}) == [
        {"model": "base", "tasks": 4, "episodes": 4, "solve_f1": 0.3333}
    ]
    assert artifact_key("Smoke", "sample-1/shard-0", "progress") == "smoke-sample-1-shard-0-progress"
