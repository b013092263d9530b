"""The offline `template` generator: a seeded world, questions from templates, five typed stages,
and tool code that answers golden calls, refuses wrong ones and never gives an answer away."""

import datetime
import hashlib
import json
import keyword
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from envs.construction.build import plan_requests
from envs.construction.stages import (
    SCALING_OPS,
    SCENARIO_TYPES,
    DeployedEnvironment,
    Scenario,
    ScenarioRequest,
    SubQuestion,
    environment_meta,
    run_stages,
    to_env_row,
)
from envs.construction.template import COMPUTATIONS, RELATIONS, TEMPLATES, TemplateGenerator, runtime
from envs.construction.template.decompose import resolves
from envs.construction.template.templates import (
    COMPUTE_FAMILIES,
    DOMAINS,
    KINDS,
    Relation,
    parse,
    render,
    vocabulary,
)
from envs.construction.template.tools import StageFailure
from envs.sandbox import SandboxPool, ToolCallRequest
from envs.verify import Verifier, perturb_argument
from rewards.matching import matches

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def generator() -> TemplateGenerator:
    return TemplateGenerator(0)


@pytest.fixture(scope="module")
def envs(generator: TemplateGenerator) -> list[DeployedEnvironment]:
    """240 environments as the builder asks for them: scenario types in turn, random scaling ops."""
    requests = plan_requests(0)
    return [generator.build(*next(requests)) for _ in range(240)]


@pytest.fixture(scope="module")
def pool():
    with SandboxPool(workers=2) as sandbox:
        yield sandbox


def rows_json(generator: TemplateGenerator, count: int, seed: int = 11) -> list[str]:
    requests = plan_requests(seed)
    return [
        to_env_row(generator.build(*next(requests)), split="train", data_source="t").model_dump_json()
        for _ in range(count)
    ]


def calls_of(env: DeployedEnvironment) -> list[tuple[str, str, dict, dict, str]]:
    """(sub id, tool, arguments, tool schema, sub-answer) for every golden call."""
    answers = {sub.id: sub.answer for sub in env.scaled.scenario.sub_questions}
    return [
        (
            call.sub_question,
            call.name,
            call.arguments,
            env.scaled.tool(call.name).document.to_openai(),
            answers[call.sub_question],
        )
        for call in env.scaled.golden_calls
    ]


# --------------------------------------------------------------------------- templates and world


def test_at_least_sixty_templates_across_every_domain():
    assert len(TEMPLATES) >= 60
    assert len(RELATIONS) == 74 and len(COMPUTATIONS) == 17
    assert {template.domain for template in TEMPLATES.values()} == set(DOMAINS)
    assert set(DOMAINS) == {
        "people",
        "places",
        "organisations",
        "creative works",
        "products",
        "events",
        "dates and units",
    }
    for template in TEMPLATES.values():
        assert template.question[0].isupper() and template.question.endswith("?"), template.name


def test_narrow_computations_fix_values_their_general_tool_allows():
    for computation in COMPUTATIONS:
        family = COMPUTE_FAMILIES[computation.family]
        enums = {param["slot"]: param["values"] for param in family.params if param["type"] == "enum"}
        slots = {param["slot"] for param in family.params}
        assert {item.slot for item in computation.inputs} | set(computation.fixed) == slots, computation.name
        for slot, value in computation.fixed.items():
            if slot in enums:
                assert value in enums[slot], (computation.name, slot, value)


def test_every_template_reads_back_as_itself(generator: TemplateGenerator):
    world, decomposer = generator.world, generator.decomposer
    rng = random.Random(0)
    for template in TEMPLATES.values():
        if isinstance(template, Relation):
            entity = world.of_kind(template.kind)[3]
            text = render(template, {"s": KINDS[template.kind].refer(entity.name)})
            expected = {"s": entity.name}
        else:
            node = decomposer._leaf(rng, template)
            text = decomposer.sub_question(node)
            expected = decomposer.inputs(node)
        readings = [r for r in parse(text) if resolves(world, r.template, r.inputs)]
        assert [(r.template.name, r.inputs) for r in readings] == [(template.name, expected)], text


def test_world_names_are_unique_and_never_inside_other_text(generator: TemplateGenerator):
    world = generator.world
    values = {
        str(value)
        for entities in world.entities.values()
        for entity in entities
        for value in entity.attrs.values()
        if isinstance(value, str) and not value[0].isdigit()
    }
    names = sorted(set(world.by_name) | values | set(world.currency_rates))
    assert len(world.by_name) == sum(len(e) for e in world.entities.values())
    joined = "\x00".join(name.lower() for name in names)
    text = vocabulary().lower()
    for name in names:
        assert joined.count(name.lower()) == 1, f"{name!r} occurs inside another name"
        assert name.lower() not in text, f"{name!r} occurs in the fixed text of questions or tools"


def test_world_facts_are_consistent(generator: TemplateGenerator):
    world = generator.world
    for person in world.of_kind("person"):
        spouse = world.get("person", str(person.attrs["spouse"]))
        assert spouse.attrs["spouse"] == person.name and spouse.name != person.name
        city = world.get("city", str(person.attrs["birth_city"]))
        assert person.attrs["nationality"] == city.attrs["country"]
    for country in world.of_kind("country"):
        assert world.get("city", str(country.attrs["capital"])).attrs["country"] == country.name
    for kind, creator, year in (("film", "director", "release_year"), ("book", "author", "publication_year")):
        for work in world.of_kind(kind):
            born = world.get("person", str(work.attrs[creator])).attrs["birth_year"]
            assert 22 <= int(work.attrs[year]) - int(born) <= 75


# --------------------------------------------------------------------------- determinism


def test_same_seed_gives_the_same_bytes_and_another_seed_does_not():
    first, again, other = TemplateGenerator(3), TemplateGenerator(3), TemplateGenerator(4)
    rows = rows_json(first, 24)
    assert rows == rows_json(again, 24)
    assert all(a != b for a, b in zip(rows, rows_json(other, 24), strict=True))


def test_bytes_do_not_depend_on_the_hash_seed():
    script = (
        "import hashlib\n"
        "from envs.construction.build import plan_requests\n"
        "from envs.construction.stages import to_env_row\n"
        "from envs.construction.template import TemplateGenerator\n"
        "g, r = TemplateGenerator(5), plan_requests(5)\n"
        "rows = [to_env_row(g.build(*next(r)), split='train', data_source='t').model_dump_json()\n"
        "        for _ in range(16)]\n"
        "print(hashlib.sha256(''.join(rows).encode()).hexdigest())\n"
    )
    digests = []
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        done = subprocess.run(
            [sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True, check=True
        )
        digests.append(done.stdout.strip())
    here = hashlib.sha256("".join(rows_json(TemplateGenerator(5), 16, seed=5)).encode()).hexdigest()
    assert digests == [here, here]


# --------------------------------------------------------------------------- shapes and records


def test_each_scenario_type_has_its_shape(envs: list[DeployedEnvironment]):
    seen = set()
    for env in envs:
        scenario = env.scaled.scenario
        subs = scenario.sub_questions
        roots = [sub for sub in subs if not sub.depends_on]
        seen.add(scenario.scenario_type)
        if scenario.scenario_type == "single-hop":
            assert len(subs) == 1
        elif scenario.scenario_type == "parallel single-hop":
            assert 2 <= len(subs) <= 3 and len(roots) == len(subs)
            assert scenario.answer == ", ".join(sub.answer for sub in subs)
        elif scenario.scenario_type == "multi-hop":
            assert len(subs) >= 2 and len(roots) == 1
            assert all(sub.depends_on for sub in subs[1:])
            assert scenario.answer == subs[-1].answer
        else:
            assert len(subs) >= 3 and len(roots) >= 2 and any(sub.depends_on for sub in subs)
    assert seen == set(SCENARIO_TYPES)


def test_meta_records_scenario_sub_questions_golden_calls_and_scaling(envs: list[DeployedEnvironment]):
    for env in envs[:40]:
        meta = environment_meta(env)
        row = to_env_row(env, split="train", data_source="t")
        assert meta["scenario"] == env.scaled.scenario.scenario_type
        assert meta["generator"] == "template" and meta["seed"] == 0
        assert [sub["answer"] for sub in meta["sub_questions"]] == [
            sub.answer for sub in env.scaled.scenario.sub_questions
        ]
        tool_names = set(row.tool_names())
        for sub in meta["sub_questions"]:
            assert sub["call"]["name"] in tool_names and sub["call"]["arguments"]
        assert {record["op"] for record in meta["scaling"]} <= set(SCALING_OPS)
        assert set(row.unsolved()) <= tool_names
        assert sorted(a for answers in row.unsolved().values() for a in answers) == sorted(
            sub["answer"] for sub in meta["sub_questions"]
        )


def test_where_a_needed_tool_is_listed_says_nothing(envs: list[DeployedEnvironment]):
    """Integration puts the tools the golden calls need first and extension appends distractors; the
    shuffled toolset keeps "call the first tool" from solving environments without the question."""
    needed_first, with_choice = 0, 0
    for env in envs:
        names = [tool.document.name for tool in env.scaled.tools]
        needed = {call.name for call in env.scaled.golden_calls}
        if len(needed) < len(names):
            with_choice += 1
            needed_first += names[0] in needed
    assert with_choice > 100
    # Uniform placement would put a needed tool first in len(needed)/len(names) of them: about half.
    assert 0.25 < needed_first / with_choice < 0.75


@pytest.mark.parametrize("op", SCALING_OPS)
def test_each_scaling_operation_is_applied_and_recorded(generator: TemplateGenerator, op: str):
    applied = 0
    for index in range(40):
        request = ScenarioRequest(scenario_type=SCENARIO_TYPES[index % 4], seed=1, index=index)
        scenario = generator.decomposer.decompose(request)
        integrated = generator.integrator.integrate(generator.documenter.document(scenario))
        scaled = generator.scaler.scale(integrated, (op,))
        records = [record for record in scaled.scaling if record.op == op]
        assert len(records) <= 1 and all(record.op == op for record in scaled.scaling)
        if not records:
            continue
        applied += 1
        tool = scaled.tool(records[0].tool)
        before = {t.document.name: t for t in integrated.tools}
        if op == "toolset extension":
            assert len(scaled.tools) > len(integrated.tools) and not tool.backing["calls"]
        elif op == "parameter expansion":
            assert any(not p.get("required") for p in tool.backing["params"])
        elif op == "parameter-type generalization":
            assert any(p["type"] in ("enum", "list", "object") for p in tool.backing["params"])
            assert tool.document.parameters != before[tool.document.name].document.parameters
        else:
            old = next(t for t in integrated.tools if set(t.covers) == set(tool.covers))
            assert tool.document.parameters != old.document.parameters or tool.backing != old.backing
    assert applied >= 36, f"{op} applied to only {applied} of 40 environments"


def test_integration_merges_overlapping_tools(envs: list[DeployedEnvironment]):
    merged = [env for env in envs if env.scaled.merged]
    assert len(merged) >= 20
    for env in merged:
        for new, old in env.scaled.merged.items():
            assert len(old) >= 2 and new not in old
            assert not set(old) & {call.name for call in env.scaled.golden_calls}
    families = {name for env in merged for name in env.scaled.merged}
    assert any(name.endswith("_info") for name in families)


def test_no_question_contains_a_sub_answer_and_no_document_does(generator: TemplateGenerator):
    requests = plan_requests(21)
    for _ in range(400):
        env = generator.build(*next(requests))
        scenario = env.scaled.scenario
        documents = json.dumps([tool.document.to_openai() for tool in env.scaled.tools])
        for sub in scenario.sub_questions:
            assert not matches(scenario.question, sub.answer), (scenario.question, sub.answer)
            assert not matches(documents, sub.answer), (sub.answer, documents)


def test_parameter_names_cannot_shadow_the_generated_code(envs: list[DeployedEnvironment]):
    for env in envs:
        for tool in env.scaled.tools:
            for name in tool.document.parameters["properties"]:
                assert name.isidentifier() and not keyword.iskeyword(name) and not name.startswith("_")


# --------------------------------------------------------------------------- tool code in the sandbox


def test_golden_calls_answer_and_any_changed_argument_does_not(envs: list[DeployedEnvironment], pool):
    golden, perturbed = [], []
    for number, env in enumerate(envs[:160]):
        for _, name, arguments, schema, answer in calls_of(env):
            golden.append((ToolCallRequest(env.codes[name], name, arguments), answer))
            for argument in arguments:
                changed = perturb_argument(arguments, argument, schema, number)
                perturbed.append((ToolCallRequest(env.codes[name], name, changed), answer))
    results = pool.run_batch([request for request, _ in golden + perturbed])
    for (request, answer), result in zip(golden, results[: len(golden)], strict=True):
        assert result.ok and matches(result.content, answer), (request.name, request.arguments, result)
    for (request, answer), result in zip(perturbed, results[len(golden) :], strict=True):
        assert not (result.ok and matches(result.content, answer)), (request.name, request.arguments, result)


def test_wrong_input_gets_a_helpful_error_that_gives_nothing_away(envs: list[DeployedEnvironment], pool):
    cases = []
    for env in envs[:120]:
        answers = [sub.answer for sub in env.scaled.scenario.sub_questions]
        for _, name, arguments, schema, _ in calls_of(env):
            code, required = env.codes[name], schema["function"]["parameters"]["required"]
            cases.append(
                (code, name, {**arguments, "bogus": 1}, "Error: unknown argument(s) bogus.", answers)
            )
            cases.append((code, name, {}, f"Error: '{required[0]}' ", answers))
            for param in required:
                wrong = 12345 if isinstance(arguments[param], str | list | dict) else "twelve"
                cases.append((code, name, {**arguments, param: wrong}, f"Error: '{param}", answers))
    results = pool.run_batch([ToolCallRequest(code, name, args) for code, name, args, _, _ in cases])
    for (_, name, args, start, answers), result in zip(cases, results, strict=True):
        assert result.ok, (name, args, result.error)
        assert result.content.startswith(start), (name, args, result.content)
        assert not any(matches(result.content, answer) for answer in answers), (name, args, result.content)


def test_lookup_tolerates_case_and_spacing_and_names_what_it_knows(generator: TemplateGenerator, pool):
    for index in range(50):  # the first single-hop environment that looks something up
        request = ScenarioRequest(scenario_type="single-hop", seed=0, index=index)
        documented = generator.documenter.document(generator.decomposer.decompose(request))
        integrated = generator.integrator.integrate(documented)
        env = generator.deployer.deploy(generator.scaler.scale(integrated, ()))
        ((sub_id, name, arguments, schema, answer),) = calls_of(env)
        tool = env.scaled.tool(name)
        if tool.backing["kind"] == "lookup":
            break
    else:
        pytest.fail("no lookup among the first 50 single-hop environments")
    (param,) = arguments
    sloppy = {param: "  " + arguments[param].upper().replace(" ", "   ") + " "}
    kind = next(iter(tool.backing["tables"]))
    info = KINDS[kind]
    misspelt = {param: arguments[param] + "q"}
    loose, wrong = pool.run_batch([ToolCallRequest(env.codes[name], name, a) for a in (sloppy, misspelt)])
    assert loose.ok and loose.content == answer
    assert wrong.content.startswith(
        f'Error: unknown {info.label} "{arguments[param]}q". Known {info.plural} include: '
    )
    assert wrong.content.endswith(f"Use the exact {info.key} as written.")


def test_verification_accepts_every_environment(envs: list[DeployedEnvironment], pool):
    rows = [to_env_row(env, split="train", data_source="t") for env in envs]
    verdicts = Verifier(pool).verify(rows)
    assert [v.detail for v in verdicts if not v.valid] == []
    assert all(v.oracle_solve_rate == 1.0 for v in verdicts)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(min_value=0, max_value=2**31 - 1))
def test_any_seed_gives_environments_the_golden_calls_solve(seed: int, pool):
    generator = TemplateGenerator(seed)
    rng = random.Random(seed)
    golden, perturbed = [], []
    for index, scenario_type in enumerate(SCENARIO_TYPES):
        operations = tuple(op for op in SCALING_OPS if rng.random() < 0.6)
        env = generator.build(
            ScenarioRequest(scenario_type=scenario_type, seed=seed, index=index), operations
        )
        for _, name, arguments, schema, answer in calls_of(env):
            golden.append((ToolCallRequest(env.codes[name], name, arguments), answer))
            for argument in arguments:
                changed = perturb_argument(arguments, argument, schema, seed)
                perturbed.append((ToolCallRequest(env.codes[name], name, changed), answer))
    results = pool.run_batch([request for request, _ in golden + perturbed])
    for (_, answer), result in zip(golden, results[: len(golden)], strict=True):
        assert result.ok and matches(result.content, answer), result
    for (request, answer), result in zip(perturbed, results[len(golden) :], strict=True):
        assert not (result.ok and matches(result.content, answer)), (request.arguments, result)


# --------------------------------------------------------------------------- stages on their own


def test_stages_rerun_alone_give_the_same_objects(generator: TemplateGenerator):
    request = ScenarioRequest(scenario_type="parallel multi-hop", seed=2, index=9)
    scenario = generator.decomposer.decompose(request)
    assert generator.decomposer.decompose(request) == scenario
    documented = generator.documenter.document(scenario)
    assert generator.documenter.document(scenario) == documented
    integrated = generator.integrator.integrate(documented)
    assert generator.integrator.integrate(documented) == integrated
    scaled = generator.scaler.scale(integrated, SCALING_OPS)
    assert generator.scaler.scale(integrated, SCALING_OPS) == scaled
    assert generator.deployer.deploy(scaled) == run_stages(generator, request, SCALING_OPS)
    plain = generator.scaler.scale(integrated, ())
    assert plain.scaling == ()  # no operation: the same tools, only listed in a seeded order

    def by_name(tool):
        return tool.document.name

    assert sorted(plain.tools, key=by_name) == sorted(integrated.tools, key=by_name)


def test_documenter_refuses_a_question_it_did_not_ask(generator: TemplateGenerator):
    foreign = Scenario(
        scenario_type="single-hop",
        domain="people",
        question="What is the airspeed of an unladen swallow?",
        answer="eleven",
        sub_questions=(
            SubQuestion(id="q1", question="What is the airspeed of an unladen swallow?", answer="eleven"),
        ),
    )
    with pytest.raises(StageFailure) as failure:
        generator.documenter.document(foreign)
    assert (failure.value.stage, failure.value.reason) == ("document", "not a template question")


def test_requests_name_a_domain_or_fail_clearly(generator: TemplateGenerator):
    for index in range(5):
        request = ScenarioRequest(scenario_type="multi-hop", seed=0, index=index, domain="events")
        assert generator.decomposer.decompose(request).domain == "events"
    with pytest.raises(ValueError, match="unknown domain 'sport'; choose one of: people, places"):
        generator.decomposer.decompose(ScenarioRequest(scenario_type="single-hop", seed=0, domain="sport"))
    with pytest.raises(ValueError, match="cannot be in the 'dates and units' domain"):
        generator.decomposer.decompose(
            ScenarioRequest(scenario_type="multi-hop", seed=0, domain="dates and units")
        )


def test_scaler_rejects_an_unknown_operation(generator: TemplateGenerator):
    scenario = generator.decomposer.decompose(ScenarioRequest(scenario_type="single-hop", seed=0))
    integrated = generator.integrator.integrate(generator.documenter.document(scenario))
    with pytest.raises(ValueError, match="unknown scaling operations \\['shrink'\\]"):
        generator.scaler.scale(integrated, ("shrink",))  # type: ignore[arg-type]


# --------------------------------------------------------------------------- the computations


def test_computations_give_hand_worked_values():
    length = COMPUTE_FAMILIES["length"].extra
    assert runtime.format_number(
        runtime._convert({"value": 742, "from_unit": "km", "to_unit": "mi"}, length)[0]
    ) == ("461.06")
    assert runtime._arithmetic({"a": 1987, "b": 1950, "operation": "subtract"}, {}) == (37, "")
    assert runtime._date_difference(
        {"start_date": "2014-06-21", "end_date": "2015-01-03", "unit": "days"}, {}
    ) == (
        196,
        "days",
    )
    assert runtime._date_describe({"date": "2014-06-21", "field": "in_words"}, {}) == (
        "Saturday 21 June 2014",
        "",
    )
    assert runtime._date_shift({"date": "2014-06-21", "amount": 2, "unit": "weeks"}, {}) == ("2014-07-05", "")
    rates = {"us dollar": ["US dollar", 1.0], "velor crown": ["Velor crown", 4.0]}
    converted = runtime._currency(
        {"amount": 12.5, "from_currency": "US dollar", "to_currency": " velor  CROWN"},
        {"rates": rates, "hints": []},
    )
    assert converted == (50.0, "")
    assert (
        runtime._currency(
            {"amount": 1, "from_currency": "US dollar", "to_currency": "mark"},
            {"rates": rates, "hints": ["Velor crown"]},
        )
        == 'Error: unknown currency "mark". Known currencies include: Velor crown.'
    )
    assert runtime.format_number(
        runtime._percentage({"value": 200, "percent": 17, "direction": "increase"}, {})[0]
    ) == ("234.00")
    assert (
        runtime._is_date("2024-02-29")
        and not runtime._is_date("2023-02-29")
        and not runtime._is_date("20240229")
    )
    assert datetime.date(2014, 6, 21).weekday() == 5
