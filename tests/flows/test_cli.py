"""The `ftrl` command as a user meets it: a real subprocess, its stdout, stderr and exit status."""

import json
import shutil
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
    assert result.stderr == (
        f"error: profile {bad}: sandbox.workers: Input should be a valid integer, "
        "unable to parse string as an integer (got 'many')\n"
    )


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


def envs_file(tmp_path: Path, mutate=None) -> Path:
    from envs.examples import load_examples
    from envs.jsonl import write_rows

    rows = [row.model_dump() for row in load_examples()]
    path = tmp_path / "envs.jsonl"
    write_rows(path, rows)
    if mutate is not None:
        lines = path.read_text(encoding="utf-8").splitlines()
        lines[1] = mutate(lines[1])
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_sample_names_the_line_of_broken_codes(tmp_path: Path, tiny_compact_model_dir: Path) -> None:
    def break_codes(line: str) -> str:
        row = json.loads(line)
        row["codes"] = json.dumps({"get_city_population": "def get_city_population(city:\n"})
        return json.dumps(row)

    envs = envs_file(tmp_path, break_codes)
    result = ftrl(
        "sample",
        "--envs",
        str(envs),
        "--out",
        str(tmp_path / "t.jsonl"),
        "--model",
        str(tiny_compact_model_dir),
    )
    assert_one_line_error(result, f"{envs}:2:", "codes", "get_city_population")
    assert not (tmp_path / "t.jsonl").exists()


def test_sample_names_a_missing_model_folder(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    result = ftrl(
        "sample",
        "--envs",
        str(envs_file(tmp_path)),
        "--out",
        str(tmp_path / "t.jsonl"),
        "--model",
        str(missing),
    )
    assert_one_line_error(result, str(missing))


def test_sample_names_a_tokenizer_without_chat_template(tmp_path: Path, tiny_model_dir: Path) -> None:
    model = tmp_path / "no-template"
    shutil.copytree(tiny_model_dir, model)
    (model / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((model / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (model / "tokenizer_config.json").write_text(json.dumps(config))
    result = ftrl(
        "sample",
        "--envs",
        str(envs_file(tmp_path)),
        "--out",
        str(tmp_path / "t.jsonl"),
        "--model",
        str(model),
    )
    assert_one_line_error(result, str(model), "chat template")


def test_convert_names_the_bad_line(tmp_path: Path) -> None:
    trajectories = tmp_path / "t.jsonl"
    trajectories.write_text('{"messages": []}\n', encoding="utf-8")
    result = ftrl("convert", str(trajectories), "--out", str(tmp_path / "t.parquet"))
    assert_one_line_error(result, f"{trajectories}:1:")
    assert not (tmp_path / "t.parquet").exists()
