"""The OpenAI-compatible backend against a real HTTP server on loopback that each test scripts:
parsed replies, the exact request body, retries with backoff, bounded time on stalls, concurrency,
and an API key that never reaches a log or an error."""

from __future__ import annotations

import json
import logging
import re
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.backends import BackendError, Conversation, Generation, SamplingParams, load_backend
from policies.backends.base import row_seeds
from policies.backends.openai_backend import OpenAIBackend, endpoint_url
from policies.types import ParsedTurn, ToolCall
from support.tools import WEATHER_TOOL

KEY_ENV = "FTRL_TEST_OPENAI_KEY"
KEY = "sk-test-5ecret-0f-the-test-suite"
HELLO = Conversation([{"role": "user", "content": "Weather in Paris?"}], tools=[WEATHER_TOOL], turn=2)
PARAMS = SamplingParams(temperature=0.7, top_p=0.9, max_new_tokens=33, seed=11)

Behaviour = Callable[["Handler", dict[str, Any]], None]


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class Script:
    """What the server does: the next scripted behaviour per request, then ``default``."""

    steps: deque[Behaviour] = field(default_factory=deque)
    default: Behaviour | None = None
    requests: list[Recorded] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    release: threading.Event = field(default_factory=threading.Event)  # ends stalls at teardown

    def next(self) -> Behaviour:
        with self.lock:
            if self.steps:
                return self.steps.popleft()
        assert self.default is not None, "the server got more requests than the test scripted"
        return self.default


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    script: Script

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        script = self.script
        with script.lock:
            script.requests.append(Recorded(self.path, dict(self.headers), body))
            script.in_flight += 1
            script.max_in_flight = max(script.max_in_flight, script.in_flight)
        try:
            script.next()(self, body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            with script.lock:
                script.in_flight -= 1

    def send(self, status: int, payload: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        pass


@pytest.fixture
def server() -> Iterator[tuple[Script, str]]:
    """A scripted chat-completions server on 127.0.0.1 and its base URL."""
    script = Script()
    handler = type("ScriptedHandler", (Handler,), {"script": script})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield script, f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    finally:
        script.release.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)


class Sleeps(list):
    """Records the backoff delays instead of waiting them out."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def backend(base_url: str, **options: Any) -> OpenAIBackend:
    settings_ = {"api_key_env": KEY_ENV, "timeout_s": 5.0, "max_retries": 2, "sleep": Sleeps(), **options}
    return OpenAIBackend(base_url, "tiny-served", **settings_)


# --- behaviours -----------------------------------------------------------------------------------


def reply(message: dict[str, Any], finish: str = "stop", usage: tuple[int, int] = (57, 21)) -> Behaviour:
    def behave(handler: Handler, body: dict[str, Any]) -> None:
        payload = {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish}],
            "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1], "total_tokens": sum(usage)},
        }
        handler.send(200, json.dumps(payload).encode())

    return behave


def echo(handler: Handler, body: dict[str, Any]) -> None:
    """Answer with the last user message, so tests can see which answer belongs to which request."""
    reply({"content": body["messages"][-1]["content"]})(handler, body)


def status(code: int, payload: bytes = b"", headers: dict[str, str] | None = None) -> Behaviour:
    return lambda handler, body: handler.send(code, payload, headers)


def not_json(handler: Handler, body: dict[str, Any]) -> None:
    handler.send(200, b'{"choices": [{"message": ')


def closed_midway(handler: Handler, body: dict[str, Any]) -> None:
    handler.send_response(200)
    handler.send_header("Content-Length", "500")
    handler.end_headers()
    handler.wfile.write(b'{"choices": [')
    handler.wfile.flush()
    handler.close_connection = True


def stall(handler: Handler, body: dict[str, Any]) -> None:
    handler.script.release.wait(30)
    handler.close_connection = True


def trickle(handler: Handler, body: dict[str, Any]) -> None:
    """Headers at once, then a byte every 50 ms: each read is quick, the whole body is not."""
    handler.send_response(200)
    handler.send_header("Content-Length", "1000")
    handler.end_headers()
    for _ in range(1000):
        handler.wfile.write(b" ")
        handler.wfile.flush()
        if handler.script.release.wait(0.05):
            break
    handler.close_connection = True


def gather(parties: int) -> Behaviour:
    """Hold each request until ``parties`` are in flight together, then echo."""
    barrier = threading.Barrier(parties, timeout=10)

    def behave(handler: Handler, body: dict[str, Any]) -> None:
        try:
            barrier.wait()
        except threading.BrokenBarrierError:
            pass
        echo(handler, body)

    return behave


# --- replies become parsed turns ------------------------------------------------------------------

WEATHER_CALL = {
    "id": "chatcmpl-tool-8f2a",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
}
WEATHER_RAW = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'


def test_structured_tool_calls_become_parsed_calls_with_deterministic_ids(server: tuple[Script, str]) -> None:
    script, url = server
    script.default = reply({"content": None, "tool_calls": [WEATHER_CALL]}, finish="tool_calls")
    with backend(url) as policy:
        (generation,) = policy.generate([HELLO], PARAMS)
    assert generation == Generation(
        turn=ParsedTurn(
            content="", tool_calls=(ToolCall("call_2_0", "get_weather", {"city": "Paris"}),), raw=WEATHER_RAW
        ),
        prompt_tokens=57,
        completion_tokens=21,
        finish_reason="stop",
    )


def test_tool_call_tags_in_content_are_parsed_when_the_server_has_no_tool_parser(
    server: tuple[Script, str],
) -> None:
    script, url = server
    content = (
        'Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'
    )
    script.default = reply({"content": content})
    with backend(url) as policy:
        (generation,) = policy.generate([HELLO], PARAMS)
    assert generation.turn == ParsedTurn(
        content="Let me check.",
        tool_calls=(ToolCall("call_2_0", "get_weather", {"city": "Oslo"}),),
        raw=content,
    )


def test_a_call_with_broken_arguments_leaves_a_content_only_turn(server: tuple[Script, str]) -> None:
    script, url = server
    broken = {**WEATHER_CALL, "function": {"name": "get_weather", "arguments": '{"city": "Par'}}
    script.default = reply({"content": "Checking.", "tool_calls": [broken]})
    with backend(url) as policy:
        (generation,) = policy.generate([HELLO], PARAMS)
    raw = 'Checking.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Par}\n</tool_call>'
    assert generation.turn.tool_calls == ()
    assert (generation.turn.content, generation.turn.raw) == (raw, raw)
    assert generation.turn.parse_error is not None and generation.turn.parse_error.startswith("tool call 1:")
    assert generation.finish_reason == "stop"


@pytest.mark.parametrize("field_name", ["reasoning_content", "reasoning"])
def test_reasoning_is_kept_apart_from_the_content(server: tuple[Script, str], field_name: str) -> None:
    script, url = server
    script.default = reply({"content": "It is sunny.", field_name: "The user wants the weather."})
    with backend(url) as policy:
        (generation,) = policy.generate([HELLO], PARAMS)
    assert (generation.turn.content, generation.turn.reasoning) == (
        "It is sunny.",
        "The user wants the weather.",
    )


def test_think_tags_in_content_are_split_by_the_qwen3_parser(server: tuple[Script, str]) -> None:
    script, url = server
    script.default = reply({"content": "<think>\nPlan.\n</think>\n\nIt is sunny."})
    with backend(url, parser="qwen3") as policy:
        (generation,) = policy.generate([HELLO], PARAMS)
    assert (generation.turn.content, generation.turn.reasoning) == ("It is sunny.", "Plan.")


def test_a_reply_cut_at_max_tokens_finishes_with_length(server: tuple[Script, str]) -> None:
    script, url = server
    script.default = reply({"content": "It is"}, finish="length", usage=(40, 33))
    with backend(url) as policy:
        (generation,) = policy.generate([HELLO], PARAMS)
    assert (generation.finish_reason, generation.prompt_tokens, generation.completion_tokens) == (
        "length",
        40,
        33,
    )


# --- the request ----------------------------------------------------------------------------------


def test_the_request_carries_messages_tools_sampling_and_the_key(server: tuple[Script, str]) -> None:
    script, url = server
    script.default = echo
    history = [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}],
        },
        {"role": "tool", "content": {"temp": 21}},
        {"role": "user", "content": "Thanks!"},
    ]
    conversations = [Conversation(history, tools=[WEATHER_TOOL], turn=1, seed=42), Conversation(history[:1])]
    params = SamplingParams(temperature=0.7, top_p=0.9, max_new_tokens=33, seed=11, enable_thinking=False)
    with backend(url) as policy:
        policy.generate(conversations, params)

    first, second = sorted(script.requests, key=lambda r: len(r.body["messages"]), reverse=True)
    assert first.path == "/v1/chat/completions"
    assert first.headers["Authorization"] == f"Bearer {KEY}"
    assert first.body == {
        "model": "tiny-served",
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {
                        "id": "call_0_0",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    }
                ],
            },
            {"role": "tool", "content": '{"temp": 21}', "tool_call_id": "call_0_0"},
            {"role": "user", "content": "Thanks!"},
        ],
        "temperature": 0.7,
        "top_p": 0.9,
        "max_tokens": 33,
        "n": 1,
        "tools": [WEATHER_TOOL],
        "seed": 42,
        "chat_template_kwargs": {"enable_thinking": False},
    }
    assert "tools" not in second.body
    assert second.body["seed"] == row_seeds(conversations, params)[1] != 42


def test_a_loopback_server_may_go_without_a_key(
    server: tuple[Script, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    script, url = server
    script.default = echo
    monkeypatch.delenv(KEY_ENV)
    with backend(url) as policy:
        (generation,) = policy.generate([HELLO], SamplingParams(seed=None))
    assert generation.turn.content == "Weather in Paris?"
    assert "Authorization" not in script.requests[0].headers
    assert "seed" not in script.requests[0].body and "chat_template_kwargs" not in script.requests[0].body


def test_a_remote_server_needs_the_key_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(BackendError) as raised:
        backend("https://api.example.com/v1")
    assert str(raised.value) == (
        f"environment variable {KEY_ENV} is not set: the openai backend needs an API key for api.example.com "
        "(only a server on loopback may go without one)"
    )


@pytest.mark.parametrize(
    ("base_url", "endpoint"),
    [
        ("http://127.0.0.1:8000/v1", "http://127.0.0.1:8000/v1/chat/completions"),
        ("http://localhost:8000/v1/", "http://localhost:8000/v1/chat/completions"),
        ("https://api.example.com", "https://api.example.com/chat/completions"),
    ],
)
def test_the_endpoint_is_chat_completions_under_the_base_url(base_url: str, endpoint: str) -> None:
    assert endpoint_url(base_url) == endpoint


@pytest.mark.parametrize(
    ("base_url", "reason"),
    [
        ("127.0.0.1:8000/v1", "expected http(s)://host[:port]/path"),
        ("ftp://example.com/v1", "expected http(s)://host[:port]/path"),
        ("http://127.0.0.1:8000/v1/chat/completions", "give the API's base (e.g. .../v1)"),
    ],
)
def test_a_bad_base_url_is_a_setup_error(base_url: str, reason: str) -> None:
    with pytest.raises(BackendError, match=f"^base_url '{re.escape(base_url)}': .*{re.escape(reason)}"):
        endpoint_url(base_url)


# --- retries and failures -------------------------------------------------------------------------


def test_a_500_is_retried_with_jittered_backoff(
    server: tuple[Script, str], caplog: pytest.LogCaptureFixture
) -> None:
    script, url = server
    script.steps.extend([status(500, b'{"error": {"message": "engine restarting"}}'), status(502)])
    script.default = echo
    policy = backend(url, backoff_base_s=0.5, backoff_cap_s=8.0)
    with caplog.at_level(logging.WARNING), policy:
        (generation,) = policy.generate([HELLO], PARAMS)
    assert generation.turn.content == "Weather in Paris?"
    assert len(script.requests) == 3
    first, second = policy._sleep
    assert 0 <= first <= 0.5 and 0 <= second <= 1.0
    assert (
        f"POST {url}/chat/completions: HTTP 500 Internal Server Error: engine restarting; retry 1 of 2"
        in caplog.text
    )


def test_retries_end_in_an_error_naming_the_status_and_url(server: tuple[Script, str]) -> None:
    script, url = server
    script.default = status(503, b"upstream overloaded")
    with backend(url) as policy:
        (generation,) = policy.generate([HELLO], PARAMS)
    assert generation.finish_reason == "error"
    assert generation.error == (
        f"POST {url}/chat/completions: HTTP 503 Service Unavailable: upstream overloaded "
        "(gave up after 3 attempts)"
    )
    assert (generation.turn, generation.prompt_tokens, generation.completion_tokens) == (
        ParsedTurn(content=""),
        0,
        0,
    )
    assert len(script.requests) == 3


def test_a_429_waits_as_long_as_retry_after_says(server: tuple[Script, str]) -> None:
    script, url = server
    script.steps.extend(
        [status(429, headers={"Retry-After": "0"}), status(429, headers={"Retry-After": "120"})]
    )
    script.default = echo
    policy = backend(url, backoff_base_s=30.0, retry_after_cap_s=60.0)
    with policy:
        (generation,) = policy.generate([HELLO], PARAMS)
    assert generation.error is None
    assert policy._sleep == [0.0, 60.0]


def test_a_body_that_is_not_json_is_retried(server: tuple[Script, str]) -> None:
    script, url = server
    script.steps.append(not_json)
    script.default = echo
    with backend(url) as policy:
        (generation,) = policy.generate([HELLO], PARAMS)
    assert generation.turn.content == "Weather in Paris?"
    assert len(script.requests) == 2


def test_a_connection_closed_mid_response_is_retried(server: tuple[Script, str]) -> None:
    script, url = server
    script.steps.append(closed_midway)
    script.default = echo
    with backend(url) as policy:
        (generation,) = policy.generate([HELLO], PARAMS)
    assert generation.turn.content == "Weather in Paris?"
    assert len(script.requests) == 2


def test_a_refused_connection_fails_after_the_retries() -> None:
    with socket.socket() as placeholder:  # a port that nothing listens on once it is closed
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]
    with backend(f"http://127.0.0.1:{port}/v1", max_retries=1) as policy:
        (generation,) = policy.generate([HELLO], PARAMS)
        assert len(policy._sleep) == 1
    assert generation.error is not None
    assert generation.error.startswith(f"POST http://127.0.0.1:{port}/v1/chat/completions: ConnectError: ")
    assert generation.error.endswith("(gave up after 2 attempts)")


def test_a_stalled_server_times_out_within_bounded_time(server: tuple[Script, str]) -> None:
    script, url = server
    script.default = stall
    started = time.monotonic()
    with backend(url, timeout_s=0.3, max_retries=1) as policy:
        (generation,) = policy.generate([HELLO], PARAMS)
    assert time.monotonic() - started < 10
    assert generation.error == (
        f"POST {url}/chat/completions: timed out after 0.3 s (ReadTimeout) (gave up after 2 attempts)"
    )
    assert len(script.requests) == 2


def test_a_body_trickling_past_the_deadline_times_out(server: tuple[Script, str]) -> None:
    script, url = server
    script.default = trickle
    started = time.monotonic()
    with backend(url, timeout_s=0.5, max_retries=0) as policy:
        (generation,) = policy.generate([HELLO], PARAMS)
    assert time.monotonic() - started < 10  # the body alone would take 50 s
    assert generation.error == f"POST {url}/chat/completions: timed out after 0.5 s (ReadTimeout)"


def test_a_400_fails_at_once(server: tuple[Script, str]) -> None:
    script, url = server
    script.default = status(
        400, b'{"error": {"message": "This model\'s maximum context length is 4096 tokens."}}'
    )
    with backend(url) as policy:
        (generation,) = policy.generate([HELLO], PARAMS)
        assert policy._sleep == []
    assert generation.error == (
        f"POST {url}/chat/completions: HTTP 400 Bad Request: This model's maximum context length is 4096 "
        "tokens. (not retried)"
    )
    assert len(script.requests) == 1


def test_a_reply_without_choices_is_an_error(server: tuple[Script, str]) -> None:
    script, url = server
    script.default = status(200, b'{"object": "error", "message": "oops"}')
    with backend(url) as policy:
        (generation,) = policy.generate([HELLO], PARAMS)
    assert generation.error == (
        f"POST {url}/chat/completions: unexpected response shape (KeyError: 'choices'): "
        '{"object": "error", "message": "oops"}'
    )


def test_one_failing_conversation_leaves_the_others_in_order(server: tuple[Script, str]) -> None:
    script, url = server

    def fail_one(handler: Handler, body: dict[str, Any]) -> None:
        if body["messages"][-1]["content"] == "q3":
            status(400, b"no")(handler, body)
        else:
            echo(handler, body)

    script.default = fail_one
    batch = [Conversation([{"role": "user", "content": f"q{i}"}]) for i in range(6)]
    with backend(url, max_concurrency=4) as policy:
        results = policy.generate(batch, PARAMS)
    assert [r.turn.content for r in results] == ["q0", "q1", "q2", "", "q4", "q5"]
    assert [r.finish_reason for r in results] == ["stop"] * 3 + ["error"] + ["stop"] * 2


def test_no_more_than_max_concurrency_requests_are_in_flight(server: tuple[Script, str]) -> None:
    script, url = server
    script.default = gather(3)
    batch = [Conversation([{"role": "user", "content": f"q{i}"}]) for i in range(9)]
    with backend(url, max_concurrency=3) as policy:
        results = policy.generate(batch, PARAMS)
    assert [r.turn.content for r in results] == [f"q{i}" for i in range(9)]
    assert script.max_in_flight == 3


def test_the_key_never_reaches_logs_or_errors(
    server: tuple[Script, str], caplog: pytest.LogCaptureFixture
) -> None:
    script, url = server

    def leaky(handler: Handler, body: dict[str, Any]) -> None:  # a server that echoes the request headers
        status(
            401, json.dumps({"error": {"message": f"bad key: {handler.headers['Authorization']}"}}).encode()
        )(handler, body)

    script.steps.extend([status(500, f"saw {KEY}".encode()), echo])
    script.default = leaky
    with caplog.at_level(logging.DEBUG), backend(url) as policy:
        results = policy.generate([HELLO], PARAMS) + policy.generate([HELLO], PARAMS)
        shown = repr(policy)
    assert results[0].turn.content == "Weather in Paris?"
    assert (
        results[1].error
        == f"POST {url}/chat/completions: HTTP 401 Unauthorized: bad key: Bearer <redacted> (not retried)"
    )
    assert {r.name.split(".")[0] for r in caplog.records} >= {"httpx", "httpcore", "policies"}  # all did log
    assert KEY not in caplog.text
    assert all(KEY not in record.getMessage() for record in caplog.records)
    assert KEY not in shown


def test_load_backend_builds_the_openai_backend(server: tuple[Script, str]) -> None:
    script, url = server
    script.default = echo
    with load_backend(
        "openai",
        "tiny-served",
        base_url=url,
        api_key_env=KEY_ENV,
        max_concurrency=2,
        timeout_s=3,
        max_retries=1,
    ) as policy:
        assert isinstance(policy, OpenAIBackend)
        assert (policy.max_concurrency, policy.timeout_s, policy.max_retries) == (2, 3.0, 1)
        assert policy.generate([HELLO], PARAMS)[0].turn.content == "Weather in Paris?"


# --- structured calls survive the trip whatever their arguments ------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=60, deadline=None)
@given(
    name=st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,12}", fullmatch=True),
    arguments=st.dictionaries(st.text(max_size=6), JSON_VALUES, max_size=4),
)
def test_structured_calls_round_trip_through_the_parser(name: str, arguments: dict[str, Any]) -> None:
    message = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "x", "type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}
        ],
    }

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"choices": [{"message": message, "finish_reason": "tool_calls"}]})

    with backend("http://127.0.0.1:9/v1", transport=httpx.MockTransport(handler)) as policy:
        (generation,) = policy.generate([HELLO], PARAMS)
    assert generation.turn.tool_calls == (ToolCall("call_2_0", name, arguments),)
    assert (generation.turn.content, generation.turn.parse_error) == ("", None)
