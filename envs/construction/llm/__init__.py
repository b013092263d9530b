"""The `llm` generator: the five construction stages, each one request to a model.

Entry point: ``LLMGenerator(backend, ...)``, which satisfies ``stages.Generator`` (so
``run_stages`` and the environment builder take it) and adds ``build(request, operations)``.

Invariants:
- Prompts are data: ``prompts/<stage>.md`` (``string.Template``), plus ``prompts/retry.md``, the
  message that returns a refused answer's reason to the model.
- Every answer is one JSON object, validated by pydantic payload models and assembled into the
  stage's contract object, then checked further (JSON Schemas, golden calls that fit them, dependent
  steps that use earlier answers, scaling records that match real changes, code that parses and
  defines each tool with a fitting signature). Model-written code is parsed, never executed here.
- A stage tries at most ``max_attempts`` times; every refused try is counted by a short, stable
  reason in ``LLMGenerator.rejections``, and a stage that gives up raises ``StageRejected``.
"""

from envs.construction.llm._prompts import PROMPT_NAMES, STAGES, load_prompt, render_prompt
from envs.construction.llm._rejections import RejectionCounter, StageRejected
from envs.construction.llm._replies import extract_json
from envs.construction.llm.generator import DEFAULT_PARAMS, LLMGenerator

__all__ = [
    "DEFAULT_PARAMS",
    "PROMPT_NAMES",
    "STAGES",
    "LLMGenerator",
    "RejectionCounter",
    "StageRejected",
    "extract_json",
    "load_prompt",
    "render_prompt",
]
