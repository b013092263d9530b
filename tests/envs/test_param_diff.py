"""`ftrl analyze param-diff`: relative weight change per tensor, module, layer and family between a tiny
model and copies whose tensors were scaled by known factors (so every change is known by hand)."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import matplotlib.image
import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from envs.evaluation.param_diff import ArchitectureMismatch, classify, diff_checkpoints, write_param_diff
from flows.cli import app
from policies.tiny_model import TinyModelSpec, build_tiny_model
from support.checkpoints import scaled_copy

DOWN_2 = "model.layers.2.mlp.down_proj.weight"
Q_1 = "model.layers.1.self_attn.q_proj.weight"
runner = CliRunner()


@pytest.fixture(scope="module")
def trained(tiny_compact_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """down_proj of layer 2 scaled by 1.5 (change 0.5) and q_proj of layer 1 by 1.1 (change 0.1)."""
    return scaled_copy(
        tiny_compact_model_dir, tmp_path_factory.mktemp("ckpt") / "iter-1", {DOWN_2: 1.5, Q_1: 1.1}
    )


def test_scaled_tensors_show_their_factor_and_nothing_else_moves(
    tiny_compact_model_dir: Path, trained: Path
) -> None:
    diff = diff_checkpoints(tiny_compact_model_dir, trained)
    assert len(diff.tensors) == 50
    first, second = diff.top(2)
    assert (first.name, first.layer, first.module, first.family) == (DOWN_2, 2, "down_proj", "mlp")
    assert (second.name, second.layer, second.module, second.family) == (Q_1, 1, "q_proj", "attention")
    assert first.relative == pytest.approx(0.5, rel=1e-6)
    assert second.relative == pytest.approx(0.1, rel=1e-5)
    assert all(t.diff_norm == 0.0 for t in diff.tensors if t.name not in (DOWN_2, Q_1))

    cells = diff.by_module()
    assert max(cells, key=cells.get) == (2, "down_proj")
    assert cells[(1, "q_proj")] == pytest.approx(0.1, rel=1e-5)  # its bias is zero and unchanged
    assert len(cells) == 4 * 9 and diff.layers() == [0, 1, 2, 3]
    assert diff.modules()[:7] == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

    # The MLP family's change: 0.5·||W_down2|| over the norm of all MLP weights, by hand from the file.
    weights = load_file(tiny_compact_model_dir / "model.safetensors")
    mlp = [name for name in weights if ".mlp." in name]
    expected = (
        0.5 * weights[DOWN_2].norm().item() / math.sqrt(sum(weights[n].norm().item() ** 2 for n in mlp))
    )
    families = diff.by_family()
    assert families["mlp"] == pytest.approx(expected, rel=1e-5)
    assert families["norm"] == families["embedding"] == 0.0


def test_write_param_diff_saves_json_and_a_heat_map(
    tiny_compact_model_dir: Path, trained: Path, tmp_path: Path
) -> None:
    report = write_param_diff(tiny_compact_model_dir, trained, tmp_path / "out")
    data = json.loads(report.json.read_text())
    cell = next(c for c in data["by_module"] if (c["layer"], c["module"]) == (2, "down_proj"))
    assert cell["relative"] == pytest.approx(0.5, rel=1e-6)
    assert data["base"] == str(tiny_compact_model_dir) and len(data["tensors"]) == 50
    assert report.chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(report.chart)
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 600


def test_cli_prints_the_largest_changes_first(
    tiny_compact_model_dir: Path, trained: Path, tmp_path: Path
) -> None:
    out = tmp_path / "pd"
    result = runner.invoke(
        app,
        ["analyze", "param-diff", str(tiny_compact_model_dir), str(trained), "--out", str(out), "--top", "3"],
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["rank", "relative", "layer", "module", "tensor"]
    assert lines[1].split() == ["1", "5.000e-01", "2", "down_proj", DOWN_2]
    assert lines[2].split() == ["2", "1.000e-01", "1", "q_proj", Q_1]
    assert lines[4].startswith("by family: attention ")
    assert lines[5] == f"wrote {out / 'param_diff.json'} and {out / 'param_diff.png'}"


def test_a_zero_tensor_that_moved_has_an_infinite_change(
    tiny_compact_model_dir: Path, tmp_path: Path
) -> None:
    moved = tmp_path / "moved"
    shutil.copytree(tiny_compact_model_dir, moved)
    weights = load_file(moved / "model.safetensors")
    bias = "model.layers.0.self_attn.q_proj.bias"
    assert torch.count_nonzero(weights[bias]) == 0
    weights[bias] = torch.ones_like(weights[bias])
    save_file(weights, moved / "model.safetensors", metadata={"format": "pt"})
    report = write_param_diff(tiny_compact_model_dir, moved, tmp_path / "out")
    assert report.diff.top(1)[0].name == bias and report.diff.top(1)[0].relative == math.inf
    assert report.diff.by_module()[(0, "q_proj")] == pytest.approx(
        math.sqrt(128) / weights["model.layers.0.self_attn.q_proj.weight"].norm().item(), rel=1e-5
    )
    data = json.loads(report.json.read_text())
    assert next(t for t in data["tensors"] if t["name"] == bias)["relative"] is None


def test_different_architectures_are_refused_in_one_line(
    tiny_compact_model_dir: Path, tmp_path: Path
) -> None:
    two_layers = build_tiny_model(tmp_path / "two", TinyModelSpec(template="compact", num_layers=2))
    with pytest.raises(ArchitectureMismatch) as error:
        diff_checkpoints(tiny_compact_model_dir, two_layers)
    assert str(error.value) == (
        f"{tiny_compact_model_dir} and {two_layers} are not the same architecture: "
        "config.json differs in num_hidden_layers 4 vs 2"
    )
    result = runner.invoke(app, ["analyze", "param-diff", str(tiny_compact_model_dir), str(two_layers)])
    assert result.exit_code == 2 and result.stderr == f"error: {error.value}\n"

    fewer = tmp_path / "fewer"
    shutil.copytree(tiny_compact_model_dir, fewer)
    weights = load_file(fewer / "model.safetensors")
    del weights["model.layers.3.mlp.up_proj.weight"]
    save_file(weights, fewer / "model.safetensors", metadata={"format": "pt"})
    message = (
        f"not the same architecture: 1 tensor(s) only in {tiny_compact_model_dir} "
        "(e.g. model.layers.3.mlp.up_proj.weight)"
    )
    with pytest.raises(ArchitectureMismatch, match=re.escape(message)):
        diff_checkpoints(tiny_compact_model_dir, fewer)

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=re.escape(f"{empty}: no *.safetensors weights")):
        diff_checkpoints(tiny_compact_model_dir, empty)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("model.layers.3.self_attn.q_proj.weight", (3, "q_proj", "attention")),
        ("model.layers.0.self_attn.k_proj.bias", (0, "k_proj", "attention")),
        ("model.layers.12.mlp.gate_proj.weight", (12, "gate_proj", "mlp")),
        ("model.layers.1.post_attention_layernorm.weight", (1, "post_attention_layernorm", "norm")),
        ("model.embed_tokens.weight", (None, "embed_tokens", "embedding")),
        ("lm_head.weight", (None, "lm_head", "embedding")),
        ("model.norm.weight", (None, "norm", "norm")),
        ("transformer.h.5.attn.c_attn.weight", (5, "c_attn", "attention")),
        ("transformer.h.0.mlp.c_fc.bias", (0, "c_fc", "mlp")),
        ("transformer.h.0.ln_1.weight", (0, "ln_1", "norm")),
    ],
)
def test_classify_names_of_common_architectures(name: str, expected: tuple[int | None, str, str]) -> None:
    assert classify(name) == expected
