"""The parts of the orchestration layer that need no Prefect server: references and digests, cache
keys and profile views, shards, retry classification, fault injection, reports and artifacts' tables."""

from __future__ import annotations

import hashlib
import json
import os
import re
import typing
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from envs.examples import numbered_variants
from envs.jsonl import RowError, iter_rows, write_rows
from envs.schema import EnvRow
from flows.pipeline import check_run, train_view, warm_start_view
from flows.run_cli import run_profile
from policies.backends.base import BackendError
from policies.training.verl_backend import VerlLaunchError
from tasks import caching
from tasks.artifacts import artifact_key, env_report_table, eval_table
from tasks.caching import canonical, output_dir, stage_key, stage_view
from tasks.profile import SEED_KEYS, PipelineConfig, ProfileError, load_profile
from tasks.references import FileRef, file_ref, folder_sha256, stat_fingerprint
from tasks.report import write_run_report
from tasks.retries import FAULT_ENV, InjectedFault, inject_fault, is_transient
from tasks.shards import concat_files, env_unit, shard_ranges, split_envs
from tasks.train import (
    LATEST_VERL_STEP,
    latest_verl_actor,
    training_metrics,
    training_plots,
    training_steps,
    warm_start_plot,
    warm_start_steps,
)


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


def test_the_sft_warm_start_is_a_stage_of_its_own() -> None:
    config = load_profile(
        None, ["train.local.sft.steps=5", "train.local.sft.scenario_types=[single-hop]", "build.count=7"]
    )
    assert train_view(config).train.local.sft is None
    assert train_view(config).train.local.max_steps == config.train.local.max_steps
    warm = warm_start_view(config)
    assert warm is not None and warm.train.local.sft == config.train.local.sft
    assert warm.train.local.max_steps == PipelineConfig().train.local.max_steps  # GRPO is not its business
    assert warm.build == PipelineConfig().build
    assert warm_start_view(load_profile(None)) is None
    assert warm_start_view(load_profile(None, ["train.local.sft.steps=5", "train.backend=verl"])) is None
    # an SFT setting keys the warm start (and so, through its model, everything after it), not the train
    # stages; a GRPO setting the other way round
    sft_changed = load_profile(None, ["train.local.sft.steps=6"])
    grpo_changed = load_profile(None, ["train.local.sft.steps=5", "train.local.max_steps=3"])
    five = load_profile(None, ["train.local.sft.steps=5"])
    keys = {
        name: (stage_key("warm-start", {"c": warm_start_view(c)}), stage_key("train", {"c": train_view(c)}))
        for name, c in (("five", five), ("sft", sft_changed), ("grpo", grpo_changed))
    }
    assert keys["sft"][0] != keys["five"][0] and keys["sft"][1] == keys["five"][1]
    assert keys["grpo"][0] == keys["five"][0] and keys["grpo"][1] != keys["five"][1]


def seed_fields(model: type[BaseModel], prefix: str = "") -> Iterator[str]:
    """Dotted paths of every `seed` / `*_seed` field, through nested (and optional) sections."""
    for name, info in model.model_fields.items():
        if name == "seed" or name.endswith("_seed"):
            yield prefix + name
        for kind in typing.get_args(info.annotation) or (info.annotation,):
            if isinstance(kind, type) and issubclass(kind, BaseModel):
                yield from seed_fields(kind, f"{prefix}{name}.")


def test_one_seed_sets_every_seed_of_the_profile_and_keys_every_stage_that_reads_one(tmp_path: Path) -> None:
    assert {*SEED_KEYS, "train.local.sft.seed"} == set(seed_fields(PipelineConfig))  # none forgotten
    with_sft = tmp_path / "sft.yaml"
    with_sft.write_text("train: {local: {sft: {steps: 5}}}\n", encoding="utf-8")
    config = run_profile(with_sft, ["sample.seed=9"], seed=3)  # --set still picks one seed
    seeds = (config.build.seed, config.eval.seed, config.train.local.seed, config.model.tiny_seed)
    assert seeds == (3, 3, 3, 3) and config.train.local.sft.seed == 3 and config.sample.seed == 9
    plain = tmp_path / "plain.yaml"
    plain.write_text("build: {count: 4}\n", encoding="utf-8")
    assert run_profile(plain, [], seed=3).train.local.sft is None  # a seed does not create a warm start
    assert run_profile(plain, []) == load_profile(plain)
    zero = run_profile(with_sft, [], seed=0)
    for stage in ("model", "build", "sample", "warm-start", "train", "evaluate"):
        views = [stage_view(c, stage) for c in (zero, config)]
        if stage == "warm-start":
            views = [warm_start_view(c) for c in (zero, config)]
        assert stage_key(stage, {"config": views[0]}) != stage_key(stage, {"config": views[1]}), stage


def test_ftrl_run_help_documents_the_seed() -> None:
    from typer.testing import CliRunner

    from flows.cli import app

    result = CliRunner().invoke(app, ["run", "--help"], env={"COLUMNS": "200"})
    text = " ".join(result.output.replace("│", " ").split())
    assert result.exit_code == 0 and "--seed" in text
    assert "One seed for the whole run: build.seed, sample.seed, eval.seed, train.local.seed," in text


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


def test_sampled_and_warm_start_rows_partition_the_train_rows(tmp_path: Path) -> None:
    """`sample.max_envs` takes the first train rows; `train.local.sft.skip_sampled_envs` the rest."""
    rows = [
        row.model_copy(update={"split": "test" if index % 3 == 0 else "train"})
        for index, row in enumerate(numbered_variants(8))
    ]
    source = tmp_path / "envs.jsonl"
    write_rows(source, rows)
    train = [row.env_id for row in rows if row.split == "train"]  # rows 1, 2, 4, 5, 7

    def ids(**window: int) -> list[str]:
        (piece,) = split_envs(source, tmp_path / str(window), 1, 1, split="train", **window)
        return [row.env_id for row in iter_rows(piece[0], EnvRow)]

    assert ids(limit=2) == train[:2] and ids(offset=2) == train[2:]
    assert ids(limit=2, offset=1) == train[1:3] and ids(offset=9) == []


def test_a_warm_start_that_skips_the_sampled_envs_needs_a_sample_limit() -> None:
    profile = ["train.backend=local", "train.local.sft.skip_sampled_envs=true"]
    with pytest.raises(ValueError, match="sample.max_envs is empty"):
        check_run(load_profile(None, profile))
    check_run(load_profile(None, [*profile, "sample.max_envs=4"]))


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
    assert warm_start_plot(tmp_path / "model") == tmp_path / "metrics.png"
    assert training_metrics(tmp_path / "model") is None  # no metrics.jsonl yet
    (tmp_path / "metrics.jsonl").write_text("", encoding="utf-8")
    assert training_metrics(tmp_path / "model") == tmp_path / "metrics.jsonl"
    assert training_metrics(tmp_path / "global_step_3" / "actor") is None
    assert warm_start_steps(config, tmp_path) == {tmp_path / "metrics.jsonl": 30}
    assert warm_start_steps(load_profile(None), tmp_path) == {}


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
        "## Plots\n\n- [comparison chart](comparison.png)\n- [Solve-F1 per model](by-model.png)\n"
        "- [iter-1: GRPO](../checkpoints/metrics.png)\n"
    )
    single = write_run_report(evals[:1], ["base"], tmp_path / "one")
    assert (
        single.path.read_text(encoding="utf-8").startswith("# ftrl evaluation: base\n") and single.plots == {}
    )


def scenario_summary(model: str, p: float, r: float, f1: float, single: float, multi: float) -> dict:
    groups = {
        "single-hop": {"tasks": 3, "episodes": 3, "failed_episodes": 0, "solve_f1": single},
        "multi-hop": {"tasks": 1, "episodes": 1, "failed_episodes": 0, "solve_f1": multi},
    }
    return {
        "benchmark": "ftrl",
        "model": model,
        "tasks": 4,
        "episodes": 4,
        "failed_episodes": 0,
        "solve_precision": p,
        "solve_rate": r,
        "solve_f1": f1,
        "by_scenario": groups,
    }


def grpo_metrics(path: Path, rewards: list[float]) -> Path:
    path.parent.mkdir(parents=True)
    lines = [
        json.dumps({"step": step, "reward_mean": value, "reward_std": 0.1})
        for step, value in enumerate(rewards, start=1)
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_the_run_report_measures_from_the_warm_start_and_draws_the_reward(tmp_path: Path) -> None:
    """Four models, two GRPO iterations of 3 and 2 steps: the tables by hand, the charts as PNGs."""
    runs = {
        "base": (0.0, 0.0, 0.0, 0.0, 0.0),
        "warm-start": (0.5, 0.25, 0.3, 0.4, 0.0),
        "iter-1": (0.6, 0.5, 0.45, 0.5, 0.25),
        "iter-2": (0.8, 0.5, 0.55, 0.6, 0.5),
    }
    evals = []
    for name, values in runs.items():
        folder = tmp_path / "eval" / name
        folder.mkdir(parents=True)
        (folder / "summary.json").write_text(json.dumps(scenario_summary(name, *values)), encoding="utf-8")
        evals.append(folder)
    training = {
        "iter-1": grpo_metrics(tmp_path / "train-1" / "metrics.jsonl", [0.1, 0.2, 0.3]),
        "iter-2": grpo_metrics(tmp_path / "train-2" / "metrics.jsonl", [0.25, 0.5]),
    }
    out = tmp_path / "report"
    written = write_run_report(evals, list(runs), out, reference="warm-start", training=training)
    text = written.path.read_text(encoding="utf-8")
    assert text.startswith(
        "# ftrl evaluation: base vs warm-start vs iter-1 vs iter-2\n"
        "\n"
        "Changes in parentheses are from **warm-start**.\n"
        "\n"
        "| run | tasks | Solve-P | Solve-R | Solve-F1 |\n"
        "| --- | --- | --- | --- | --- |\n"
        "| base | 4 | 0.0000 (-0.5000) | 0.0000 (-0.2500) | 0.0000 (-0.3000) |\n"
        "| warm-start | 4 | 0.5000 | 0.2500 | 0.3000 |\n"
        "| iter-1 | 4 | 0.6000 (+0.1000) | 0.5000 (+0.2500) | 0.4500 (+0.1500) |\n"
        "| iter-2 | 4 | 0.8000 (+0.3000) | 0.5000 (+0.2500) | 0.5500 (+0.2500) |\n"
        "\n"
        "## Solve-F1 by scenario\n"
        "\n"
        "| scenario | tasks | base | warm-start | iter-1 | iter-2 | iter-2 − warm-start |\n"
        "| --- | --- | --- | --- | --- | --- | --- |\n"
        "| single-hop | 3 | 0.0000 | 0.4000 | 0.5000 | 0.6000 | +0.2000 |\n"
        "| multi-hop | 1 | 0.0000 | 0.0000 | 0.2500 | 0.5000 | +0.5000 |\n"
        "\n"
        "## Training reward (GRPO)\n"
        "\n"
        "The per-step reward mean over each iteration's logged steps.\n"
        "\n"
        "| iteration | steps | first | last | mean |\n"
        "| --- | --- | --- | --- | --- |\n"
        "| iter-1 | 3 | 0.1000 | 0.3000 | 0.2000 |\n"
        "| iter-2 | 2 | 0.2500 | 0.5000 | 0.3750 |\n"
    )
    assert text.endswith(
        "## Plots\n\n"
        "- [comparison chart](comparison.png)\n"
        "- [Solve-P, Solve-R, Solve-F1 per model](by-model.png)\n"
        "- [Solve-F1 by scenario per model](by-scenario.png)\n"
        "- [training reward (mean ± std) per step](training-reward.png)\n"
    )
    for chart in ("comparison.png", "by-model.png", "by-scenario.png", "training-reward.png"):
        assert (out / chart).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert written.tables["scenarios"][0] == {
        "scenario": "single-hop",
        "tasks": 3,
        "base": 0.0,
        "warm-start": 0.4,
        "iter-1": 0.5,
        "iter-2": 0.6,
        "iter-2 − warm-start": 0.2,
    }
    assert [row["Solve-F1 change"] for row in written.tables["results"]] == [-0.3, 0.0, 0.15, 0.25]
    assert written.tables["training reward"][1] == {
        "iteration": "iter-2",
        "steps": 2,
        "first": 0.25,
        "last": 0.5,
        "mean": 0.375,
    }


def test_reward_across_iterations_continues_the_step_axis(tmp_path: Path) -> None:
    from policies.training.metrics import GRPO_LAYOUT, plot_across_runs

    first = grpo_metrics(tmp_path / "a" / "metrics.jsonl", [0.1, 0.2])
    empty = tmp_path / "b" / "metrics.jsonl"  # an iteration that logged nothing draws nothing
    panel = GRPO_LAYOUT.panels[0]
    assert plot_across_runs({"iter-1": empty}, tmp_path / "none.png", panel) is None
    assert not (tmp_path / "none.png").exists()
    chart = plot_across_runs({"iter-1": first, "iter-2": empty}, tmp_path / "reward.png", panel)
    assert chart == tmp_path / "reward.png" and chart.read_bytes()[:4] == b"\x89PNG"


def test_tables_for_the_ui() -> None:
    report = {
        "requested": 5,
        "written": 4,
        "train": 3,
        "test": 1,
        "left_out_for_test": 1,
        "scenario_types": {"single-hop": 4},
    }
    assert env_report_table(report) == [
        {"count": "requested", "value": "", "environments": 5},
        {"count": "written", "value": "", "environments": 4},
        {"count": "train", "value": "", "environments": 3},
        {"count": "test", "value": "", "environments": 1},
        {"count": "left_out_for_test", "value": "", "environments": 1},
        {"count": "scenario_types", "value": "single-hop", "environments": 4},
    ]
    assert eval_table({"base": summary("base", 1 / 3)}) == [
        {"model": "base", "tasks": 4, "episodes": 4, "solve_f1": 0.3333}
    ]
    assert artifact_key("Smoke", "sample-1/shard-0", "progress") == "smoke-sample-1-shard-0-progress"
