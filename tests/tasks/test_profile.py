"""Run profiles: every bad profile fails up front with the key's path and the reason."""

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tasks.profile import ProfileError, apply_overrides, load_profile, parse_override

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "profile.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("profile", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_profiles_validate(profile: Path) -> None:
    load_profile(profile)


def test_cpu_demo_profile_values() -> None:
    config = load_profile(REPO / "configs" / "cpu-demo.yaml")
    assert config.run.directory == Path("runs/cpu-demo")
    assert config.model.path is None and config.model.tiny_template == "compact"
    assert config.sandbox.workers == 2 and config.sandbox.wall_time_s == 10.0
    assert config.reward.kind == "f1"


def test_defaults_without_a_file() -> None:
    config = load_profile(None)
    assert config.sandbox.wall_time_s == 10.0
    assert config.run.name == "default"


def test_unknown_key_names_its_path(tmp_path: Path) -> None:
    path = write(tmp_path, "sandbox:\n  wall_time: 3\n")
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    assert str(info.value) == f"profile {path}: sandbox.wall_time: unknown key"


def test_unknown_section(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match=r"profile\.yaml: sampler: unknown key$"):
        load_profile(write(tmp_path, "sampler: {}\n"))


def test_wrong_type_names_path_reason_and_value(tmp_path: Path) -> None:
    with pytest.raises(ProfileError) as info:
        load_profile(write(tmp_path, "sandbox:\n  memory_mb: lots\n"))
    message = str(info.value)
    assert ": sandbox.memory_mb: Input should be a valid integer" in message
    assert "(got 'lots')" in message


def test_every_problem_is_listed(tmp_path: Path) -> None:
    with pytest.raises(ProfileError) as info:
        load_profile(write(tmp_path, "reward:\n  kind: accuracy\nmodel:\n  parser: gpt\n"))
    assert str(info.value).startswith(f"profile {tmp_path / 'profile.yaml'}: 2 problems\n  ")
    assert "reward.kind" in str(info.value) and "model.parser" in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match=r"nope\.yaml: file not found"):
        load_profile(tmp_path / "nope.yaml")


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "run:\n  name: a\n  root: [unclosed\n")
    with pytest.raises(ProfileError, match=rf"profile {path}:\d+: invalid YAML"):
        load_profile(path)


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="expected a mapping of sections at the top, got list"):
        load_profile(write(tmp_path, "- a\n- b\n"))


def test_overrides_are_typed_and_validated(tmp_path: Path) -> None:
    path = write(tmp_path, "sandbox:\n  workers: 2\n")
    config = load_profile(path, ["sandbox.workers=1", "sandbox.wall_time_s=2.5", "model.path=/models/qwen"])
    assert config.sandbox.workers == 1
    assert config.sandbox.wall_time_s == 2.5
    assert config.model.path == Path("/models/qwen")
    with pytest.raises(ProfileError, match="sandbox.wal_time_s: unknown key"):
        load_profile(path, ["sandbox.wal_time_s=2"])
    with pytest.raises(ProfileError, match="sandbox.wall_time_s: Input should be greater than 0"):
        load_profile(path, ["sandbox.wall_time_s=-1"])


def test_override_syntax_errors() -> None:
    with pytest.raises(ProfileError, match="expected KEY.PATH=VALUE"):
        parse_override("sandbox.workers")
    with pytest.raises(ProfileError, match="'sandbox.workers' is a value, not a section"):
        apply_overrides({"sandbox": {"workers": 2}}, ["sandbox.workers.x=1"])


def test_overrides_do_not_mutate_the_input() -> None:
    data = {"sandbox": {"workers": 2}}
    assert apply_overrides(data, ["sandbox.workers=1"]) == {"sandbox": {"workers": 1}}
    assert data == {"sandbox": {"workers": 2}}


@given(st.integers(min_value=1, max_value=10**6), st.floats(min_value=0.001, max_value=1e4))
def test_override_round_trip(workers: int, wall: float) -> None:
    config = load_profile(None, [f"sandbox.workers={workers}", f"sandbox.wall_time_s={wall!r}"])
    assert config.sandbox.workers == workers
    assert config.sandbox.wall_time_s == wall
    assert load_profile(None, [f"{k}={v}" for k, v in _flatten(config.model_dump(mode="json"))]) == config


def _flatten(data: dict, prefix: str = ""):
    for key, value in data.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", "null" if value is None else value
