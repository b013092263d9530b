"""Stage 1 (template generator): a seeded question, split into sub-questions.

A question is first built as a small expression tree over the world — entity references and
literals at the leaves, relations and computations above them — and then read off: every relation
or computation node is one sub-question (post-order, so a sub-question comes after those it
depends on), and the whole tree, with inner nodes written as noun phrases, is the question
("In which city was the director of the film "X" born?").

Shapes per scenario type: single-hop is one node; parallel single-hop is 2-3 independent nodes;
multi-hop is one chain (each step needs the previous answer, sometimes ending in a unit conversion
or a date computation); parallel multi-hop is a computation over two independent chains (an age at
release, a sum, a price in another currency...) or two chains asked side by side.

A candidate is rejected and redrawn (same generator, so still deterministic) when the question
would contain a sub-answer, when two sub-answers match each other, or when a sub-question would not
read back unambiguously as its template: the documenter reads sub-questions as text.
"""

from __future__ import annotations

import datetime
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from envs.construction.stages import Scenario, ScenarioRequest, SubQuestion
from envs.construction.template import runtime
from envs.construction.template.templates import (
    COMPUTATIONS,
    CONVERSION_FROM,
    DOMAINS,
    ENTITY,
    KINDS,
    RELATION_AT,
    RELATIONS,
    RELATIONS_BY_KIND,
    TEMPLATES,
    Computation,
    Relation,
    Template,
    literal_text,
    parse,
    parse_literal,
    render,
)
from envs.construction.template.tools import StageFailure, compute_value, shifted
from envs.construction.template.world import Entity, World
from rewards.matching import matches

ATTEMPTS = 200  # candidates drawn before giving up on a request (rejections are rare)
COMPUTE_DOMAIN = "dates and units"


@dataclass(frozen=True, eq=False)
class Ref:
    entity: Entity


@dataclass(frozen=True, eq=False)
class Lit:
    value: Any


@dataclass(frozen=True, eq=False)
class Rel:
    relation: Relation
    child: Node


@dataclass(frozen=True, eq=False)
class Comp:
    computation: Computation
    args: tuple[Node, ...]


Node = Ref | Lit | Rel | Comp


class Rejected(ValueError):
    """A drawn candidate that breaks a rule; the decomposer draws another."""


# Ranges for literal inputs of single-hop computations, by input type.
_RANGES = {
    "km": (5, 5000),
    "mi": (5, 3000),
    "m": (10, 9000),
    "ft": (10, 30000),
    "cm": (10, 250),
    "g": (10, 9000),
    "oz": (2, 300),
    "kg": (2, 200),
    "s": (60, 900),
    "count": (10, 100_000),
    "days": (10, 400),
    "percent": (5, 27),
    "year": (1800, 2020),
}
# Computations whose two inputs must be ordered (an end after a start, a larger minus a smaller).
_ASCENDING = {"years_between", "days_between"}
_DESCENDING = {"subtract_numbers"}
# A creator and the year their work came out: "how old was the director when the film came out".
_AGE_GAPS = (
    ("film", "director", "release_year"),
    ("book", "author", "publication_year"),
    ("album", "artist", "release_year"),
    ("product", "designer", "launch_year"),
    ("landmark", "architect", "completed_year"),
    ("mountain", "first_climber", "first_ascent_year"),
)
_COMPUTATION = {c.name: c for c in COMPUTATIONS}


class TemplateDecomposer:
    """Draws a scenario of the requested type from the world; the same request gives the same scenario."""

    def __init__(self, world: World, seed: int) -> None:
        self.world = world
        self.seed = seed

    def decompose(self, request: ScenarioRequest) -> Scenario:
        if request.domain is not None and request.domain not in DOMAINS:
            raise ValueError(f"unknown domain {request.domain!r}; choose one of: {', '.join(DOMAINS)}")
        if request.domain == COMPUTE_DOMAIN and request.scenario_type in ("multi-hop", "parallel multi-hop"):
            raise ValueError(
                f"a {request.scenario_type} scenario starts with a lookup, so it cannot be in the "
                f"{COMPUTE_DOMAIN!r} domain; ask for single-hop or parallel single-hop"
            )
        key = f"template/{self.seed}/{request.seed}/{request.index}/{request.scenario_type}/{request.domain}"
        rng = random.Random(key)
        build: Callable[[random.Random, str | None], list[Node]] = {
            "single-hop": self._single_hop,
            "parallel single-hop": self._parallel_single_hop,
            "multi-hop": self._multi_hop,
            "parallel multi-hop": self._parallel_multi_hop,
        }[request.scenario_type]
        reasons: list[str] = []
        for _ in range(ATTEMPTS):
            try:
                return self._scenario(request, build(rng, request.domain))
            except Rejected as exc:
                reasons.append(str(exc))
        raise StageFailure(
            "decompose",
            "no acceptable scenario",
            f"{ATTEMPTS} draws for {request!r}; last reasons: {reasons[-3:]}",
        )

    # ---- reading a tree

    def subject(self, node: Rel) -> Entity:
        child = node.child
        if isinstance(child, Ref):
            return child.entity
        assert isinstance(child, Rel) and child.relation.target is not None
        return self.world.get(child.relation.target, str(self.value(child)))

    def value(self, node: Node) -> Any:
        if isinstance(node, Lit):
            return node.value
        if isinstance(node, Ref):
            return node.entity.name
        if isinstance(node, Rel):
            return self.subject(node).attrs[node.relation.attribute]
        try:
            return compute_value(self.world, node.computation.family, self.slots(node))
        except ValueError as exc:
            raise Rejected(f"{node.computation.name} cannot be computed: {exc}") from exc

    def inputs(self, node: Comp) -> dict[str, Any]:
        """The computation's inputs, typed as its tool takes them."""
        return {
            item.name: parse_literal(item.vtype, literal_text(self.value(arg)))
            for item, arg in zip(node.computation.inputs, node.args, strict=True)
        }

    def slots(self, node: Comp) -> dict[str, Any]:
        typed = self.inputs(node)
        return {**node.computation.fixed, **{item.slot: typed[item.name] for item in node.computation.inputs}}

    def answer(self, node: Node) -> str:
        value = self.value(node)
        return runtime.format_number(value) if isinstance(node, Comp) else str(value)

    def check_robust(self, node: Comp, answer: str) -> None:
        """Reject a computation whose answer survives a moved input (1862 → 2998 turns 136 into 1136)."""
        slots = self.slots(node)
        for item in node.computation.inputs:
            value = slots[item.slot]
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            for moved in shifted(value):
                try:
                    other = compute_value(self.world, node.computation.family, {**slots, item.slot: moved})
                except ValueError:
                    continue
                if matches(runtime.format_number(other), answer):
                    raise Rejected(f"{node.computation.name} still gives {answer} with {item.name}={moved}")

    def phrase(self, node: Node) -> str:
        if isinstance(node, Ref):
            return KINDS[node.entity.kind].refer(node.entity.name)
        assert isinstance(node, Rel), "computations are only ever the top of a question"
        return node.relation.phrase.format(s=self.phrase(node.child))

    def question(self, node: Node) -> str:
        """The node asked as a whole, inner nodes written as phrases."""
        if isinstance(node, Rel):
            return node.relation.question.format(s=self.phrase(node.child))
        assert isinstance(node, Comp)
        texts = {
            item.name: item.literal.format(literal_text(arg.value))
            if isinstance(arg, Lit)
            else self.phrase(arg)
            for item, arg in zip(node.computation.inputs, node.args, strict=True)
        }
        return node.computation.question.format(**texts)

    def sub_question(self, node: Rel | Comp) -> str:
        """The node asked on its own, with the answers it depends on written out."""
        if isinstance(node, Rel):
            subject = self.subject(node)
            return render(node.relation, {"s": KINDS[subject.kind].refer(subject.name)})
        return render(
            node.computation, {name: literal_text(value) for name, value in self.inputs(node).items()}
        )

    # ---- from a tree to a Scenario

    def _scenario(self, request: ScenarioRequest, tops: list[Node]) -> Scenario:
        steps: list[tuple[Rel | Comp, str, list[str]]] = []

        def visit(node: Node) -> str | None:
            if isinstance(node, Ref | Lit):
                return None
            children = [node.child] if isinstance(node, Rel) else list(node.args)
            depends = [dep for dep in (visit(child) for child in children) if dep]
            step_id = f"q{len(steps) + 1}"
            steps.append((node, step_id, depends))
            return step_id

        for top in tops:
            visit(top)
        subs = []
        for node, step_id, depends in steps:
            answer = self.answer(node)
            text = self.sub_question(node)
            self._check_reading(node, text)
            if isinstance(node, Comp):
                if isinstance(self.value(node), int) and self.value(node) < 10:
                    raise Rejected(
                        f"{node.computation.name} gives {answer}: too small to be a distinct answer"
                    )
                self.check_robust(node, answer)
            entities = (self.subject(node).name,) if isinstance(node, Rel) else ()
            subs.append(
                SubQuestion(
                    id=step_id, question=text, answer=answer, depends_on=tuple(depends), entities=entities
                )
            )
        if len(tops) == 1:
            question = self.question(tops[0])
        else:
            numbered = " ".join(f"({index}) {self.question(top)}" for index, top in enumerate(tops, 1))
            question = f"Answer the following questions. {numbered}"
        answers = [sub.answer for sub in subs]
        for index, first in enumerate(answers):
            if len(first) < 2:
                raise Rejected(f"sub-answer {first!r} is too short to be told apart")
            if matches(question, first):
                raise Rejected(f"the question contains the sub-answer {first!r}")
            for second in answers[index + 1 :]:
                if matches(first, second) or matches(second, first):
                    raise Rejected(f"sub-answers {first!r} and {second!r} match each other")
        first_template: Template = (
            steps[0][0].relation if isinstance(steps[0][0], Rel) else steps[0][0].computation
        )
        domain = first_template.domain
        if request.domain is not None and domain != request.domain:
            raise Rejected(f"drawn in domain {domain!r}, not {request.domain!r}")
        try:
            return Scenario(
                scenario_type=request.scenario_type,
                domain=domain,
                question=question,
                answer=", ".join(self.answer(top) for top in tops),
                sub_questions=tuple(subs),
            )
        except ValueError as exc:
            raise Rejected(str(exc)) from exc

    def _check_reading(self, node: Rel | Comp, text: str) -> None:
        readings = [r for r in parse(text) if resolves(self.world, r.template, r.inputs)]
        template = node.relation if isinstance(node, Rel) else node.computation
        if len(readings) != 1 or readings[0].template is not template:
            raise Rejected(f"sub-question {text!r} does not read back as exactly {template.name}")

    # ---- drawing trees

    def _entity(self, rng: random.Random, kind: str) -> Entity:
        return rng.choice(self.world.of_kind(kind))

    def _leaf(self, rng: random.Random, template: Template, entity: Entity | None = None) -> Node:
        if isinstance(template, Relation):
            return Rel(template, Ref(entity or self._entity(rng, template.kind)))
        values = [self._literal(rng, item.vtype) for item in template.inputs]
        if template.name in _ASCENDING or template.name in _DESCENDING:
            values.sort(reverse=template.name in _DESCENDING)
        return Comp(template, tuple(Lit(value) for value in values))

    def _literal(self, rng: random.Random, vtype: str) -> Any:
        if vtype == "date":
            first, last = datetime.date(1990, 1, 1).toordinal(), datetime.date(2024, 12, 31).toordinal()
            return datetime.date.fromordinal(rng.randint(first, last)).isoformat()
        if vtype == "money":
            return rng.randint(1250, 249_999) / 100
        if vtype == "currency":
            return rng.choice(list(self.world.currency_rates))
        return rng.randint(*_RANGES[vtype])

    def _pool(self, domain: str | None, templates: list[Template]) -> list[Template]:
        pool = [t for t in templates if domain is None or t.domain == domain]
        if not pool:
            raise ValueError(f"no template starts a scenario in the domain {domain!r}")
        return pool

    def _single_hop(self, rng: random.Random, domain: str | None) -> list[Node]:
        return [self._leaf(rng, rng.choice(self._pool(domain, list(TEMPLATES.values()))))]

    def _parallel_single_hop(self, rng: random.Random, domain: str | None) -> list[Node]:
        """2-3 independent questions, often on one kind or one family, so integration has work to do."""
        first = rng.choice(self._pool(domain, list(TEMPLATES.values())))
        nodes = [self._leaf(rng, first)]
        used = [first]
        count = rng.choice((2, 2, 3))
        while len(nodes) < count:
            mode = rng.random()
            options: list[Template]
            same_entity = None
            if isinstance(first, Relation) and mode < 0.35:
                options = [r for r in RELATIONS_BY_KIND[first.kind] if r not in used]
                first_node = nodes[0]
                if rng.random() < 0.5 and isinstance(first_node, Rel) and isinstance(first_node.child, Ref):
                    same_entity = first_node.child.entity
            elif isinstance(first, Relation) and first.family and mode < 0.7:
                options = [
                    r
                    for r in RELATIONS
                    if r.family == first.family and r.kind != first.kind and r not in used
                ]
            else:
                options = [t for t in TEMPLATES.values() if t not in used]
            if not options:
                options = [t for t in TEMPLATES.values() if t not in used]
            template = rng.choice(options)
            used.append(template)
            nodes.append(self._leaf(rng, template, same_entity))
        return nodes

    def _chain(self, rng: random.Random, domain: str | None) -> Node:
        """A relation chain from one entity, 2-4 steps, sometimes ending in a computation."""
        measured = [r for r in RELATIONS if (r.unit in CONVERSION_FROM or r.vtype == "date")]
        measured = [r for r in measured if domain is None or r.domain == domain]
        if measured and rng.random() < 0.2:
            start = rng.choice(measured)
            return self._finish(rng, Rel(start, Ref(self._entity(rng, start.kind))), always=True)
        start = rng.choice(self._pool(domain, [r for r in RELATIONS if r.vtype == ENTITY]))
        assert isinstance(start, Relation)
        node = Rel(start, Ref(self._entity(rng, start.kind)))
        seen = [self.subject(node).name, str(self.value(node))]
        length = rng.choice((2, 2, 3, 3, 4))
        for step in range(1, length):
            assert node.relation.target is not None
            final = step == length - 1
            options = [r for r in RELATIONS_BY_KIND[node.relation.target] if r.vtype == ENTITY or final]
            rng.shuffle(options)
            for relation in options:
                candidate = Rel(relation, node)
                if relation.vtype != ENTITY or str(self.value(candidate)) not in seen:
                    break
            else:
                break
            node = candidate
            seen.append(str(self.value(node)))
        return self._finish(rng, node, always=False)

    def _finish(self, rng: random.Random, node: Rel, *, always: bool) -> Node:
        """End a chain in a measure or a date with a computation on it (always, or half the time)."""
        if not always and rng.random() < 0.5:
            return node
        relation = node.relation
        if relation.unit in CONVERSION_FROM:
            return Comp(CONVERSION_FROM[relation.unit], (node,))
        if relation.vtype == "date":
            if rng.random() < 0.5:
                return Comp(_COMPUTATION["date_in_words"], (node,))
            return Comp(_COMPUTATION["add_days"], (node, Lit(self._literal(rng, "days"))))
        return node

    def _multi_hop(self, rng: random.Random, domain: str | None) -> list[Node]:
        return [self._chain(rng, domain)]

    def _operand(self, rng: random.Random, final: Relation, exclude: list[str]) -> Rel:
        """A 1- or 2-step chain ending in `final`, starting from an entity not in `exclude`."""
        feeders = [r for r in RELATIONS if r.target == final.kind]
        if feeders and rng.random() < 0.4:
            feeder = rng.choice(feeders)
            start = self._entity(rng, feeder.kind)
            node = Rel(final, Rel(feeder, Ref(start)))
        else:
            start = self._entity(rng, final.kind)
            node = Rel(final, Ref(start))
        if start.name in exclude or self.subject(node).name in exclude:
            raise Rejected("an operand repeats an entity")
        exclude += [start.name, self.subject(node).name]
        return node

    def _parallel_multi_hop(self, rng: random.Random, domain: str | None) -> list[Node]:
        recipe = rng.choice(
            (
                self._age_gap,
                self._year_gap,
                self._sum_or_difference,
                self._days_apart,
                self._price_in_currency,
                self._price_with_tax,
                self._side_by_side,
            )
        )
        return recipe(rng, domain)

    def _age_gap(self, rng: random.Random, domain: str | None) -> list[Node]:
        kind, creator, year = rng.choice(_AGE_GAPS)
        work = Ref(self._entity(rng, kind))
        born = Rel(RELATION_AT[("person", "birth_year")], Rel(RELATION_AT[(kind, creator)], work))
        return [Comp(_COMPUTATION["years_between"], (born, Rel(RELATION_AT[(kind, year)], work)))]

    def _ordered(self, first: Node, second: Node, ascending: bool) -> tuple[Node, Node]:
        """The two operands smaller first (or larger first); dates compare as ISO text."""
        low, high = self.value(first), self.value(second)
        return (first, second) if (low <= high) == ascending else (second, first)

    def _year_gap(self, rng: random.Random, domain: str | None) -> list[Node]:
        years = [r for r in RELATIONS if r.vtype == "year"]
        seen: list[str] = []
        first = self._operand(rng, rng.choice(years), seen)
        second = self._operand(rng, rng.choice(years), seen)
        return [Comp(_COMPUTATION["years_between"], self._ordered(first, second, ascending=True))]

    def _sum_or_difference(self, rng: random.Random, domain: str | None) -> list[Node]:
        relation = rng.choice([r for r in RELATIONS if r.vtype in ("count", "measure")])
        seen: list[str] = []
        first, second = self._operand(rng, relation, seen), self._operand(rng, relation, seen)
        if rng.random() < 0.5:
            return [Comp(_COMPUTATION["add_numbers"], (first, second))]
        return [Comp(_COMPUTATION["subtract_numbers"], self._ordered(first, second, ascending=False))]

    def _days_apart(self, rng: random.Random, domain: str | None) -> list[Node]:
        date = RELATION_AT[("event", "date")]
        seen: list[str] = []
        first, second = self._operand(rng, date, seen), self._operand(rng, date, seen)
        return [Comp(_COMPUTATION["days_between"], self._ordered(first, second, ascending=True))]

    def _price_in_currency(self, rng: random.Random, domain: str | None) -> list[Node]:
        seen: list[str] = []
        price = self._operand(rng, RELATION_AT[("product", "price_usd")], seen)
        money = self._operand(rng, RELATION_AT[("country", "currency")], seen)
        return [Comp(_COMPUTATION["convert_from_usd"], (price, money))]

    def _price_with_tax(self, rng: random.Random, domain: str | None) -> list[Node]:
        seen: list[str] = []
        price = self._operand(rng, RELATION_AT[("product", "price_usd")], seen)
        rate = self._operand(rng, RELATION_AT[("country", "vat_percent")], seen)
        return [Comp(_COMPUTATION["price_with_tax"], (price, rate))]

    def _side_by_side(self, rng: random.Random, domain: str | None) -> list[Node]:
        first = self._chain(rng, domain)
        if rng.random() < 0.5:
            return [first, self._chain(rng, None)]
        return [first, self._leaf(rng, rng.choice(RELATIONS))]


def resolves(world: World, template: Template, inputs: dict[str, Any]) -> bool:
    """Whether a parsed reading names things that exist: a relation's subject must be in the world."""
    if isinstance(template, Relation):
        entity = world.by_name.get(inputs["s"])
        return entity is not None and entity.kind == template.kind
    return True
