"""Merging: real VeRL FSDP checkpoints of the tiny model (FSDP1 and FSDP2, one and two ranks, written
on CPU by VeRL's own checkpoint manager) and local model folders become Hugging Face folders whose
weights equal the source's, rounded to the stored dtype, and which generate through the
transformers backend. Bad input fails before any weights are read, in one line."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError
from torch.distributed.tensor import DTensor
from transformers import AutoModelForCausalLM, AutoTokenizer

from policies.backends import Conversation, SamplingParams, load_backend
from policies.rendering import render_prompt_ids
from policies.training.merge import MERGE_MARKER, MergeConfig, MergeError, merge_checkpoint
from support.fsdp_checkpoints import CheckpointJob, write_fsdp_checkpoints
from support.tools import WEATHER_TOOL

WEATHER = [{"role": "user", "content": "What is the weather in Paris?"}]
WEATHER_ANSWER = (
    '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>'
)
#: name -> (world size, FSDP strategy, source model: "trained" or "tiny")
CHECKPOINTS = {
    "fsdp1-2ranks": (2, "fsdp", "trained"),
    "fsdp2-2ranks": (2, "fsdp2", "tiny"),
    "fsdp1-1rank": (1, "fsdp", "tiny"),
    "fsdp2-1rank": (1, "fsdp2", "tiny"),
}
TORCH_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


@pytest.fixture(scope="module")
def trained_dir(tiny_compact_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The compact tiny model after a few seconds of training to answer WEATHER with a tool call."""
    folder = tmp_path_factory.mktemp("trained") / "model"
    shutil.copytree(tiny_compact_model_dir, folder)
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True)
    prompt = render_prompt_ids(tokenizer, WEATHER, [WEATHER_TOOL])
    target = tokenizer(WEATHER_ANSWER, add_special_tokens=False)["input_ids"]
    ids, labels = torch.tensor([prompt + target]), torch.tensor([[-100] * len(prompt) + target])
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(200):
        loss = model(input_ids=ids, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if loss.item() < 0.01:
            break
    (folder / "model.safetensors").unlink()
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def fsdp_checkpoints(
    tiny_model_dir: Path, trained_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple[Path, Path]]:
    """Checkpoint name -> (its ``global_step_1`` folder, the model folder it was saved from)."""
    root = tmp_path_factory.mktemp("verl")
    sources = {"trained": trained_dir, "tiny": tiny_model_dir}
    found: dict[str, tuple[Path, Path]] = {}
    runs: dict[int, list[CheckpointJob]] = {}
    for name, (world_size, strategy, source) in CHECKPOINTS.items():
        step = root / name / "global_step_1"
        runs.setdefault(world_size, []).append(
            CheckpointJob(strategy, str(sources[source]), str(step / "actor"))
        )
        found[name] = (step, sources[source])
    write_fsdp_checkpoints(runs)
    return found


def _state_dict(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the model as ``AutoModelForCausalLM`` loads it (tied weights under both names)."""
    model = AutoModelForCausalLM.from_pretrained(folder, dtype="auto", local_files_only=True)
    return {name: tensor.detach() for name, tensor in model.state_dict().items()}


def _assert_weights(merged: Path, source: Path, dtype: str, precision: str) -> None:
    """``merged`` holds exactly ``source``'s weights rounded to ``precision``, stored in ``dtype``."""
    got, want = _state_dict(merged), _state_dict(source)
    assert sorted(got) == sorted(want)
    for name, tensor in got.items():
        assert tensor.dtype == TORCH_DTYPES[dtype], name
        expected = want[name].to(TORCH_DTYPES[precision]).to(TORCH_DTYPES[dtype])
        assert torch.equal(tensor, expected), name


def _parameters(folder: Path) -> int:
    model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True)
    return sum(parameter.numel() for parameter in model.parameters())


def _one_line(error: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


# --- FSDP checkpoints -----------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CHECKPOINTS))
def test_fsdp_merge_equals_source_rounded_to_bfloat16(
    name: str, fsdp_checkpoints: dict[str, tuple[Path, Path]], tmp_path: Path
) -> None:
    step, source = fsdp_checkpoints[name]
    world_size = CHECKPOINTS[name][0]
    shard = torch.load(step / "actor" / f"model_world_size_{world_size}_rank_0.pt", weights_only=False)
    embedding = shard["model.embed_tokens.weight"]
    local = embedding.to_local() if isinstance(embedding, DTensor) else embedding
    assert (local.shape[0], local.dtype) == (2048 // world_size, torch.float32)  # sharded fp32 weights

    result = merge_checkpoint(step / "actor", tmp_path / "merged")
    assert result.out_dir == tmp_path / "merged"
    assert (result.backend, result.dtype) == ("fsdp", "bfloat16")
    assert result.parameters == _parameters(source)
    _assert_weights(result.out_dir, source, dtype="bfloat16", precision="bfloat16")
    assert json.loads((result.out_dir / "config.json").read_text())["dtype"] == "bfloat16"


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_fsdp_merge_in_another_dtype_keeps_bfloat16_precision(
    dtype: str, fsdp_checkpoints: dict[str, tuple[Path, Path]], tmp_path: Path
) -> None:
    """VeRL's merger rounds every shard to bfloat16; the requested dtype stores those values."""
    step, source = fsdp_checkpoints["fsdp2-2ranks"]
    result = merge_checkpoint(step / "actor", tmp_path / "merged", MergeConfig(dtype=dtype))
    assert (result.backend, result.dtype) == ("fsdp", dtype)
    _assert_weights(result.out_dir, source, dtype=dtype, precision="bfloat16")
    assert json.loads((result.out_dir / "config.json").read_text())["dtype"] == dtype


@pytest.mark.slow
def test_fsdp_merge_writes_a_complete_model_folder(
    fsdp_checkpoints: dict[str, tuple[Path, Path]], tmp_path: Path
) -> None:
    step, source = fsdp_checkpoints["fsdp1-2ranks"]
    result = merge_checkpoint(step, tmp_path / "merged", MergeConfig(backend="fsdp"))  # global_step_N works
    names = {path.name for path in result.out_dir.iterdir()}
    assert names == {
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
        MERGE_MARKER,
    }
    marker = json.loads((result.out_dir / MERGE_MARKER).read_text())
    assert marker == {
        "source": str((step / "actor").resolve()),
        "backend": "fsdp",
        "dtype": "bfloat16",
        "parameters": result.parameters,
    }
    merged = AutoTokenizer.from_pretrained(result.out_dir, local_files_only=True)
    original = AutoTokenizer.from_pretrained(source, local_files_only=True)
    assert merged.chat_template == original.chat_template
    assert render_prompt_ids(merged, WEATHER, [WEATHER_TOOL]) == render_prompt_ids(
        original, WEATHER, [WEATHER_TOOL]
    )
    generation = json.loads((result.out_dir / "generation_config.json").read_text())
    assert (
        generation["eos_token_id"]
        == json.loads((source / "generation_config.json").read_text())["eos_token_id"]
    )


@pytest.mark.slow
def test_merged_trained_checkpoint_generates_its_tool_call(
    fsdp_checkpoints: dict[str, tuple[Path, Path]], tmp_path: Path
) -> None:
    step, _ = fsdp_checkpoints["fsdp1-2ranks"]
    merged = merge_checkpoint(step / "actor", tmp_path / "merged").out_dir
    with load_backend("transformers", str(merged)) as backend:
        (generation,) = backend.generate(
            [Conversation(messages=WEATHER, tools=[WEATHER_TOOL])],
            SamplingParams(temperature=0.0, max_new_tokens=40),
        )
    assert generation.finish_reason == "stop"
    assert generation.turn.raw == WEATHER_ANSWER
    assert [(call.name, call.arguments) for call in generation.turn.tool_calls] == [
        ("get_weather", {"city": "Paris"})
    ]


@pytest.mark.slow
def test_tokenizer_source_replaces_the_checkpoints_tokenizer(
    fsdp_checkpoints: dict[str, tuple[Path, Path]], tiny_compact_model_dir: Path, tmp_path: Path
) -> None:
    step, source = fsdp_checkpoints["fsdp2-1rank"]  # saved with Qwen2.5's template
    result = merge_checkpoint(step / "actor", tmp_path / "merged", tokenizer_source=tiny_compact_model_dir)
    compact = AutoTokenizer.from_pretrained(tiny_compact_model_dir, local_files_only=True).chat_template
    assert AutoTokenizer.from_pretrained(result.out_dir, local_files_only=True).chat_template == compact
    _assert_weights(result.out_dir, source, dtype="bfloat16", precision="bfloat16")


# --- local folders --------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["auto", "float32", "bfloat16", "float16"])
def test_local_merge_stores_the_requested_dtype(dtype: str, tiny_model_dir: Path, tmp_path: Path) -> None:
    result = merge_checkpoint(tiny_model_dir, tmp_path / "merged", MergeConfig(dtype=dtype))
    stored = "float32" if dtype == "auto" else dtype  # the tiny model is saved in float32
    assert (result.backend, result.dtype) == ("local", stored)
    assert result.parameters == _parameters(tiny_model_dir)
    _assert_weights(result.out_dir, tiny_model_dir, dtype=stored, precision=stored)


def test_trainer_checkpoint_without_tokenizer_takes_it_from_tokenizer_source(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """A transformers/TRL ``checkpoint-N`` saved without its tokenizer: weights and trainer state only."""
    checkpoint = tmp_path / "checkpoint-7"
    AutoModelForCausalLM.from_pretrained(tiny_model_dir, local_files_only=True).save_pretrained(checkpoint)
    (checkpoint / "trainer_state.json").write_text(json.dumps({"global_step": 7}))
    torch.save({"state": {}}, checkpoint / "optimizer.pt")
    with pytest.raises(MergeError) as error:
        merge_checkpoint(checkpoint, tmp_path / "merged")
    assert _one_line(error) == (
        f"{checkpoint}: no tokenizer (tokenizer.json or tokenizer_config.json); pass tokenizer_source, "
        "the folder of the model that was trained"
    )
    result = merge_checkpoint(checkpoint, tmp_path / "merged", tokenizer_source=tiny_model_dir)
    assert "optimizer.pt" not in {path.name for path in result.out_dir.iterdir()}
    _assert_weights(result.out_dir, tiny_model_dir, dtype="float32", precision="float32")
    assert AutoTokenizer.from_pretrained(result.out_dir, local_files_only=True).chat_template


def test_float16_overflow_fails_and_leaves_nothing_behind(tiny_model_dir: Path, tmp_path: Path) -> None:
    source = tmp_path / "big"
    shutil.copytree(tiny_model_dir, source)
    model = AutoModelForCausalLM.from_pretrained(source, local_files_only=True)
    with torch.no_grad():
        model.model.norm.weight[3] = 1e5  # beyond float16's largest finite value, 65504
    (source / "model.safetensors").unlink()
    model.save_pretrained(source)
    out = tmp_path / "out" / "merged"
    with pytest.raises(MergeError) as error:
        merge_checkpoint(source, out, MergeConfig(dtype="float16"))
    assert _one_line(error) == (
        f"{source}: weight model.norm.weight holds inf or nan in float16 (beyond the dtype's range, such "
        "as float16's 65504, or a diverged run); choose another dtype or checkpoint"
    )
    assert list(out.parent.iterdir()) == []  # no merged folder, no staging folder


# --- the output folder ----------------------------------------------------------------------------------


def test_an_earlier_merge_is_replaced(tiny_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "merged"
    merge_checkpoint(tiny_model_dir, out, MergeConfig(dtype="bfloat16"))
    result = merge_checkpoint(tiny_model_dir, out, MergeConfig(dtype="float32"))
    assert result.dtype == "float32"
    assert json.loads((out / MERGE_MARKER).read_text())["dtype"] == "float32"
    _assert_weights(out, tiny_model_dir, dtype="float32", precision="float32")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["merged"]


def test_a_folder_that_is_not_a_merge_is_never_overwritten(tiny_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "precious"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError) as error:
        merge_checkpoint(tiny_model_dir, out)
    assert _one_line(error) == (
        f"{out}: not empty and not an earlier merge output (it has no {MERGE_MARKER}); refusing to "
        "overwrite it: choose a new or empty output folder"
    )
    assert [path.name for path in out.iterdir()] == ["notes.txt"]
    with pytest.raises(FileExistsError, match=re.escape(f"{tiny_model_dir}: is the checkpoint itself")):
        merge_checkpoint(tiny_model_dir, tiny_model_dir)


def test_an_empty_output_folder_is_used(tiny_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "empty"
    out.mkdir()
    assert merge_checkpoint(tiny_model_dir, out).out_dir == out
    assert (out / "model.safetensors").is_file()


# --- bad input ------------------------------------------------------------------------------------------


def test_missing_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as error:
        merge_checkpoint(tmp_path / "nowhere", tmp_path / "merged")
    assert _one_line(error) == f"{tmp_path / 'nowhere'}: checkpoint folder does not exist"


def test_folder_of_neither_kind(tmp_path: Path) -> None:
    (tmp_path / "stuff").mkdir()
    (tmp_path / "stuff" / "config.json").write_text("{}")
    with pytest.raises(MergeError) as error:
        merge_checkpoint(tmp_path / "stuff", tmp_path / "merged")
    assert _one_line(error) == (
        f"{tmp_path / 'stuff'}: neither a VeRL FSDP actor checkpoint (fsdp_config.json, "
        "model_world_size_W_rank_R.pt shards and huggingface/config.json, as in global_step_N/actor) nor a "
        "Hugging Face or TRL model folder (config.json and one of model.safetensors, "
        "model.safetensors.index.json, pytorch_model.bin, pytorch_model.bin.index.json)"
    )
    (tmp_path / "file.pt").write_bytes(b"")
    with pytest.raises(MergeError, match=re.escape(f"{tmp_path / 'file.pt'}: not a folder; expected")):
        merge_checkpoint(tmp_path / "file.pt", tmp_path / "merged")


@pytest.mark.slow
def test_incomplete_fsdp_checkpoint_lists_every_problem(
    fsdp_checkpoints: dict[str, tuple[Path, Path]], tmp_path: Path
) -> None:
    actor = tmp_path / "actor"
    shutil.copytree(fsdp_checkpoints["fsdp2-2ranks"][0] / "actor", actor)
    (actor / "model_world_size_2_rank_1.pt").unlink()
    shutil.rmtree(actor / "huggingface")
    with pytest.raises(MergeError) as error:
        merge_checkpoint(actor, tmp_path / "merged")
    assert _one_line(error) == (
        f"{actor}: not a complete VeRL FSDP actor checkpoint: missing shard model_world_size_2_rank_1.pt; "
        "missing huggingface/config.json"
    )
    (actor / "fsdp_config.json").write_text('{"FSDP_version": 2}')
    with pytest.raises(
        MergeError, match=re.escape("fsdp_config.json has no positive integer world_size (got None)")
    ):
        merge_checkpoint(actor, tmp_path / "merged")
    (actor / "fsdp_config.json").write_text("world_size: 2")
    with pytest.raises(MergeError, match=re.escape("fsdp_config.json is not a JSON object")):
        merge_checkpoint(actor, tmp_path / "merged")
    assert not (tmp_path / "merged").exists()


@pytest.mark.slow
def test_lora_checkpoints_are_refused(fsdp_checkpoints: dict[str, tuple[Path, Path]], tmp_path: Path) -> None:
    actor = tmp_path / "actor"
    shutil.copytree(fsdp_checkpoints["fsdp2-1rank"][0] / "actor", actor)
    (actor / "lora_train_meta.json").write_text('{"r": 8, "lora_alpha": 16}')
    with pytest.raises(MergeError, match=re.escape("it is a LoRA checkpoint (lora_train_meta.json)")):
        merge_checkpoint(actor, tmp_path / "merged")


@pytest.mark.slow
def test_forced_backend_must_match_the_folder(
    fsdp_checkpoints: dict[str, tuple[Path, Path]], tiny_model_dir: Path, tmp_path: Path
) -> None:
    actor = fsdp_checkpoints["fsdp1-1rank"][0] / "actor"
    with pytest.raises(MergeError) as error:
        merge_checkpoint(actor, tmp_path / "merged", MergeConfig(backend="local"))
    assert _one_line(error).startswith(f"{actor}: not a Hugging Face or TRL model folder (config.json and")
    with pytest.raises(MergeError) as error:
        merge_checkpoint(tiny_model_dir, tmp_path / "merged", MergeConfig(backend="fsdp"))
    assert _one_line(error) == (
        f"{tiny_model_dir}: not a complete VeRL FSDP actor checkpoint: missing fsdp_config.json; "
        "missing huggingface/config.json"
    )


def test_tokenizer_without_chat_template_is_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    source = tmp_path / "model"
    shutil.copytree(tiny_model_dir, source)
    (source / "chat_template.jinja").unlink()
    with pytest.raises(MergeError) as error:
        merge_checkpoint(source, tmp_path / "merged")
    assert _one_line(error).startswith(f"{source}: the tokenizer has no chat template")
    with pytest.raises(FileNotFoundError) as error:
        merge_checkpoint(tiny_model_dir, tmp_path / "merged", tokenizer_source=tmp_path / "nowhere")
    assert _one_line(error) == f"{tmp_path / 'nowhere'}: tokenizer folder does not exist"
    assert not (tmp_path / "merged").exists()


def test_merge_config_rejects_unknown_values() -> None:
    assert MergeConfig() == MergeConfig(dtype="auto", backend="auto")
    with pytest.raises(ValidationError, match="dtype"):
        MergeConfig(dtype="int8")
    with pytest.raises(ValidationError, match="backend"):
        MergeConfig(backend="megatron")
    with pytest.raises(ValidationError, match="precision"):
        MergeConfig(precision="bf16")
