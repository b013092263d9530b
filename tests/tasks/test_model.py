"""The run's tiny model folder follows the profile: another template, seed or pre-training rebuilds it."""

from pathlib import Path

from policies.tiny_model import MARKER_FILE, TinyModelSpec, built_spec
from tasks.model import resolve_model_folder
from tasks.profile import load_profile


def profile(tmp_path: Path, *overrides: str):
    return load_profile(None, [f"run.root={tmp_path}", "run.name=t", *overrides])


def test_tiny_folder_is_built_once_and_reused(tmp_path: Path) -> None:
    folder = resolve_model_folder(profile(tmp_path, "model.tiny_template=compact"))
    assert folder == tmp_path / "t" / "models" / "tiny"
    weights = (folder / "model.safetensors").stat()
    assert built_spec(folder) == TinyModelSpec(template="compact", seed=0)
    assert resolve_model_folder(profile(tmp_path, "model.tiny_template=compact")) == folder
    assert (folder / "model.safetensors").stat().st_ino == weights.st_ino  # not rebuilt


def test_another_seed_template_or_pretraining_rebuilds_it(tmp_path: Path) -> None:
    folder = resolve_model_folder(profile(tmp_path, "model.tiny_template=compact"))
    first = (folder / "model.safetensors").read_bytes()
    resolve_model_folder(profile(tmp_path, "model.tiny_template=compact", "model.tiny_seed=1"))
    assert built_spec(folder) == TinyModelSpec(template="compact", seed=1)
    assert (folder / "model.safetensors").read_bytes() != first  # other random weights
    resolve_model_folder(profile(tmp_path, "model.tiny_seed=1"))
    assert built_spec(folder) == TinyModelSpec(template="qwen2.5", seed=1)
    resolve_model_folder(profile(tmp_path, "model.tiny_seed=1", "model.tiny_pretrain_steps=2"))
    assert built_spec(folder) == TinyModelSpec(template="qwen2.5", seed=1, pretrain_steps=2)


def test_built_spec_of_no_build_is_none(tmp_path: Path) -> None:
    assert built_spec(tmp_path / "missing") is None
    (tmp_path / MARKER_FILE).write_text("{not json", encoding="utf-8")
    assert built_spec(tmp_path) is None
    (tmp_path / MARKER_FILE).write_text(
        '{"spec": {"hidden_size": 128, "retired_field": 1}}', encoding="utf-8"
    )
    assert built_spec(tmp_path) is None
