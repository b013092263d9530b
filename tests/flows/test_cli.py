"""The `ftrl` command as a user meets it: a real subprocess, its stdout, stderr and exit status."""

import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def ftrl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args], cwd=REPO, capture_output=True, text=True, timeout=300
    )


def test_help_lists_every_subcommand() -> None:
    result = ftrl("--help")
    assert result.returncode == 0
    for word in ("model", "config", "reinforcement learning", "--set"):
        assert word in result.stdout


def test_model_tiny_help_explains_options() -> None:
    result = ftrl("model", "tiny", "--help")
    assert result.returncode == 0
    for word in ("--out", "--template", "qwen2.5", "compact", "--seed", "offline"):
        assert word in result.stdout


def test_config_show_resolves_overrides() -> None:
    result = ftrl("config", "show", "--profile", "configs/cpu-demo.yaml", "--set", "sandbox.workers=1")
    assert result.returncode == 0, result.stderr
    shown = yaml.safe_load(result.stdout)
    assert shown["sandbox"]["workers"] == 1
    assert shown["run"]["name"] == "cpu-demo"


def test_bad_profile_is_one_clear_line_not_a_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("sandbox:\n  workers: many\n")
    result = ftrl("config", "show", "--profile", str(bad))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith(f"error: profile {bad}: 1 problem(s)")
    assert "sandbox.workers" in result.stderr


def test_model_tiny_builds_a_loadable_folder(tmp_path: Path) -> None:
    out = tmp_path / "tiny"
    result = ftrl("model", "tiny", "--out", str(out), "--template", "compact")
    assert result.returncode == 0, result.stderr
    assert f"in {out}" in result.stdout
    assert (out / "config.json").is_file() and (out / "model.safetensors").is_file()


def test_model_tiny_refuses_a_foreign_folder(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    result = ftrl("model", "tiny", "--out", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.startswith("error: ")
    assert (tmp_path / "precious.txt").read_text() == "keep me"
