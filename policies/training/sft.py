"""SFT warm start: teach a model the tool-call format from oracle trajectories before RL.

GRPO learns only from differences between samples; a model that never writes a ``<tool_call>`` gets
the same reward for every sample and no signal at all. So the local backend can first fine-tune on
what a perfect policy does in the training environments:

1. the golden calls recorded in each environment's ``meta`` become an ``OraclePlan``
   (``envs.verify.oracle_plan``: one turn per dependency layer, so independent sub-questions are
   called together and a multi-hop step waits for the output it needs);
2. the oracle plays that plan through the real episode loop and sandbox (``envs.episode``), so the
   tool outputs in the transcripts are what the tools really return;
3. every assistant turn of a solved episode becomes one prompt/completion pair: the prompt is the
   prefix rendered with the environment's tools, exactly as the sampler renders it, the completion
   the rest of the rendered conversation up to the end-of-turn token;
4. TRL's ``SFTTrainer`` trains on the completions only (``completion_only_loss``).

Why prompt/completion text and not TRL's conversational ``assistant_only_loss``: that needs a chat
template with ``{% generation %}`` markers, which TRL supplies only for templates it knows by their
exact text (Qwen2.5's, not the tiny model's compact one), and conversational rows would put tool-call
argument dicts of varying keys into Arrow, which cannot type them.

DESIGN.md's measurements: with compact prompts, batch 32 and a peak LR of 2e-3 with warm-up and
cosine decay, the tiny model learns the format quickly and copying arguments after ~250 steps.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, Field, field_validator

from envs.construction.stages import SCENARIO_TYPES, ScenarioType
from envs.convert import decode_prompt, iter_training_rows
from envs.episode import EpisodeRunner, EpisodeSpec
from envs.jsonl import iter_rows
from envs.sandbox import SandboxPool, default_pool
from envs.schema import EnvRow
from envs.verify import MetaError, oracle_plan
from policies.backends import SamplingParams
from policies.oracle import OraclePlan, OraclePolicy, question_of
from policies.rendering import render_prompt
from policies.training.metrics import SFT_LAYOUT, MetricsCallback, plot_metrics
from policies.training.runs import (
    CHECKPOINTS_DIR,
    FINAL_MODEL_DIR,
    TrainerRuntime,
    check_manifest,
    checked_model_dir,
    common_trainer_args,
    run_trainer,
    save_model_folder,
)

__all__ = [
    "SFTConfig",
    "envs_from_parquet",
    "oracle_examples",
    "select_scenarios",
    "sft_warm_start",
]

_logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
PLOT_FILE = "metrics.png"


class SFTConfig(TrainerRuntime):
    """Supervised warm start on oracle trajectories; defaults suit the tiny model on a CPU.

    ``steps`` are optimizer steps of ``batch_size`` examples each (the example set is small and is
    repeated as often as needed). ``warmup_ratio`` is the share of steps spent warming the learning
    rate up to ``learning_rate``; it then decays on a cosine to 0.

    ``scenario_types`` keeps the warm start to the simpler scenario types, so that RL has something
    left to learn (DESIGN.md: GRPO from a warm start that already solves everything only damages it).
    ``skip_sampled_envs`` is read by the full run (``flows.pipeline``), which picks the environments:
    a small model memorises the questions it is fine-tuned on (the tiny model solved 73% of its own
    train single-hop questions and 13% of held-out ones), so GRPO on those learns little that carries over.
    """

    model_config = ConfigDict(extra="forbid")

    steps: int = Field(300, ge=1, description="Optimizer steps.")
    learning_rate: float = Field(2e-3, gt=0, description="Peak learning rate (2e-3 suits the tiny model).")
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="Share of steps for linear warm-up.")
    batch_size: int = Field(32, ge=1, description="Examples per optimizer step.")
    max_length: int = Field(1024, ge=16, description="Longest prompt+completion in tokens; longer are cut.")
    save_steps: int = Field(100, ge=1, description="Steps between checkpoints.")
    logging_steps: int = Field(10, ge=1, description="Steps between metric records.")
    scenario_types: list[ScenarioType] | None = Field(
        None,
        min_length=1,
        description="Warm-start only on train environments of these scenario types; empty: all types.",
    )
    skip_sampled_envs: bool = Field(
        False,
        description="In a full run, leave out the train environments that RL samples (the first "
        "sample.max_envs): RL then learns on questions the warm start never saw.",
    )

    @field_validator("scenario_types")
    @classmethod
    def _canonical_types(cls, value: list[ScenarioType] | None) -> list[ScenarioType] | None:
        """Each type once, in the canonical order: the same choice always keys the same cache."""
        if value is None:
            return None
        repeated = sorted({kind for kind in value if value.count(kind) > 1})
        if repeated:
            raise ValueError(f"scenario types listed twice: {', '.join(repeated)}")
        return [kind for kind in SCENARIO_TYPES if kind in value]


def select_scenarios(
    envs: Iterable[EnvRow], types: Sequence[ScenarioType] | None, *, logger: logging.Logger = _logger
) -> list[EnvRow]:
    """The train-split environments whose ``meta.scenario`` is one of ``types`` (all of ``envs`` when
    ``types`` is None); logs how many of each type were kept.

    Raises ``ValueError`` naming the types when none is left: a warm start on nothing would fail later,
    deep in the trainer, with a message that no longer says why.
    """
    rows = list(envs)
    if types is None:
        return rows
    train = [(env, str(env.meta_dict().get("scenario") or "unknown")) for env in rows if env.split == "train"]
    kept = [env for env, scenario in train if scenario in types]
    found = Counter(scenario for _, scenario in train)
    logger.info(
        "SFT warm start: kept %d of %d train environments (%s)",
        len(kept),
        len(train),
        ", ".join(f"{kind}: {found.get(kind, 0)}" for kind in types),
    )
    if not kept:
        present = ", ".join(f"{kind} ({count})" for kind, count in sorted(found.items())) or "none"
        raise ValueError(
            f"train.local.sft.scenario_types {list(types)}: no train-split environment of these types "
            f"to warm-start on (the train split holds: {present})"
        )
    return kept


def oracle_examples(
    envs: Iterable[EnvRow],
    tokenizer: Any,
    *,
    pool: SandboxPool | None = None,
    logger: logging.Logger = _logger,
) -> list[dict[str, str]]:
    """Prompt/completion text pairs, one per assistant turn of each solved oracle episode.

    Environments without golden calls or of the test split are left out; so is an episode the oracle
    does not fully solve (its golden calls are wrong), with a warning: training on it would teach
    calls that fail.
    """
    plans: dict[str, OraclePlan] = {}
    specs: list[EpisodeSpec] = []
    skipped = {"test split": 0, "no golden calls": 0, "repeated question": 0}
    for env in envs:
        plan = _plan(env) if env.split == "train" else None
        question = question_of(env.messages)
        if env.split != "train":
            skipped["test split"] += 1
        elif plan is None:
            skipped["no golden calls"] += 1
        elif question in plans:  # the oracle looks plans up by question
            skipped["repeated question"] += 1
        else:
            plans[question] = plan
            specs.append(
                EpisodeSpec(
                    key=(env.env_id, 0),
                    messages=env.messages,
                    tools=env.tool_schemas(),
                    codes=env.codes_dict(),
                    unsolved=env.unsolved(),
                )
            )
    if any(skipped.values()):
        logger.info(
            "oracle trajectories: left out %s", ", ".join(f"{n} ({why})" for why, n in skipped.items() if n)
        )
    longest = max((len(plan.turns) for plan in plans.values()), default=0) + 1
    runner = EpisodeRunner(
        OraclePolicy(plans),
        SamplingParams(temperature=0.0, seed=None),
        pool or default_pool(),
        max_turns=longest,
    )
    examples = []
    for state in runner.run(specs):
        if state.stop_reason != "answer" or state.solve_rate < 1.0:
            logger.warning(
                "environment %s: the golden calls do not solve it (%s, solve rate %.2f); left out",
                state.spec.key[0],
                state.error or state.stop_reason,
                state.solve_rate,
            )
            continue
        examples.extend(_turn_examples(tokenizer, state.messages, state.spec.tools))
    return examples


def _plan(env: EnvRow) -> OraclePlan | None:
    try:
        return oracle_plan(env)
    except MetaError as error:
        raise ValueError(f"environment {env.env_id}: {error}") from None


def _turn_examples(
    tokenizer: Any, messages: Sequence[dict[str, Any]], tools: list[dict[str, Any]]
) -> list[dict[str, str]]:
    """Cut a finished conversation into (prefix, next assistant turn) pairs of rendered text.

    The completion is the full rendering minus the prompt's text, so it is exactly what the template
    writes for the turn; it stops after the end-of-turn token (TRL appends one when it is missing, and
    the newline a template writes after it is never generated).
    """
    eos = tokenizer.eos_token
    pairs = []
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = render_prompt(tokenizer, messages[:index], tools)
        full = render_prompt(tokenizer, messages[: index + 1], tools, add_generation_prompt=False)
        if not full.startswith(prompt):
            raise ValueError(
                "the chat template renders a prefix differently once the assistant turn follows it, so a "
                "completion cannot be cut from the conversation; SFT needs a prefix-stable template"
            )
        completion = full[len(prompt) :]
        if eos and eos in completion:
            completion = completion[: completion.index(eos) + len(eos)]
        pairs.append({"prompt": prompt, "completion": completion})
    return pairs


def envs_from_parquet(path: str | Path) -> list[EnvRow]:
    """The environments of a training parquet: its turn-0 rows (the fresh environment), one per env id."""
    envs: dict[str, EnvRow] = {}
    for row in iter_training_rows(path):
        info = row["extra_info"]
        if info["turn"] != 0 or info["env_id"] in envs:
            continue
        envs[info["env_id"]] = EnvRow(
            messages=decode_prompt(row["prompt"]),
            tools=row["tools"],
            codes=row["codes"],
            unsolved_set=row["unsolved_set"],
            answer=row["answer"],
            solve_rate=row["solve_rate"],
            data_source=row["data_source"],
            split=row["split"],
            env_id=info["env_id"],
            meta=info["meta"],
        )
    return list(envs.values())


def sft_warm_start(
    config: SFTConfig,
    *,
    model_path: str | Path,
    output_dir: str | Path,
    env_rows: Iterable[EnvRow] | None = None,
    envs_file: str | Path | None = None,
    logger: logging.Logger | None = None,
) -> Path:
    """Fine-tune ``model_path`` on oracle trajectories of the environments; return the model folder.

    The environments come from ``env_rows`` or the JSONL ``envs_file`` (exactly one), narrowed to
    ``config.scenario_types`` (``select_scenarios``). ``output_dir``
    receives ``checkpoints/``, ``metrics.jsonl``, ``metrics.png`` and the final ``model/``. A run killed
    part way resumes from its newest complete checkpoint; a finished one (``model/`` exists) returns at
    once.
    """
    log = logger or _logger
    if (env_rows is None) == (envs_file is None):
        raise ValueError("sft_warm_start needs exactly one of env_rows and envs_file")
    model_dir = checked_model_dir(model_path)
    out = Path(output_dir)
    final = out / FINAL_MODEL_DIR
    rows = env_rows if env_rows is not None else iter_rows(Path(str(envs_file)), EnvRow)
    envs = select_scenarios(rows, config.scenario_types, logger=log)
    check_manifest(
        out,
        {
            "stage": "sft",
            "config": config.model_dump(),
            "model": str(model_dir.resolve()),
            "envs_sha256": hashlib.sha256(" ".join(sorted(env.env_id for env in envs)).encode()).hexdigest(),
        },
    )
    if (final / "config.json").is_file():
        log.info("SFT warm start already finished: %s", final)
        return final

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)

    def make_trainer() -> Any:
        examples = oracle_examples(envs, tokenizer, logger=log)
        if not examples:
            raise ValueError(
                "no oracle trajectory to train on: no train-split environment carries golden calls "
                "(meta.sub_questions[*].call) that solve it"
            )
        log.info("SFT warm start: %d examples from %d environments", len(examples), len(envs))
        return _sft_trainer(config, model_dir, tokenizer, examples, out)

    trained = run_trainer(
        make_trainer,
        checkpoints_dir=out / CHECKPOINTS_DIR,
        metrics_path=out / METRICS_FILE,
        max_steps=config.steps,
        threads=config.torch_threads,
        label="SFT warm start",
        logger=log,
    )
    save_model_folder(trained.model, tokenizer, final)
    plot_metrics(out / METRICS_FILE, out / PLOT_FILE, SFT_LAYOUT)
    log.info("SFT warm start finished after %d steps: %s", trained.steps, final)
    return final


def _sft_trainer(
    config: SFTConfig, model_dir: Path, tokenizer: Any, examples: list[dict[str, str]], out: Path
) -> Any:
    import datasets
    from trl import SFTConfig as TrlSFTConfig
    from trl import SFTTrainer

    args = TrlSFTConfig(
        output_dir=str(out / CHECKPOINTS_DIR),
        max_steps=config.steps,
        learning_rate=config.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=config.warmup_ratio,  # below 1: a share of max_steps (transformers 5)
        per_device_train_batch_size=config.batch_size,
        max_length=config.max_length,
        completion_only_loss=True,
        # Batches of similar lengths: a batch pads to its longest example, and oracle turns range from
        # one short call to a prompt holding several tool outputs; on a CPU padding is compute.
        train_sampling_strategy="group_by_length",
        save_steps=config.save_steps,
        save_total_limit=2,
        logging_steps=config.logging_steps,
        **common_trainer_args(config),
    )
    return SFTTrainer(
        model=str(model_dir),
        args=args,
        train_dataset=datasets.Dataset.from_list(examples),
        processing_class=tokenizer,
        callbacks=[MetricsCallback(out / METRICS_FILE, SFT_LAYOUT)],
    )
