"""Session fixtures shared by every room's tests: the tiny local models and the τ-bench airline data.

No test downloads anything: models are built locally, and the Hugging Face hub is switched off so a
stray hub id fails at once instead of reaching the network.
"""

import os
from pathlib import Path

import pytest

from policies.tiny_model import TinyModelSpec, build_tiny_model

# Read by huggingface_hub when it is first imported, which happens only inside fixtures and tests.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

TAU_AIRLINE_DIR = (
    Path(__file__).resolve().parents[1].parent / "shared" / "benchmarks" / "tau-bench" / "airline"
)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Qwen2 model folder with Qwen2.5's exact chat template."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "qwen2.5")


@pytest.fixture(scope="session")
def tiny_compact_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same tiny model (same tokenizer and weights) with the compact chat template."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "compact", TinyModelSpec(template="compact"))


@pytest.fixture(scope="session")
def tau_airline_dir() -> Path:
    """The τ-bench airline domain folder from the shared benchmarks checkout."""
    if not (TAU_AIRLINE_DIR / "tools.json").is_file():
        pytest.skip(f"τ-bench airline data not found at {TAU_AIRLINE_DIR} (expected the shared benchmarks)")
    return TAU_AIRLINE_DIR
