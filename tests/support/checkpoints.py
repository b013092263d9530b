"""Trained-looking copies of a model folder: chosen tensors scaled by known factors (not a test module).

Scaling a tensor W by s changes it by (s - 1)·W, so its relative change ||ΔW|| / ||W|| is exactly
|s - 1|: tests know every tensor's change by hand.
"""

import shutil
from pathlib import Path

from safetensors.torch import load_file, save_file


def scaled_copy(source: Path, target: Path, scales: dict[str, float]) -> Path:
    """Copy the model folder `source` to `target`, multiplying each named tensor by its factor."""
    shutil.copytree(source, target)
    weights = load_file(target / "model.safetensors")
    for name, scale in scales.items():
        weights[name] = weights[name] * scale
    save_file(weights, target / "model.safetensors", metadata={"format": "pt"})
    return target
