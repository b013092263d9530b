"""The `llm` generator against a real HTTP server on loopback that answers like a chat-completions
endpoint, through the real OpenAI-compatible backend: full builds whose tool code returns the
sub-answers in the sandbox, retries with the reason fed back, rejections counted by reason, and
the prompt files shipped as package data."""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from envs.construction.llm import (
    PROMPT_NAMES,
    STAGES,
    LLMGenerator,
    StageRejected,
    extract_json,
    load_prompt,
    render_prompt,
)
from envs.construction.llm._rejections import Reject
from envs.construction.stages import DeployedEnvironment, ScalingOp, ScenarioRequest, to_env_row
from envs.sandbox import SandboxPool
from envs.verify import Verifier
from policies.backends import load_backend
from policies.backends.base import derive_seed
from rewards.matching import matches
from support.http import JsonHandler

# --------------------------------------------------------------------------- recorded answers


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _string(description: str) -> dict[str, str]:
    return {"type": "string", "description": description}


SINGLE_SCENARIO = {
    "domain": "geography",
    "question": "What is the capital city of Australia?",
    "answer": "Canberra",
    "sub_questions": [
        {
            "id": "q1",
            "question": "What is the capital of Australia?",
            "answer": "Canberra",
            "depends_on": [],
            "entities": ["Australia"],
        }
    ],
}
CAPITAL_PARAMETERS = {
    "type": "object",
    "properties": {"country": _string("The country's English name.")},
    "required": ["country"],
}
SINGLE_DOCUMENT = {
    "tools": [
        {
            "sub_question": "q1",
            "name": "get_capital",
            "description": "The capital city of a country.",
            "parameters": CAPITAL_PARAMETERS,
            "arguments": {"country": "Australia"},
        }
    ]
}
EXPANDED_PARAMETERS = {
    "type": "object",
    "properties": {
        "country": _string("The country's English name."),
        "with_population": {"type": "boolean", "description": "Also return the capital's population."},
    },
    "required": ["country"],
}
SINGLE_SCALE = {
    "tools": [
        {
            "name": "get_capital",
            "description": "The capital city of a country, optionally with its population.",
            "parameters": EXPANDED_PARAMETERS,
        }
    ],
    "calls": [{"sub_question": "q1", "name": "get_capital", "arguments": {"country": "Australia"}}],
    "scaling": [{"op": "parameter expansion", "tool": "get_capital", "detail": "added `with_population`"}],
}
CAPITAL_CODE = """CAPITALS = {"australia": ("Canberra", 467000), "japan": ("Tokyo", 14000000)}


def get_capital(country, with_population=False):
    if not isinstance(country, str):
        return "Error: country must be a string, e.g. 'Japan'."
    found = CAPITALS.get(country.strip().lower())
    if found is None:
        return f"Error: unknown country {country!r}; known countries: Australia, Japan."
    city, population = found
    return {"capital": city, "population": population} if with_population else city
"""
SINGLE_DEPLOY = {"codes": {"get_capital": CAPITAL_CODE}}

MULTI_SCENARIO = {
    "domain": "countries",
    "question": "What is the official language of the country whose capital is Warsaw?",
    "answer": "Polish",
    "sub_questions": [
        {
            "id": "q1",
            "question": "Which country has Warsaw as its capital?",
            "answer": "Poland",
            "depends_on": [],
            "entities": ["Warsaw"],
        },
        {
            "id": "q2",
            "question": "What is the official language of Poland?",
            "answer": "Polish",
            "depends_on": ["q1"],
            "entities": ["Poland"],
        },
    ],
}
MULTI_DOCUMENT = {
    "tools": [
        {
            "sub_question": "q1",
            "name": "country_by_capital",
            "description": "The country whose capital is the given city.",
            "parameters": {
                "type": "object",
                "properties": {"city": _string("A capital city.")},
                "required": ["city"],
            },
            "arguments": {"city": "Warsaw"},
        },
        {
            "sub_question": "q2",
            "name": "country_language",
            "description": "The official language of a country.",
            "parameters": {
                "type": "object",
                "properties": {"country": _string("A country.")},
                "required": ["country"],
            },
            "arguments": {"country": "Poland"},
        },
    ]
}
LOOKUP_PARAMETERS = {
    "type": "object",
    "properties": {
        "query": _string("A country or a capital city."),
        "field": {"type": "string", "enum": ["name", "language"], "description": "What to return."},
    },
    "required": ["query", "field"],
}
MULTI_INTEGRATE = {
    "tools": [
        {
            "name": "lookup_country",
            "description": "Look a country up by its name or its capital and return one field.",
            "parameters": LOOKUP_PARAMETERS,
            "replaces": ["country_by_capital", "country_language"],
        }
    ],
    "calls": [
        {"sub_question": "q1", "name": "lookup_country", "arguments": {"query": "Warsaw", "field": "name"}},
        {
            "sub_question": "q2",
            "name": "lookup_country",
            "arguments": {"query": "Poland", "field": "language"},
        },
    ],
}
FIELDS_SCHEMA = {
    "type": "array",
    "items": {"type": "string", "enum": ["name", "language", "currency"]},
    "minItems": 1,
    "description": "The fields to return.",
}
CONVERT_PARAMETERS = {
    "type": "object",
    "properties": {
        "amount": {"type": "number"},
        "source": _string("ISO code."),
        "target": _string("ISO code."),
    },
    "required": ["amount", "source", "target"],
}
MULTI_SCALE = {
    "tools": [
        {
            "name": "lookup_country",
            "description": "Look a country up by its name or its capital and return the chosen fields.",
            "parameters": {
                **LOOKUP_PARAMETERS,
                "properties": {**LOOKUP_PARAMETERS["properties"], "field": FIELDS_SCHEMA},
            },
        },
        {
            "name": "convert_currency",
            "description": "Convert an amount of money.",
            "parameters": CONVERT_PARAMETERS,
        },
    ],
    "calls": [
        {"sub_question": "q1", "name": "lookup_country", "arguments": {"query": "Warsaw", "field": ["name"]}},
        {
            "sub_question": "q2",
            "name": "lookup_country",
            "arguments": {"query": "Poland", "field": ["language"]},
        },
    ],
    "scaling": [
        {
            "op": "parameter-type generalization",
            "tool": "lookup_country",
            "detail": "`field` is a list of fields",
        },
        {"op": "toolset extension", "tool": "convert_currency", "detail": "a currency converter distractor"},
    ],
}
LOOKUP_CODE = """COUNTRIES = [
    {"name": "Poland", "capital": "Warsaw", "language": "Polish", "currency": "PLN"},
    {"name": "Portugal", "capital": "Lisbon", "language": "Portuguese", "currency": "EUR"},
]
FIELDS = ("name", "language", "currency")


def lookup_country(query, field):
    if not isinstance(field, list) or not field or any(f not in FIELDS for f in field):
        return f"Error: field must be a non-empty list of {list(FIELDS)}, got {field!r}."
    key = str(query).strip().lower()
    for row in COUNTRIES:
        if key in (row["name"].lower(), row["capital"].lower()):
            return {f: row[f] for f in field}
    return f"Error: no country or capital named {query!r}."
"""
CONVERT_CODE = """RATES = {"EUR": 1.0, "PLN": 4.3, "USD": 1.1}


def convert_currency(amount, source, target):
    if source not in RATES or target not in RATES:
        return f"Error: currencies must be among {sorted(RATES)}."
    return round(amount / RATES[source] * RATES[target], 2)
"""
MULTI_DEPLOY = {"codes": {"lookup_country": LOOKUP_CODE, "convert_currency": CONVERT_CODE}}

SINGLE = {
    "decompose": [_json(SINGLE_SCENARIO)],
    "document": [f"```json\n{_json(SINGLE_DOCUMENT)}\n```"],
    "scale": [f"Here is the scaled toolset:\n{_json(SINGLE_SCALE)}"],
    "deploy": [_json(SINGLE_DEPLOY)],
}
MULTI = {
    "decompose": [_json(MULTI_SCENARIO)],
    "document": [_json(MULTI_DOCUMENT)],
    "integrate": [_json(MULTI_INTEGRATE)],
    "scale": [_json(MULTI_SCALE)],
    "deploy": [_json(MULTI_DEPLOY)],
}
SINGLE_REQUEST = ScenarioRequest(scenario_type="single-hop", seed=3, index=0)
MULTI_REQUEST = ScenarioRequest(scenario_type="multi-hop", seed=3, index=1)
SINGLE_OPS: tuple[ScalingOp, ...] = ("parameter expansion",)
MULTI_OPS: tuple[ScalingOp, ...] = ("parameter-type generalization", "toolset extension")


# --------------------------------------------------------------------------- the scripted endpoint

Reply = str | int  # the assistant's content, or an HTTP error status


@dataclass
class Seen:
    stage: str
    body: dict[str, Any]

    @property
    def messages(self) -> list[dict[str, Any]]:
        return self.body["messages"]


@dataclass
class Endpoint:
    """Answers each request with the next scripted reply for the stage its first message names
    ("stage N of 5"); a stage's last reply repeats."""

    url: str = ""
    replies: dict[str, list[Reply]] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def script(self, replies: dict[str, list[Reply]], **changes: list[Reply]) -> None:
        self.replies = {stage: list(answers) for stage, answers in {**replies, **changes}.items()}

    def next(self, body: dict[str, Any]) -> Reply:
        number = re.search(r"stage (\d) of 5", body["messages"][0]["content"])
        assert number is not None, "a request without a stage marker"
        stage = STAGES[int(number.group(1)) - 1]
        with self.lock:
            self.seen.append(Seen(stage, body))
            answers = self.replies[stage]
            return answers.pop(0) if len(answers) > 1 else answers[0]

    def stages(self) -> list[str]:
        return [seen.stage for seen in self.seen]

    def of(self, stage: str) -> list[Seen]:
        return [seen for seen in self.seen if seen.stage == stage]


def _handler(endpoint: Endpoint) -> type[BaseHTTPRequestHandler]:
    class Handler(JsonHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            assert self.path == "/v1/chat/completions"
            reply = endpoint.next(body)
            if isinstance(reply, int):
                self.send_json(reply, {"error": {"message": "scripted failure"}})
                return
            message = {"role": "assistant", "content": reply}
            choice = {"index": 0, "message": message, "finish_reason": "stop"}
            usage = {"prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 150}
            self.send_json(
                200, {"id": "chatcmpl-1", "object": "chat.completion", "choices": [choice], "usage": usage}
            )

    return Handler


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    state = Endpoint()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@pytest.fixture(scope="module")
def pool() -> Iterator[SandboxPool]:
    with SandboxPool(workers=1) as sandbox:
        yield sandbox


def generator(endpoint: Endpoint, **options: Any) -> LLMGenerator:
    backend = load_backend("openai", "test-model", base_url=endpoint.url, max_retries=0, timeout_s=10)
    return LLMGenerator(backend, **options)


def run_golden_calls(pool: SandboxPool, env: DeployedEnvironment) -> list[tuple[str, str]]:
    """(output, sub-answer) of every golden call, run in the sandbox."""
    answers = {sub.id: sub.answer for sub in env.scaled.scenario.sub_questions}
    results = []
    for call in env.scaled.golden_calls:
        result = pool.run(env.codes[call.name], call.name, call.arguments)
        assert result.ok, result.error
        results.append((result.content, answers[call.sub_question]))
    return results


# --------------------------------------------------------------------------- full builds


def test_single_hop_build_makes_a_solvable_environment(endpoint: Endpoint, pool: SandboxPool) -> None:
    endpoint.script(SINGLE)
    llm = generator(endpoint, seed=5)
    env = llm.build(SINGLE_REQUEST, SINGLE_OPS)

    assert endpoint.stages() == ["decompose", "document", "scale", "deploy"]  # one tool: nothing to merge
    assert env.generator == "llm" and env.seed == 5
    assert [tool.document.name for tool in env.scaled.tools] == ["get_capital"]
    assert env.scaled.tools[0].document.parameters == EXPANDED_PARAMETERS
    assert env.scaled.tools[0].covers == ("q1",)
    assert env.scaled.tools[0].backing == {
        "cases": [{"sub_question": "q1", "arguments": {"country": "Australia"}, "answer": "Canberra"}]
    }
    assert [(r.op, r.tool) for r in env.scaled.scaling] == [("parameter expansion", "get_capital")]
    assert env.codes == {"get_capital": CAPITAL_CODE}
    assert llm.rejections == Counter()

    row = to_env_row(env, split="train", data_source="test/llm")
    assert row.messages == [{"role": "user", "content": "What is the capital city of Australia?"}]
    assert row.answer == "Canberra"
    assert row.unsolved() == {"get_capital": ["Canberra"]}
    assert row.tool_names() == ["get_capital"]
    meta = row.meta_dict()
    assert meta["generator"] == "llm" and meta["scenario"] == "single-hop" and meta["domain"] == "geography"
    assert meta["sub_questions"][0]["call"] == {"name": "get_capital", "arguments": {"country": "Australia"}}

    assert run_golden_calls(pool, env) == [("Canberra", "Canberra")]
    verdict = Verifier(pool).verify([row])[0]
    assert (verdict.valid, verdict.reason, verdict.oracle_solve_rate) == (True, None, 1.0)
    assert pool.run(CAPITAL_CODE, "get_capital", {"country": "Atlantis"}).content == (
        "Error: unknown country 'Atlantis'; known countries: Australia, Japan."
    )


def test_multi_hop_build_merges_scales_and_deploys(endpoint: Endpoint, pool: SandboxPool) -> None:
    endpoint.script(MULTI)
    llm = generator(endpoint)
    env = llm.build(MULTI_REQUEST, MULTI_OPS)

    assert endpoint.stages() == ["decompose", "document", "integrate", "scale", "deploy"]
    scaled = env.scaled
    assert scaled.scenario.scenario_type == "multi-hop"
    assert [sub.depends_on for sub in scaled.scenario.sub_questions] == [(), ("q1",)]
    assert scaled.merged == {"lookup_country": ("country_by_capital", "country_language")}
    assert [tool.document.name for tool in scaled.tools] == ["lookup_country", "convert_currency"]
    assert [tool.covers for tool in scaled.tools] == [("q1", "q2"), ()]
    assert scaled.tools[1].backing == {"cases": []}
    assert [(r.op, r.tool) for r in scaled.scaling] == [
        ("parameter-type generalization", "lookup_country"),
        ("toolset extension", "convert_currency"),
    ]
    assert llm.rejections == Counter()

    row = to_env_row(env, split="test", data_source="test/llm")
    assert row.unsolved() == {"lookup_country": ["Poland", "Polish"]}
    assert row.tool_names() == ["lookup_country", "convert_currency"]
    assert row.codes_dict() == {"lookup_country": LOOKUP_CODE, "convert_currency": CONVERT_CODE}
    assert row.meta_dict()["merged"] == {"lookup_country": ["country_by_capital", "country_language"]}

    outputs = run_golden_calls(pool, env)
    assert outputs == [('{"name": "Poland"}', "Poland"), ('{"language": "Polish"}', "Polish")]
    assert all(matches(output, answer) for output, answer in outputs)
    verdict = Verifier(pool).verify([row])[0]  # what the environment builder runs before writing a row
    assert (verdict.valid, verdict.reason, verdict.oracle_solve_rate) == (True, None, 1.0)
    assert all(check.golden_ok and check.perturbed_rejected for check in verdict.checks)
    wrong = pool.run(LOOKUP_CODE, "lookup_country", {"query": "Poland", "field": "language"})
    assert (
        wrong.content
        == "Error: field must be a non-empty list of ['name', 'language', 'currency'], got 'language'."
    )

    # Each stage saw the previous stage's result; deploy was told what each tool must return.
    assert "whose capital is Warsaw" in endpoint.of("document")[0].messages[0]["content"]
    assert '"replaces"' in endpoint.of("integrate")[0].messages[0]["content"]
    assert '"toolset extension"' in endpoint.of("scale")[0].messages[0]["content"]
    deploy_prompt = endpoint.of("deploy")[0].messages[0]["content"]
    assert '"answer": "Polish"' in deploy_prompt and '"must_return": []' in deploy_prompt


def test_requests_are_seeded_by_the_generator_seed_and_the_prompt(endpoint: Endpoint) -> None:
    endpoint.script(SINGLE)
    generator(endpoint, seed=1).build(SINGLE_REQUEST, SINGLE_OPS)
    generator(endpoint, seed=1).build(SINGLE_REQUEST, SINGLE_OPS)
    generator(endpoint, seed=2).build(SINGLE_REQUEST, SINGLE_OPS)
    seeds = [seen.body["seed"] for seen in endpoint.seen]
    assert seeds[0:4] == seeds[4:8]
    assert not set(seeds[0:4]) & set(seeds[8:12])
    prompt = endpoint.seen[0].messages[0]["content"]
    assert seeds[0] == derive_seed("llm", 1, hashlib.sha256(prompt.encode()).hexdigest(), 1)
    assert endpoint.seen[0].body["max_tokens"] == 4096 and endpoint.seen[0].body["temperature"] == 0.7
    assert "tools" not in endpoint.seen[0].body


def test_the_seed_topic_comes_from_source_material(endpoint: Endpoint) -> None:
    endpoint.script(SINGLE)
    topics = ["alpine huts", "ferry timetables", "a chess club"]
    llm = generator(endpoint, source_material=topics)
    for index in range(6):
        llm.decomposer.decompose(ScenarioRequest(scenario_type="single-hop", seed=0, index=index))
    picked = [
        re.search(r"Seed topic: (.*?) \(if", seen.messages[0]["content"]).group(1) for seen in endpoint.seen
    ]
    expected = [topics[derive_seed("llm-topic", 0, 0, index) % 3] for index in range(6)]
    assert picked == expected and set(picked) <= set(topics)
    assert "Domain: any" in endpoint.seen[0].messages[0]["content"]
    llm.decomposer.decompose(ScenarioRequest(scenario_type="single-hop", seed=0, domain="aviation"))
    assert "Domain: aviation" in endpoint.seen[-1].messages[0]["content"]


# --------------------------------------------------------------------------- retries and rejections


def test_invalid_json_then_valid_is_one_retry(endpoint: Endpoint) -> None:
    endpoint.script(SINGLE, decompose=['Sure! {"domain": "geography", "question":', _json(SINGLE_SCENARIO)])
    llm = generator(endpoint)
    env = llm.build(SINGLE_REQUEST, SINGLE_OPS)

    assert env.scaled.scenario.answer == "Canberra"
    assert endpoint.stages() == ["decompose", "decompose", "document", "scale", "deploy"]
    assert llm.rejections == Counter({"decompose: invalid JSON": 1})
    retry = endpoint.of("decompose")[1].messages
    assert [message["role"] for message in retry] == ["user", "assistant", "user"]
    assert retry[1]["content"] == 'Sure! {"domain": "geography", "question":'
    assert retry[2]["content"].startswith("Your answer was not accepted: the JSON object is not valid JSON: ")


def test_schema_error_is_fed_back_to_the_model(endpoint: Endpoint) -> None:
    leaky = {**SINGLE_SCENARIO, "question": "Is Canberra the capital city of Australia?"}
    endpoint.script(SINGLE, decompose=[_json(leaky), _json(SINGLE_SCENARIO)])
    llm = generator(endpoint)
    llm.build(SINGLE_REQUEST, SINGLE_OPS)

    assert llm.rejections == Counter({"decompose: question contains its answer": 1})
    follow_up = endpoint.of("decompose")[1].messages[2]["content"]
    assert follow_up == render_prompt(
        "retry", error="the question contains its own answer (under the reward's matching rule)"
    )


def test_a_missing_field_is_named_in_the_reason(endpoint: Endpoint) -> None:
    broken = json.loads(_json(SINGLE_SCENARIO))
    del broken["sub_questions"][0]["answer"]
    endpoint.script(SINGLE, decompose=[_json(broken), _json(SINGLE_SCENARIO)])
    llm = generator(endpoint)
    llm.decomposer.decompose(SINGLE_REQUEST)
    assert llm.rejections == Counter({"decompose: schema: sub_questions.answer": 1})
    assert "field 'sub_questions[0].answer': missing" in endpoint.of("decompose")[1].messages[2]["content"]


def test_all_attempts_invalid_raises_stage_rejected(endpoint: Endpoint) -> None:
    endpoint.script(SINGLE, decompose=["I would rather not."])
    llm = generator(endpoint)
    with pytest.raises(StageRejected) as caught:
        llm.build(SINGLE_REQUEST, SINGLE_OPS)

    assert (caught.value.stage, caught.value.reason, caught.value.attempts) == (
        "decompose",
        "invalid JSON",
        3,
    )
    assert str(caught.value) == (
        "decompose: rejected after 3 attempts: invalid JSON (the reply holds no JSON object (no `{` found))"
    )
    assert isinstance(caught.value, ValueError)  # the environment builder skips ValueErrors
    assert endpoint.stages() == ["decompose"] * 3
    assert [len(seen.messages) for seen in endpoint.seen] == [1, 3, 5]
    assert llm.rejections == Counter({"decompose: invalid JSON": 3, "decompose: rejected": 1})


def test_code_that_does_not_define_the_tool_is_rejected_at_deploy(endpoint: Endpoint) -> None:
    endpoint.script(SINGLE, deploy=[_json({"codes": {"get_capital": "CAPITAL = 'Canberra'\n"}})])
    llm = generator(endpoint, max_attempts=2)
    with pytest.raises(StageRejected) as caught:
        llm.build(SINGLE_REQUEST, SINGLE_OPS)

    assert (caught.value.stage, caught.value.reason) == ("deploy", "code does not define tool")
    assert endpoint.stages() == ["decompose", "document", "scale", "deploy", "deploy"]
    assert llm.rejections == Counter({"deploy: code does not define tool": 2, "deploy: rejected": 1})
    assert (
        "has no top-level function `def get_capital(...)`" in endpoint.of("deploy")[1].messages[2]["content"]
    )


def test_a_backend_error_costs_an_attempt_and_is_retried_as_is(endpoint: Endpoint) -> None:
    endpoint.script(SINGLE, decompose=[400, _json(SINGLE_SCENARIO)])
    llm = generator(endpoint)
    llm.decomposer.decompose(SINGLE_REQUEST)
    assert llm.rejections == Counter({"decompose: backend error": 1})
    first, second = endpoint.of("decompose")
    assert second.messages == first.messages  # nothing to show the model: the same request again


def _single_with(stage: str, payload: dict[str, Any]) -> dict[str, list[Reply]]:
    return {**SINGLE, stage: [_json(payload), *SINGLE[stage]]}


def _multi_with(stage: str, payload: dict[str, Any]) -> dict[str, list[Reply]]:
    return {**MULTI, stage: [_json(payload), *MULTI[stage]]}


def _replace_call(payload: dict[str, Any], index: int, **changes: Any) -> dict[str, Any]:
    copy = json.loads(_json(payload))
    copy["calls"][index].update(changes)
    return copy


CHECKS = [
    pytest.param(
        _multi_with(
            "document",
            {
                "tools": [
                    MULTI_DOCUMENT["tools"][0],
                    {**MULTI_DOCUMENT["tools"][1], "arguments": {"country": "it"}},
                ]
            },
        ),
        "document: call ignores the answer it depends on",
        "q2 depends on q1, so the arguments of its call must contain q1's answer 'Poland'",
        id="dependent-call-without-the-earlier-answer",
    ),
    pytest.param(
        _single_with(
            "document", {"tools": [{**SINGLE_DOCUMENT["tools"][0], "arguments": {"nation": "Australia"}}]}
        ),
        "document: call does not fit its schema",
        "'country' is a required property",
        id="golden-call-outside-its-schema",
    ),
    pytest.param(
        _single_with(
            "document",
            {
                "tools": [
                    {
                        **SINGLE_DOCUMENT["tools"][0],
                        "parameters": {"type": "object", "properties": {"x": {"type": "str"}}},
                    }
                ]
            },
        ),
        "document: parameters are not a valid schema",
        "not a JSON Schema: at properties.x.type",
        id="parameters-not-a-json-schema",
    ),
    pytest.param(
        _single_with(
            "document",
            {
                "tools": [
                    {
                        **SINGLE_DOCUMENT["tools"][0],
                        "parameters": {
                            **CAPITAL_PARAMETERS,
                            "properties": {"country": {"$ref": "#/$defs/c"}},
                        },
                    }
                ]
            },
        ),
        "document: parameters are not a valid schema",
        "parameters of tool 'get_capital': it uses $ref; write every schema inline",
        id="parameters-with-a-reference",
    ),
    pytest.param(
        _single_with(
            "document",
            {
                "tools": [
                    {**SINGLE_DOCUMENT["tools"][0], "description": "Capitals, e.g. Canberra for Australia."}
                ]
            },
        ),
        "document: tool document states a sub-answer",
        "a description in tool 'get_capital' states q1's answer 'Canberra'",
        id="description-states-the-answer",
    ),
    pytest.param(
        _multi_with(
            "integrate",
            {
                **MULTI_INTEGRATE,
                "tools": [{**MULTI_INTEGRATE["tools"][0], "replaces": ["country_by_capital"]}],
            },
        ),
        "integrate: tools not replaced exactly once",
        "every one of ['country_by_capital', 'country_language'] must be replaced",
        id="old-tool-left-unreplaced",
    ),
    pytest.param(
        _multi_with("scale", {**MULTI_SCALE, "scaling": MULTI_SCALE["scaling"][1:]}),
        "scale: operation not applied",
        "no record applies ['parameter-type generalization']",
        id="requested-operation-not-applied",
    ),
    pytest.param(
        _multi_with("scale", _replace_call(MULTI_SCALE, 1, name="convert_currency")),
        "scale: call moved to another tool",
        "sub-question q2 must still be answered by 'lookup_country', not 'convert_currency'",
        id="call-moved-to-a-distractor",
    ),
    pytest.param(
        _single_with(
            "scale",
            {**SINGLE_SCALE, "tools": [{**SINGLE_SCALE["tools"][0], "parameters": CAPITAL_PARAMETERS}]},
        ),
        "scale: parameter expansion adds no parameter",
        "'get_capital' had parameters ['country'] and now has ['country']",
        id="expansion-without-a-new-parameter",
    ),
    pytest.param(
        _single_with(
            "deploy",
            {"codes": {"get_capital": "def get_capital(country, with_population):\n    return 'x'\n"}},
        ),
        "deploy: signature does not fit the schema",
        "it needs 'with_population', which the schema does not require",
        id="signature-needs-an-optional-parameter",
    ),
    pytest.param(
        _single_with("deploy", {"codes": {"get_capital": "def get_capital(country:\n"}}),
        "deploy: code does not parse",
        "code of tool 'get_capital' is not valid Python:",
        id="code-does-not-parse",
    ),
]


@pytest.mark.parametrize(("replies", "reason", "detail"), CHECKS)
def test_stage_checks_refuse_with_a_reason_and_a_fix(
    endpoint: Endpoint, replies: dict[str, list[Reply]], reason: str, detail: str
) -> None:
    endpoint.script(replies)
    llm = generator(endpoint)
    single = "integrate" not in replies
    env = llm.build(*((SINGLE_REQUEST, SINGLE_OPS) if single else (MULTI_REQUEST, MULTI_OPS)))
    assert llm.rejections == Counter({reason: 1})
    stage = reason.split(":")[0]
    assert detail in endpoint.of(stage)[1].messages[2]["content"]
    assert env.generator == "llm"  # the second, valid answer went through


def test_constructor_refuses_bad_settings(endpoint: Endpoint) -> None:
    backend = load_backend("openai", "test-model", base_url=endpoint.url)
    with pytest.raises(ValueError, match=re.escape("max_attempts must be an integer >= 1, got 0")):
        LLMGenerator(backend, max_attempts=0)
    with pytest.raises(ValueError, match=re.escape("source_material items [1] are not non-empty strings")):
        LLMGenerator(backend, source_material=["ok", " "])
    with pytest.raises(TypeError, match="backend must be a policies.backends.GenerationBackend, got str"):
        LLMGenerator("openai")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- prompts and JSON


def test_prompt_files_ship_as_package_data() -> None:
    folder = resources.files("envs.construction.llm") / "prompts"
    assert sorted(item.name for item in folder.iterdir() if item.name.endswith(".md")) == sorted(
        f"{name}.md" for name in PROMPT_NAMES
    )
    for number, stage in enumerate(STAGES, start=1):
        text = (folder / f"{stage}.md").read_text(encoding="utf-8")
        assert load_prompt(stage).template == text
        assert text.startswith(f"# Environment construction, stage {number} of 5: ")
        assert "Reply with one JSON object and nothing else" in text
    placeholders = {
        name: sorted(set(re.findall(r"\$\{?([_a-z][_a-z0-9]*)", load_prompt(name).template)))
        for name in PROMPT_NAMES
    }
    assert placeholders == {
        "decompose": ["domain", "scenario_type", "topic", "variation"],
        "document": ["scenario"],
        "integrate": ["toolset"],
        "scale": ["operations", "toolset"],
        "deploy": ["tools"],
        "retry": ["error"],
    }
    with pytest.raises(
        ValueError, match=re.escape("unknown prompt 'summarize'; the prompts are decompose, ")
    ):
        load_prompt("summarize")  # type: ignore[arg-type]


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


@given(
    st.dictionaries(st.text(max_size=6), JSON_VALUES, max_size=4),
    st.sampled_from(["", "Here you go:\n", "Sure.\n\n"]),
    st.sampled_from(["bare", "fence", "json-fence"]),
)
def test_extract_json_reads_the_object_however_it_is_wrapped(payload: dict, before: str, wrap: str) -> None:
    text = json.dumps(payload, ensure_ascii=False, indent=1)
    body = {"bare": text, "fence": f"```\n{text}\n```", "json-fence": f"```json\n{text}\n```"}[wrap]
    assert extract_json(f"{before}{body}\nAnything after.") == payload


def test_extract_json_prefers_a_fenced_object_and_names_the_error() -> None:
    assert extract_json('Use {braces} freely.\n```json\n{"a": 1}\n```') == {"a": 1}
    assert extract_json('```python\nprint(1)\n```\n{"b": [2]}') == {"b": [2]}
    with pytest.raises(Reject, match=re.escape("Expecting ',' delimiter (line 1, column 9 of the reply)")):
        extract_json('{"a": 1 "b": 2}')  # column 9: the quote that opens "b"
