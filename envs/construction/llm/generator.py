"""The `llm` generator: the five construction stages driven by a model through any backend."""

from __future__ import annotations

from collections.abc import Sequence

from envs.construction.llm._driver import Driver
from envs.construction.llm._rejections import RejectionCounter
from envs.construction.llm._stages import (
    GENERATOR_NAME,
    LLMDecomposer,
    LLMDeployer,
    LLMDocumenter,
    LLMIntegrator,
    LLMScaler,
)
from envs.construction.stages import DeployedEnvironment, ScalingOp, ScenarioRequest, run_stages
from policies.backends import GenerationBackend, SamplingParams

__all__ = ["DEFAULT_PARAMS", "LLMGenerator"]

#: Construction answers are long JSON (deploy writes every tool's code), and a little randomness
#: keeps thousands of requests from collapsing onto the same scenario.
DEFAULT_PARAMS = SamplingParams(temperature=0.7, top_p=1.0, max_new_tokens=4096)


class LLMGenerator:
    """Builds environments by asking a model, one request per stage, checking every answer.

    Example (``OPENAI_API_KEY`` set)::

        backend = load_backend("openai", "gpt-4o", base_url="https://api.openai.com/v1")
        generator = LLMGenerator(backend, seed=7, source_material=["train timetables", "a bakery"])
        env = generator.build(ScenarioRequest(scenario_type="multi-hop", seed=7), ("toolset extension",))
        generator.rejections.most_common(3)  # e.g. [("decompose: invalid JSON", 2), ...]

    Args:
        backend: any ``GenerationBackend``; the OpenAI-compatible one with a strong hosted model is
            the usual choice. The generator does not close it.
        params: sampling settings for every request (``DEFAULT_PARAMS`` when ``None``); each try gets
            its own seed derived from ``seed``, the prompt and the try number.
        max_attempts: tries per stage; a refused answer is shown back to the model with the reason.
            After the last refused try the stage raises ``StageRejected`` (a ``ValueError``).
        seed: the generator's seed (also the ``seed`` recorded in each ``DeployedEnvironment``).
        source_material: topics to draw a scenario's subject from when a request names no domain.

    ``rejections`` counts every refused try by ``"<stage>: <reason>"`` and every stage that gave up
    as ``"<stage>: rejected"``.
    """

    name = GENERATOR_NAME

    def __init__(
        self,
        backend: GenerationBackend,
        *,
        params: SamplingParams | None = None,
        max_attempts: int = 3,
        seed: int = 0,
        source_material: Sequence[str] | None = None,
    ) -> None:
        if not isinstance(backend, GenerationBackend):
            raise TypeError(
                f"backend must be a policies.backends.GenerationBackend, got {type(backend).__name__}"
            )
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
            raise ValueError(f"max_attempts must be an integer >= 1, got {max_attempts!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        topics = tuple(source_material or ())
        blank = [
            index for index, topic in enumerate(topics) if not isinstance(topic, str) or not topic.strip()
        ]
        if blank:
            raise ValueError(f"source_material items {blank} are not non-empty strings")
        self.seed = seed
        self.rejections = RejectionCounter()
        driver = Driver(backend, params or DEFAULT_PARAMS, max_attempts, seed, self.rejections)
        self.decomposer = LLMDecomposer(driver, topics)
        self.documenter = LLMDocumenter(driver)
        self.integrator = LLMIntegrator(driver)
        self.scaler = LLMScaler(driver)
        self.deployer = LLMDeployer(driver)

    def build(self, request: ScenarioRequest, operations: tuple[ScalingOp, ...] = ()) -> DeployedEnvironment:
        """All five stages for one request."""
        return run_stages(self, request, operations)
