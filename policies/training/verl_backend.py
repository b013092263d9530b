"""VeRL backend: typed settings that become one `python -m verl.trainer.main_ppo` command line.

The command targets verl 0.9.1, whose key names differ from older releases (the reward function is
`reward.custom_reward_function.*`, not a top-level `custom_reward_function`). Every run it builds:

- reads the converted training parquet through `policies.verl_agent_loop.FtrlRLHFDataset`, and
  renders each row with its own tools through the agent loop named in the file that
  `policies.verl_agent_loop.write_agent_loop_config` writes;
- scores turns with `rewards/verl.py`'s `compute_score` (verl's `naive` reward loop, the only
  registered manager of 0.9.1 that calls a per-sample function), with the parser and reward kind
  passed as `reward_kwargs`;
- checkpoints into the run's folder and resumes from its latest checkpoint when rerun.

`dry_run` asks verl itself: `--cfg job --resolve` composes the full config (CPU only, no model
load), then verl's own `validate_config`, dataset-class and reward-function loaders check it.
`launch` runs the command and streams its output to a logger.

This module imports no verl at import time; `dry_run` imports it when called.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import re
import shlex
import signal
import subprocess
import sys
import warnings
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from policies.backends.base import BackendError
from policies.backends.local import check_model_dir
from rewards.formulas import RewardKind

__all__ = [
    "VerlConfig",
    "VerlConfigError",
    "VerlLaunchError",
    "VerlRun",
    "dry_run",
    "launch",
    "verl_command",
]

ENTRY_MODULE = "verl.trainer.main_ppo"
DATASET_MODULE = "policies.verl_agent_loop"
DATASET_CLASS = "FtrlRLHFDataset"
REWARD_MODULE = "rewards.verl"
REWARD_FUNCTION = "compute_score"
#: verl 0.9.1's reward loop registers dapo, gdpo, naive, rate_limited and remote; only `naive` scores
#: one sample at a time with the custom function and nothing else.
REWARD_MANAGER = "naive"
#: Lines of verl's output quoted when it fails.
TAIL_LINES = 20
DRY_RUN_TIMEOUT_S = 600.0
#: How long a cancelled run gets to stop (and let Ray shut down) before it is killed.
STOP_GRACE_S = 30.0

TrackingBackend = Literal[
    "console", "wandb", "mlflow", "swanlab", "vemlp_wandb", "tensorboard", "clearml", "trackio", "file"
]


class VerlConfigError(ValueError):
    """Settings or run inputs that verl would reject. The first line says what is wrong; the lines
    after it, when there are any, quote verl's own words."""


class VerlLaunchError(RuntimeError):
    """The verl process ended with a non-zero status; the message quotes its last lines."""


class LineLogger(Protocol):
    """Anything with `logging.Logger.info`'s call shape: a logger, an adapter, Prefect's run logger."""

    def info(self, msg: str, *args: Any) -> Any: ...


class VerlConfig(BaseModel):
    """The settings of one VeRL run, as the `train.verl` section of a profile.

    Defaults are the paper's released scripts (`FTRL-GRPO-Qwen25.sh` and siblings), except
    `tensor_parallel_size`, `gpu_memory_utilization` and `ref_param_offload`, which default to
    settings that fit more machines; the `configs/paper-*.yaml` profiles set the paper's values.
    Anything verl has and this model lacks goes in `extra_overrides`.
    """

    model_config = ConfigDict(extra="forbid")

    # Algorithm and loss
    algorithm: Literal["grpo", "reinforce_plus_plus"] = Field(
        "grpo", description="Advantage estimator: GRPO (group-normalised) or REINFORCE++."
    )
    learning_rate: float = Field(1e-6, gt=0, description="Actor learning rate (AdamW).")
    use_kl_loss: bool = Field(True, description="KL to the reference model as a loss term, not a reward.")
    kl_loss_coef: float = Field(0.001, ge=0, description="Weight of the KL loss.")
    kl_loss_type: Literal["kl", "k1", "abs", "mse", "k2", "low_var_kl", "k3", "full"] = Field(
        "low_var_kl", description="KL estimator; low_var_kl is k3."
    )
    entropy_coeff: float = Field(0.001, ge=0, description="Entropy bonus weight.")

    # Batches, in prompts (a prompt yields rollout_n samples)
    train_batch_size: int = Field(512, ge=1, description="Prompts per training step.")
    ppo_mini_batch_size: int = Field(32, ge=1, description="Prompts per optimiser update.")
    use_dynamic_bsz: bool = Field(True, description="Pack micro-batches by tokens, not by count.")
    ppo_max_token_len_per_gpu: int = Field(
        32768, ge=1, description="Tokens per GPU per micro-batch (dynamic batch size)."
    )
    ppo_micro_batch_size_per_gpu: int | None = Field(
        None, ge=1, description="Samples per GPU per micro-batch; required without dynamic batch size."
    )
    log_prob_micro_batch_size_per_gpu: int | None = Field(
        None, ge=1, description="Samples per GPU when recomputing log-probs; empty: as the line above."
    )

    # Rollout
    rollout_n: int = Field(16, ge=1, description="Samples per prompt.")
    rollout_engine: Literal["vllm", "sglang"] = Field("vllm", description="Inference engine of the rollout.")
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs per rollout engine replica.")
    gpu_memory_utilization: float = Field(
        0.6, gt=0, le=1, description="Share of GPU memory the rollout engine may take."
    )
    temperature: float = Field(1.0, gt=0, description="Sampling temperature of rollouts.")
    max_num_batched_tokens: int = Field(32768, ge=1, description="Engine's token budget per step.")

    # Lengths, in tokens
    max_prompt_length: int = Field(16384, ge=1, description="Longest prompt, tools included.")
    max_response_length: int = Field(1024, ge=1, description="Longest turn (paper: 8192 in reasoning mode).")
    filter_overlong_prompts: bool = Field(True, description="Drop rows whose prompt exceeds the limit.")

    # Memory
    gradient_checkpointing: bool = Field(True, description="Recompute activations in the backward pass.")
    use_remove_padding: bool = Field(True, description="Unpadded (packed) sequences in the actor.")
    param_offload: bool = Field(False, description="Offload actor parameters to CPU.")
    optimizer_offload: bool = Field(False, description="Offload actor optimiser state to CPU.")
    ref_param_offload: bool = Field(False, description="Offload reference-model parameters to CPU.")

    # Cluster
    nodes: int = Field(1, ge=1, description="Machines in the run.")
    gpus_per_node: int = Field(8, ge=1, description="GPUs used on each machine.")
    ray_address: str | None = Field(
        None,
        pattern=r"^(auto|(ray://)?[A-Za-z0-9_.-]+:[0-9]{1,5})$",
        description="An existing Ray cluster (auto, HOST:PORT or ray://HOST:PORT); empty starts one.",
    )

    # Trainer
    total_epochs: int = Field(1, ge=1, description="Passes over the training parquet.")
    save_freq: int = Field(120, description="Checkpoint every N steps; -1 never.")
    test_freq: int = Field(-1, description="Validate every N steps; -1 never.")
    val_before_train: bool = Field(False, description="Validate once before the first step.")
    resume_mode: Literal["auto", "disable"] = Field(
        "auto", description="auto: continue from the latest checkpoint in the run's folder."
    )
    logger: list[TrackingBackend] = Field(
        default_factory=lambda: ["console"], min_length=1, description="Metric trackers (wandb needs a key)."
    )
    project_name: str = Field("ftrl", pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
    experiment_name: str = Field("default", pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")

    extra_overrides: list[str] = Field(
        default_factory=list,
        description="More Hydra overrides for verl (key=value, +key=value, ++key=value, ~key), applied last.",
    )

    @field_validator("save_freq", "test_freq")
    @classmethod
    def _every_or_never(cls, value: int) -> int:
        if value == 0 or value < -1:
            raise ValueError(f"must be -1 (never) or a number of steps >= 1, got {value}")
        return value

    @field_validator("extra_overrides")
    @classmethod
    def _hydra_overrides(cls, overrides: list[str]) -> list[str]:
        for index, text in enumerate(overrides):
            problem = _override_problem(text)
            if problem is not None:
                raise ValueError(f"[{index}] {text!r}: {problem}")
        return overrides

    @model_validator(mode="after")
    def _consistent(self) -> VerlConfig:
        problem = self._inconsistency()
        if problem is not None:
            raise ValueError(problem)
        return self

    @property
    def gpus_total(self) -> int:
        return self.nodes * self.gpus_per_node

    @property
    def gpus_required(self) -> int:
        """The GPUs the smallest unit of the run needs: one rollout engine replica."""
        return self.tensor_parallel_size

    def _inconsistency(self) -> str | None:
        cluster = f"nodes × gpus_per_node = {self.nodes} × {self.gpus_per_node} = {self.gpus_total}"
        if self.gpus_required > self.gpus_total:
            return (
                f"tensor_parallel_size {self.tensor_parallel_size} needs {self.gpus_required} GPUs, "
                f"more than {cluster}"
            )
        if self.gpus_total % self.tensor_parallel_size:
            return f"tensor_parallel_size {self.tensor_parallel_size} must divide the GPU count ({cluster})"
        if self.algorithm == "grpo" and self.rollout_n < 2:
            return f"grpo compares the samples of a prompt, so rollout_n must be >= 2, got {self.rollout_n}"
        if self.ppo_mini_batch_size > self.train_batch_size:
            return (
                f"ppo_mini_batch_size {self.ppo_mini_batch_size} is larger than "
                f"train_batch_size {self.train_batch_size}"
            )
        if not self.use_dynamic_bsz:
            if self.ppo_micro_batch_size_per_gpu is None:
                return "without use_dynamic_bsz, set ppo_micro_batch_size_per_gpu"
            samples = self.train_batch_size * self.rollout_n
            if samples % self.gpus_total:
                return (
                    f"without use_dynamic_bsz, train_batch_size × rollout_n = {samples} samples must "
                    f"split evenly over the {self.gpus_total} GPUs"
                )
        return None


@dataclass(frozen=True)
class VerlRun:
    """What one run trains on and where it writes; settings that other profile sections own.

    `parser`, `reward_kind` and `enable_thinking` come from the profile's `model.parser`,
    `reward.kind` and `generation.enable_thinking`: training must read, score and render turns
    exactly as sampling did. All paths must be the same on every node of a multi-node run.
    """

    model_path: Path
    train_parquet: Path
    val_parquet: Path | None
    checkpoint_dir: Path
    agent_loop_config: Path
    parser: str
    reward_kind: RewardKind
    enable_thinking: bool | None = None
    python: str = sys.executable

    def check_inputs(self) -> None:
        """Fail in a second, with one line, on what verl would otherwise find after minutes of Ray setup."""
        try:
            check_model_dir(self.model_path)
        except BackendError as error:
            raise VerlConfigError(str(error)) from None
        files = [("training parquet", self.train_parquet), ("agent loop config", self.agent_loop_config)]
        if self.val_parquet is not None:
            files.append(("validation parquet", self.val_parquet))
        for what, path in files:
            if not Path(path).is_file():
                raise VerlConfigError(f"{path}: {what} not found")


#: Which verl keys each setting sets; `extra_overrides` may not set them behind its back.
_FIELD_KEYS: dict[str, tuple[str, ...]] = {
    "algorithm": ("algorithm.adv_estimator",),
    "learning_rate": ("actor_rollout_ref.actor.optim.lr",),
    "use_kl_loss": ("actor_rollout_ref.actor.use_kl_loss",),
    "kl_loss_coef": ("actor_rollout_ref.actor.kl_loss_coef",),
    "kl_loss_type": ("actor_rollout_ref.actor.kl_loss_type",),
    "entropy_coeff": ("actor_rollout_ref.actor.entropy_coeff",),
    "train_batch_size": ("data.train_batch_size",),
    "ppo_mini_batch_size": ("actor_rollout_ref.actor.ppo_mini_batch_size",),
    "use_dynamic_bsz": ("actor_rollout_ref.actor.use_dynamic_bsz",),
    "ppo_max_token_len_per_gpu": ("actor_rollout_ref.actor.ppo_max_token_len_per_gpu",),
    "ppo_micro_batch_size_per_gpu": ("actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu",),
    "log_prob_micro_batch_size_per_gpu": (
        "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu",
        "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu",
    ),
    "rollout_n": ("actor_rollout_ref.rollout.n",),
    "rollout_engine": ("actor_rollout_ref.rollout.name",),
    "tensor_parallel_size": ("actor_rollout_ref.rollout.tensor_model_parallel_size",),
    "gpu_memory_utilization": ("actor_rollout_ref.rollout.gpu_memory_utilization",),
    "temperature": ("actor_rollout_ref.rollout.temperature",),
    "max_num_batched_tokens": ("actor_rollout_ref.rollout.max_num_batched_tokens",),
    "max_prompt_length": ("data.max_prompt_length",),
    "max_response_length": ("data.max_response_length",),
    "filter_overlong_prompts": ("data.filter_overlong_prompts",),
    "gradient_checkpointing": ("actor_rollout_ref.model.enable_gradient_checkpointing",),
    "use_remove_padding": ("actor_rollout_ref.model.use_remove_padding",),
    "param_offload": ("actor_rollout_ref.actor.fsdp_config.param_offload",),
    "optimizer_offload": ("actor_rollout_ref.actor.fsdp_config.optimizer_offload",),
    "ref_param_offload": ("actor_rollout_ref.ref.fsdp_config.param_offload",),
    "nodes": ("trainer.nnodes",),
    "gpus_per_node": ("trainer.n_gpus_per_node",),
    "ray_address": ("ray_kwargs.ray_init.address",),
    "total_epochs": ("trainer.total_epochs",),
    "save_freq": ("trainer.save_freq",),
    "test_freq": ("trainer.test_freq",),
    "val_before_train": ("trainer.val_before_train",),
    "resume_mode": ("trainer.resume_mode",),
    "logger": ("trainer.logger",),
    "project_name": ("trainer.project_name",),
    "experiment_name": ("trainer.experiment_name",),
}
#: Keys set from `VerlRun` and this project's extension points, and the pre-0.9 keys that verl 0.9.1
#: migrates onto them at start-up (a top-level `custom_reward_function` would replace ours).
_RUN_KEYS = (
    "custom_reward_function",
    "reward_model.reward_manager",
    "actor_rollout_ref.model.path",
    "data.train_files",
    "data.val_files",
    "data.custom_cls",
    "data.apply_chat_template_kwargs.enable_thinking",
    "actor_rollout_ref.rollout.agent.agent_loop_config_path",
    "reward.custom_reward_function",
    "reward.reward_manager.name",
    "trainer.default_local_dir",
)


def verl_command(config: VerlConfig, run: VerlRun) -> list[str]:
    """The argv that trains `run.model_path` with `config`: verl's PPO entry point plus Hydra overrides.

    `config.extra_overrides` come last, so they apply after everything this function sets.
    """
    if run.val_parquet is None and (config.test_freq > 0 or config.val_before_train):
        raise VerlConfigError(
            "validation is on (test_freq or val_before_train) but the run has no validation parquet"
        )
    settings: list[tuple[str, Any]] = []
    for name, keys in _FIELD_KEYS.items():
        value = getattr(config, name)
        if name == "log_prob_micro_batch_size_per_gpu" and value is None:
            value = config.ppo_micro_batch_size_per_gpu
        if name == "ray_address":
            if value is not None:
                settings.append(("+ray_kwargs.ray_init.address", value))
            continue
        settings.extend((key, value) for key in keys)
    train = _absolute(run.train_parquet)
    settings += [
        ("actor_rollout_ref.model.path", _absolute(run.model_path)),
        ("data.train_files", train),
        # verl always builds a validation set; with validation off, the training file stands in.
        ("data.val_files", train if run.val_parquet is None else _absolute(run.val_parquet)),
        ("data.custom_cls.path", f"pkg://{DATASET_MODULE}"),
        ("data.custom_cls.name", DATASET_CLASS),
        ("actor_rollout_ref.rollout.agent.agent_loop_config_path", _absolute(run.agent_loop_config)),
        ("reward.custom_reward_function.path", reward_function_path()),
        ("reward.custom_reward_function.name", REWARD_FUNCTION),
        ("+reward.custom_reward_function.reward_kwargs.reward_kind", run.reward_kind),
        ("+reward.custom_reward_function.reward_kwargs.parser", run.parser),
        ("reward.reward_manager.name", REWARD_MANAGER),
        ("trainer.default_local_dir", _absolute(run.checkpoint_dir)),
    ]
    if run.enable_thinking is not None:
        settings.append(("+data.apply_chat_template_kwargs.enable_thinking", run.enable_thinking))
    overrides = [f"{key}={_hydra_value(value)}" for key, value in settings]
    return [run.python, "-m", ENTRY_MODULE, *overrides, *config.extra_overrides]


def reward_function_path() -> str:
    """Absolute path of `rewards/verl.py`, found without importing it (verl loads it by path)."""
    spec = importlib.util.find_spec(REWARD_MODULE)
    if spec is None or spec.origin is None:
        raise VerlConfigError(f"{REWARD_MODULE} is not importable: install this project (pip install -e .)")
    return str(Path(spec.origin).resolve())


def dry_run(config: VerlConfig, run: VerlRun) -> str:
    """verl's fully resolved config for this run, as YAML text, after verl's own checks.

    Needs no GPU and no model: `--cfg job --resolve` composes and prints the config without
    training, then `validate_config` (what `main_ppo` runs first) and verl's loaders for the
    dataset class and reward function check it. Raises `VerlConfigError` quoting verl.
    """
    command = [*verl_command(config, run), "--cfg", "job", "--resolve"]
    process = _start(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        checks = _verl_checks()  # imports verl here while the subprocess composes the config
        stdout, stderr = process.communicate(timeout=DRY_RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise VerlConfigError(f"verl's --cfg job did not finish within {DRY_RUN_TIMEOUT_S:.0f} s") from None
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    if process.returncode != 0:
        raise VerlConfigError(
            _quoted(
                f"verl rejected the command (--cfg job exited with status {process.returncode})",
                stderr.splitlines(),
            )
        )
    checks(stdout)
    return stdout


def launch(config: VerlConfig, run: VerlRun, *, logger: LineLogger) -> int:
    """Run verl to completion, each output line to `logger.info`; returns its exit status, 0.

    Rerunning the same run resumes from the latest checkpoint in `run.checkpoint_dir` (with
    `resume_mode: auto`). A non-zero exit raises `VerlLaunchError` quoting the last lines; an
    exception in the caller (cancellation, Ctrl-C) stops verl's process group before it propagates.
    """
    run.check_inputs()
    command = verl_command(config, run)
    Path(run.checkpoint_dir).mkdir(parents=True, exist_ok=True)
    logger.info("starting verl: %s", shlex.join(command))
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "1"}
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    with _start(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        env=env,
        start_new_session=True,
    ) as process:
        try:
            for line in _lines(process.stdout):
                tail.append(line)
                logger.info("%s", line)
            status = process.wait()
        finally:
            if process.poll() is None:
                _stop(process)
    if status != 0:
        raise VerlLaunchError(
            _quoted(f"verl {_describe_status(status)}", tail, heading="; the last lines of its output")
        )
    return status


def _verl_checks() -> Any:
    """A function that runs verl's own pre-flight checks on resolved config text."""
    from omegaconf import OmegaConf

    with warnings.catch_warnings():  # Ray's import-time deprecation notes are not the user's business
        warnings.simplefilter("ignore", DeprecationWarning)
        from verl.trainer.ppo.reward import get_custom_reward_fn
        from verl.trainer.ppo.utils import need_critic, need_reference_policy
        from verl.utils.config import validate_config
        from verl.utils.dataset.rl_dataset import get_dataset_class

    def check(resolved: str) -> None:
        config = OmegaConf.create(resolved)
        # verl reports progress with print and notes with warnings; neither belongs on our stdout.
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                validate_config(config, need_reference_policy(config), need_critic(config))
                get_dataset_class(config.data)
                get_custom_reward_fn(config)
            except Exception as error:  # verl raises ValueError, AssertionError, hydra and import errors
                lines = str(error).splitlines() or [type(error).__name__]
                raise VerlConfigError(_quoted("verl's checks reject the resolved config", lines)) from error

    return check


def _start(command: list[str], **popen: Any) -> subprocess.Popen[str]:
    try:
        return subprocess.Popen(command, **popen)
    except OSError as error:  # a missing or non-executable interpreter
        raise VerlConfigError(f"{command[0]}: cannot run ({error.strerror or error})") from None


def _lines(stream: Iterable[str] | None) -> Iterator[str]:
    for line in stream or ():
        yield line.rstrip("\r\n")


def _stop(process: subprocess.Popen[str]) -> None:
    """End the process group that `start_new_session` gave verl: its driver and the children it forked."""
    for sig, grace in ((signal.SIGTERM, STOP_GRACE_S), (signal.SIGKILL, None)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def _describe_status(status: int) -> str:
    if status < 0:
        return f"was stopped by signal {signal.Signals(-status).name}"
    return f"exited with status {status}"


def _quoted(summary: str, lines: Iterable[str], *, heading: str = "") -> str:
    """`summary`, then the last non-empty `lines` (after `heading`), each marked as quoted."""
    kept = [line for line in lines if line.strip()][-TAIL_LINES:]
    if not kept:
        return f"{summary} (no output)"
    return "\n".join([f"{summary}{heading}:", *(f"  | {line}" for line in kept)])


def _absolute(path: Path | str) -> str:
    return str(Path(path).expanduser().absolute())


def _hydra_value(value: Any) -> str:
    """`value` as Hydra override text that Hydra parses back to the same value and type."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ",".join(_hydra_value(item) for item in value) + "]"
    return _hydra_text(str(value))


_PLAIN = re.compile(r"[A-Za-z0-9_/.:@+-]+")


def _hydra_text(text: str) -> str:
    """Plain when Hydra reads it back as this very string, otherwise single-quoted.

    Inside quotes Hydra unescapes `\\'` and backslashes that precede a quote or the end.
    """
    if "${" in text:
        raise VerlConfigError(f"{text!r}: '${{' would be read as an interpolation by verl's config")
    if _PLAIN.fullmatch(text) and _parsed_value(text) == text:
        return text
    escaped = re.sub(r"\\+(?='|$)", lambda match: match.group(0) * 2, text).replace("'", "\\'")
    return f"'{escaped}'"


@cache
def _override_parser() -> Any:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create()


def _parsed_value(text: str) -> Any:
    try:
        (override,) = _override_parser().parse_overrides([f"key={text}"])
    except Exception:  # hydra's parse errors have several types; any means "not plain"
        return None
    value = None if override.is_sweep_override() else override.value()
    return value if isinstance(value, str) else None


def _override_problem(text: str) -> str | None:
    """Why `text` cannot be one of `extra_overrides`, or `None` when it can."""
    try:
        (override,) = _override_parser().parse_overrides([text])
    except Exception as error:  # OverrideParseException and the lexer's own errors
        first = next((line for line in str(error).splitlines() if line.strip()), type(error).__name__)
        return f"not a Hydra override (key=value, +key=value, ++key=value or ~key): {first}"
    key = override.key_or_group
    if not key:
        return "no key before '='"
    if override.is_sweep_override():
        return "a sweep (comma-separated values) is not one run; quote the value: key='a,b'"
    for owner, keys in _FIELD_KEYS.items():
        if any(_overlaps(key, owned) for owned in keys):
            return f"sets {key}, which the setting {owner} controls; set {owner} instead"
    if any(_overlaps(key, owned) for owned in _RUN_KEYS):
        return f"sets {key}, which comes from the run (model, parquet files, checkpoints, parser, reward)"
    return None


def _overlaps(key: str, owned: str) -> bool:
    return key == owned or key.startswith(owned + ".") or owned.startswith(key + ".")
