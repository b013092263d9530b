"""The environment-building stage: a profile's `build` section turned into verified environment files."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

from envs.construction.build import BuildReport, build_environments
from envs.sandbox import SandboxPool
from envs.verify import Verifier
from policies.backends import SamplingParams, load_backend
from tasks.profile import PipelineConfig


def run_build(config: PipelineConfig, out_dir: Path, *, progress=None) -> BuildReport:
    """Write `train.jsonl`, `test.jsonl` and `report.{json,md}` into `out_dir`."""
    build = config.build
    with ExitStack() as stack:
        if build.generator == "template":
            from envs.construction.template import TemplateGenerator

            generator = TemplateGenerator(seed=build.seed)
            workers = 1
        else:
            from envs.construction.llm import LLMGenerator

            llm = build.llm
            if llm.model is None:
                raise ValueError(
                    "build.llm.model: the llm generator needs a model (a served name or a folder)"
                )
            backend = stack.enter_context(
                load_backend(llm.backend, llm.model, base_url=llm.base_url, api_key_env=llm.api_key_env)
            )
            generator = LLMGenerator(
                backend,
                params=SamplingParams(temperature=llm.temperature, max_new_tokens=llm.max_new_tokens),
                max_attempts=llm.max_attempts,
                seed=build.seed,
                source_material=llm.topics or None,
            )
            workers = config.generation.max_concurrency
        pool = stack.enter_context(
            SandboxPool(workers=config.sandbox.workers, limits=config.sandbox.limits())
        )
        return build_environments(
            generator,
            build.count,
            build.seed,
            out_dir,
            Verifier(pool),
            test_fraction=build.test_fraction,
            batch=build.batch,
            workers=workers,
            progress=progress,
            scaling_ops=build.scaling_ops,
            domains=build.domains,
        )
