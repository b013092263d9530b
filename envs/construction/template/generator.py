"""The offline `template` generator: the five stages over one seeded world."""

from __future__ import annotations

from envs.construction.stages import SCALING_OPS, DeployedEnvironment, ScalingOp, ScenarioRequest, run_stages
from envs.construction.template.decompose import TemplateDecomposer
from envs.construction.template.deploy import GENERATOR, TemplateDeployer
from envs.construction.template.document import TemplateDocumenter
from envs.construction.template.integrate import TemplateIntegrator
from envs.construction.template.scale import TemplateScaler
from envs.construction.template.templates import vocabulary
from envs.construction.template.world import World


class TemplateGenerator:
    """`TemplateGenerator(seed)`: a world drawn from `seed`, and one object per construction stage.

    The world depends only on `seed`; a scenario depends on `seed` and its `ScenarioRequest`
    (scenario type, request seed, index, domain). Same inputs, same bytes.

    >>> generator = TemplateGenerator(0)  # doctest: +SKIP
    >>> env = generator.build(ScenarioRequest(scenario_type="multi-hop", seed=0, index=3))  # doctest: +SKIP
    """

    name = GENERATOR

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.world = World(seed, forbidden=vocabulary())
        self.decomposer = TemplateDecomposer(self.world, seed)
        self.documenter = TemplateDocumenter(self.world)
        self.integrator = TemplateIntegrator(self.world)
        self.scaler = TemplateScaler(self.world)
        self.deployer = TemplateDeployer(seed)

    def build(
        self, request: ScenarioRequest, operations: tuple[ScalingOp, ...] = SCALING_OPS
    ) -> DeployedEnvironment:
        return run_stages(self, request, operations)
