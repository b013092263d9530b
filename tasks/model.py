"""Which model folder a run uses: the profile's, or the tiny model built once into the run directory."""

from __future__ import annotations

from pathlib import Path

from policies.tiny_model import TinyModelSpec, build_tiny_model
from tasks.profile import PipelineConfig


def resolve_model_folder(config: PipelineConfig) -> Path:
    if config.model.path is not None:
        if not (config.model.path / "config.json").is_file():
            raise FileNotFoundError(f"model.path {config.model.path}: not a model folder (no config.json)")
        return config.model.path
    folder = config.run.directory / "models" / "tiny"
    if not (folder / "config.json").is_file():
        build_tiny_model(folder, TinyModelSpec(template=config.model.tiny_template))
    return folder
