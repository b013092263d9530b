"""Where training changed a model: relative weight change per layer and module between two checkpoints.

RL moves weights very little (a learning rate of 1e-6), and where it moves them says which part of
the network carries the new skill — the paper's analysis finds most change in the attention and
MLP projections of a few layers. For two safetensors checkpoints of one architecture (a base model
and a trained one), every tensor's relative change ||W1 - W0|| / ||W0|| (Frobenius norms) is
computed, then rolled up per module (`q_proj`, `gate_proj`, `input_layernorm`, ... with weight and
bias together), per layer, and per family (attention, MLP, norm, embedding).

Tensors are read one pair at a time through safetensors' lazy `safe_open`, in float32, so a 7B
checkpoint needs memory for one tensor, not the model. A tensor that is zero in the base (a bias
initialised to zero) has no relative change; it counts with an infinite one when it moved.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from envs.atomic import atomic_write_png, atomic_write_text

#: config.json keys that must agree for two checkpoints to be compared.
ARCHITECTURE_KEYS = (
    "model_type",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "vocab_size",
)
#: Display order of module types in tables and the heat map; others follow alphabetically.
MODULE_ORDER = (
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
    "input_layernorm",
    "post_attention_layernorm",
)
_LAYER = re.compile(r"(?:^|\.)(?:layers|h|blocks|layer)\.(\d+)\.")
_SUFFIX = re.compile(r"\.(weight|bias)$")


class ArchitectureMismatch(ValueError):
    """The two checkpoints are not the same architecture; the message says where they differ."""


@dataclass(frozen=True)
class TensorChange:
    """One tensor's change. `relative` is `diff_norm / base_norm` (inf for a moved zero tensor)."""

    name: str
    layer: int | None
    module: str
    family: str
    numel: int
    base_norm: float
    diff_norm: float

    @property
    def relative(self) -> float:
        return _ratio(self.diff_norm**2, self.base_norm**2)


@dataclass(frozen=True)
class ParamDiff:
    base: Path
    trained: Path
    tensors: list[TensorChange]

    def top(self, count: int) -> list[TensorChange]:
        """The `count` tensors that changed most, relative to their size."""
        return sorted(self.tensors, key=lambda t: (-t.relative, t.name))[:count]

    def layers(self) -> list[int]:
        return sorted({t.layer for t in self.tensors if t.layer is not None})

    def modules(self) -> list[str]:
        """Module types found inside layers, in display order."""
        found = {t.module for t in self.tensors if t.layer is not None}
        known = [name for name in MODULE_ORDER if name in found]
        return known + sorted(found - set(known))

    def by_module(self) -> dict[tuple[int, str], float]:
        """Relative change of each (layer, module): its tensors' squared norms summed, then the ratio."""
        return _rollup(self.tensors, lambda t: None if t.layer is None else (t.layer, t.module))

    def by_family(self) -> dict[str, float]:
        """Relative change of all attention, MLP, norm, embedding and other weights taken together."""
        return _rollup(self.tensors, lambda t: t.family)

    def to_json(self) -> dict[str, Any]:
        return {
            "base": str(self.base),
            "trained": str(self.trained),
            "by_family": {name: _json_number(value) for name, value in self.by_family().items()},
            "by_module": [
                {"layer": layer, "module": module, "relative": _json_number(value)}
                for (layer, module), value in sorted(self.by_module().items())
            ],
            "tensors": [
                {
                    "name": t.name,
                    "layer": t.layer,
                    "module": t.module,
                    "family": t.family,
                    "numel": t.numel,
                    "base_norm": t.base_norm,
                    "diff_norm": t.diff_norm,
                    "relative": _json_number(t.relative),
                }
                for t in self.tensors
            ],
        }


def _json_number(value: float) -> float | None:
    """JSON has no infinity: a moved zero tensor's change is written as null."""
    return value if math.isfinite(value) else None


def _ratio(diff_squared: float, base_squared: float) -> float:
    if base_squared > 0:
        return math.sqrt(diff_squared / base_squared)
    return 0.0 if diff_squared == 0 else math.inf


def _rollup(tensors: list[TensorChange], key: Any) -> dict[Any, float]:
    sums: dict[Any, list[float]] = {}
    for tensor in tensors:
        group = key(tensor)
        if group is not None:
            pair = sums.setdefault(group, [0.0, 0.0])
            pair[0] += tensor.diff_norm**2
            pair[1] += tensor.base_norm**2
    return {group: _ratio(diff, base) for group, (diff, base) in sums.items()}


def classify(name: str) -> tuple[int | None, str, str]:
    """(layer index or None, module type, family) of a parameter name.

    >>> classify("model.layers.3.self_attn.q_proj.weight")
    (3, 'q_proj', 'attention')
    >>> classify("model.embed_tokens.weight")
    (None, 'embed_tokens', 'embedding')
    """
    match = _LAYER.search(name)
    layer = int(match.group(1)) if match else None
    path = _SUFFIX.sub("", name)
    module = path.rsplit(".", 1)[-1]
    lowered = path.lower()
    if "norm" in module.lower() or module.startswith("ln"):
        family = "norm"
    elif "attn" in lowered or "attention" in lowered:
        family = "attention"
    elif "mlp" in lowered or "ffn" in lowered or "feed_forward" in lowered:
        family = "mlp"
    elif "embed" in lowered or module in ("lm_head", "wte", "wpe"):
        family = "embedding"
    else:
        family = "other"
    return layer, module, family


def diff_checkpoints(base: str | Path, trained: str | Path) -> ParamDiff:
    """Compare two checkpoint folders tensor by tensor; `ArchitectureMismatch` if they differ in shape."""
    import torch
    from safetensors import safe_open

    base, trained = Path(base), Path(trained)
    _check_configs(base, trained)
    base_index, trained_index = _tensor_index(base), _tensor_index(trained)
    _check_names(base, trained, set(base_index), set(trained_index))
    changes = []
    for name, (base_file, trained_file) in _pairs(base_index, trained_index):
        with safe_open(base_file, framework="pt") as f0, safe_open(trained_file, framework="pt") as f1:
            w0, w1 = f0.get_tensor(name).to(torch.float32), f1.get_tensor(name).to(torch.float32)
        if w0.shape != w1.shape:
            raise ArchitectureMismatch(
                f"{base} and {trained} differ in the shape of {name}: {tuple(w0.shape)} vs {tuple(w1.shape)}"
            )
        layer, module, family = classify(name)
        changes.append(
            TensorChange(
                name=name,
                layer=layer,
                module=module,
                family=family,
                numel=w0.numel(),
                base_norm=float(torch.linalg.vector_norm(w0)),
                diff_norm=float(torch.linalg.vector_norm(w1 - w0)),
            )
        )
    return ParamDiff(base=base, trained=trained, tensors=changes)


def _pairs(
    base_index: dict[str, Path], trained_index: dict[str, Path]
) -> Iterator[tuple[str, tuple[Path, Path]]]:
    for name in sorted(base_index, key=_natural_key):
        yield name, (base_index[name], trained_index[name])


def _natural_key(name: str) -> list[Any]:
    """Sort `layers.10` after `layers.9`."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _check_configs(base: Path, trained: Path) -> None:
    configs = []
    for folder in (base, trained):
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: no such checkpoint folder")
        path = folder / "config.json"
        try:
            configs.append(json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {})
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from None
    differing = [
        f"{key} {configs[0][key]!r} vs {configs[1][key]!r}"
        for key in ARCHITECTURE_KEYS
        if key in configs[0] and key in configs[1] and configs[0][key] != configs[1][key]
    ]
    if differing:
        raise ArchitectureMismatch(
            f"{base} and {trained} are not the same architecture: "
            f"config.json differs in {', '.join(differing)}"
        )


def _tensor_index(folder: Path) -> dict[str, Path]:
    """Tensor name -> the safetensors file holding it, over every shard in the folder."""
    from safetensors import safe_open

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(
            f"{folder}: no *.safetensors weights (param-diff reads safetensors checkpoints)"
        )
    index: dict[str, Path] = {}
    for file in files:
        with safe_open(file, framework="pt") as handle:
            for name in handle.keys():
                index[name] = file
    return index


def _check_names(base: Path, trained: Path, base_names: set[str], trained_names: set[str]) -> None:
    only_base, only_trained = sorted(base_names - trained_names), sorted(trained_names - base_names)
    if only_base or only_trained:
        parts = []
        if only_base:
            parts.append(f"{len(only_base)} tensor(s) only in {base} (e.g. {only_base[0]})")
        if only_trained:
            parts.append(f"{len(only_trained)} tensor(s) only in {trained} (e.g. {only_trained[0]})")
        raise ArchitectureMismatch(f"not the same architecture: {'; '.join(parts)}")


def format_top(diff: ParamDiff, count: int) -> str:
    """The largest relative changes and the per-family totals, as aligned text for a terminal."""
    lines = [f"{'rank':>4}  {'relative':>10}  {'layer':>5}  {'module':<26}  tensor"]
    for rank, tensor in enumerate(diff.top(count), start=1):
        layer = "-" if tensor.layer is None else str(tensor.layer)
        lines.append(f"{rank:>4}  {tensor.relative:>10.3e}  {layer:>5}  {tensor.module:<26}  {tensor.name}")
    families = diff.by_family()
    lines.append("by family: " + ", ".join(f"{name} {families[name]:.3e}" for name in sorted(families)))
    return "\n".join(lines)


def heatmap(diff: ParamDiff, path: str | Path) -> Path:
    """Layers (rows) by module types (columns), coloured by relative change, each cell labelled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    layers, modules = diff.layers(), diff.modules()
    if not layers:
        raise ValueError(f"{diff.base}: no per-layer tensors (names with 'layers.N.') to draw")
    cells = diff.by_module()
    grid = np.full((len(layers), len(modules)), np.nan)
    for row, layer in enumerate(layers):
        for column, module in enumerate(modules):
            value = cells.get((layer, module))
            if value is not None and math.isfinite(value):
                grid[row, column] = value
    fig, axis = plt.subplots(figsize=(1.0 + 0.9 * len(modules), 1.4 + 0.35 * len(layers)))
    image = axis.imshow(np.ma.masked_invalid(grid), aspect="auto", cmap="magma")
    axis.set_xticks(range(len(modules)))
    axis.set_xticklabels(modules, rotation=35, ha="right", fontsize=8)
    axis.set_yticks(range(len(layers)))
    axis.set_yticklabels([str(layer) for layer in layers], fontsize=8)
    axis.set_ylabel("layer")
    if len(layers) * len(modules) <= 400:
        peak = np.nanmax(grid) if np.isfinite(grid).any() else 0.0
        for (row, column), value in np.ndenumerate(grid):
            if np.isfinite(value):
                color = "black" if peak and value > 0.6 * peak else "white"
                axis.text(column, row, f"{value:.1e}", ha="center", va="center", fontsize=6, color=color)
    fig.colorbar(image, ax=axis, label="||W1 - W0|| / ||W0||")
    axis.set_title(f"relative weight change: {diff.trained.name} vs {diff.base.name}", fontsize=10)
    fig.tight_layout()
    return atomic_write_png(fig, path, dpi=120)


@dataclass(frozen=True)
class ParamDiffReport:
    diff: ParamDiff
    json: Path
    chart: Path


def write_param_diff(base: str | Path, trained: str | Path, out_dir: str | Path) -> ParamDiffReport:
    """Compare, then write `param_diff.json` (every tensor and roll-up) and `param_diff.png` (heat map)."""
    diff = diff_checkpoints(base, trained)
    out = Path(out_dir)
    data = out / "param_diff.json"
    atomic_write_text(data, json.dumps(diff.to_json(), indent=2, allow_nan=False) + "\n")
    return ParamDiffReport(diff=diff, json=data, chart=heatmap(diff, out / "param_diff.png"))
