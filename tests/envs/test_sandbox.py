"""Functional tests of the sandbox: what tool calls return, batches, threads, sessions, the fallback."""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from envs.sandbox import (
    Limits,
    SandboxError,
    SandboxPool,
    SandboxWarning,
    ToolCallRequest,
    ToolResult,
    _launch,
    canonical_digest,
    default_pool,
    run_tool,
)

AIRLINE = Path("/work/shared/benchmarks/tau-bench/airline")

SQUARE = "def square(i):\n    return i * i\n"


@pytest.fixture(scope="module")
def pool():
    with SandboxPool(workers=2, limits=Limits(output_bytes=10)) as p:
        yield p


@pytest.fixture(scope="module")
def big_pool():
    with SandboxPool(workers=2) as p:
        yield p


# ---- what a call returns ---------------------------------------------------------------------------


def test_imports_at_the_top_and_helpers_beside_the_tool_work(big_pool):
    code = (
        "import math\n"
        "from collections import Counter\n"
        "\n"
        "def _helper(words):\n"
        "    return Counter(words).most_common(1)[0][0]\n"
        "\n"
        "def most_common(words):\n"
        "    return f'{_helper(words)} {math.sqrt(16):.0f}'\n"
    )
    result = big_pool.run(code, "most_common", {"words": ["a", "b", "b"]})
    assert result == ToolResult(ok=True, content="b 4", error=None)


def test_dicts_and_lists_come_back_as_json_with_non_ascii_kept(big_pool):
    code = "def info():\n    return {'name': 'Zoë', 'city': '東京', 'tags': ['é', 1, None]}\n"
    assert big_pool.run(code, "info", {}).content == '{"name": "Zoë", "city": "東京", "tags": ["é", 1, null]}'
    code = "def items():\n    return ['ü', {'k': 2.5}]\n"
    assert big_pool.run(code, "items", {}).content == '["ü", {"k": 2.5}]'


@pytest.mark.parametrize(
    ("expression", "content"),
    [
        ("None", "None"),
        ("42", "42"),
        ("'plain text'", "plain text"),
        ("(1, 'a')", "(1, 'a')"),
        ("{1}", "{1}"),
    ],
)
def test_other_values_come_back_through_str(big_pool, expression, content):
    assert big_pool.run(f"def value():\n    return {expression}\n", "value", {}).content == content


def test_a_list_that_json_cannot_hold_falls_back_to_str(big_pool):
    assert big_pool.run("def odd():\n    return [{1, 2}]\n", "odd", {}).content == "[{1, 2}]"


@pytest.mark.parametrize(
    ("code", "name", "arguments", "error"),
    [
        (SQUARE, "cube", {"i": 2}, "unknown tool 'cube'"),
        ("LIMIT = 3\n", "LIMIT", {}, "unknown tool 'LIMIT'"),
        (SQUARE, "square", {"j": 2}, "TypeError: square() got an unexpected keyword argument 'j'"),
        (SQUARE, "square", {}, "TypeError: square() missing 1 required positional argument: 'i'"),
        ("def bad():\n    raise ValueError('no such city')\n", "bad", {}, "ValueError: no such city"),
        ("def bad():\n    return {}['k']\n", "bad", {}, "KeyError: 'k'"),
        ("def bad(:\n", "bad", {}, "SyntaxError: invalid syntax (<tool>, line 1)"),
        ("import no_such_module\n", "f", {}, "ModuleNotFoundError: No module named 'no_such_module'"),
        ("def bad():\n    raise SystemExit(2)\n", "bad", {}, "SystemExit: 2"),
    ],
)
def test_error_results(big_pool, code, name, arguments, error):
    assert big_pool.run(code, name, arguments) == ToolResult(ok=False, content="", error=error)


def test_output_limit_counts_utf8_bytes(pool):
    """output_bytes=10 in this pool: ten ASCII or five two-byte characters fit, one more does not."""
    code = "def echo(text):\n    return text\n"
    assert pool.run(code, "echo", {"text": "x" * 10}).content == "x" * 10
    assert pool.run(code, "echo", {"text": "é" * 5}).content == "é" * 5
    for text, size in (("x" * 11, 11), ("é" * 6, 12)):
        assert pool.run(code, "echo", {"text": text}) == ToolResult.failure(
            f"output of {size} bytes is over the limit of 10"
        )


def test_each_call_gets_a_fresh_module_namespace_and_an_empty_scratch_folder():
    code = (
        "import os\n"
        "calls = []\n"
        "def touch():\n"
        "    calls.append(1)\n"
        "    open('mark', 'w').write('x')\n"
        "    return [len(calls), sorted(os.listdir('.'))]\n"
    )
    with SandboxPool(workers=1) as single:
        assert [single.run(code, "touch", {}).content for _ in range(3)] == ['[1, ["mark"]]'] * 3


def test_many_distinct_modules_on_one_worker_evict_and_recompile():
    """More modules than a worker caches (256): the oldest are dropped, and asking again recompiles."""
    codes = [f"def f():\n    return {i}\n" for i in range(300)]
    with SandboxPool(workers=1) as single:
        first = single.run_batch([ToolCallRequest(code, "f", {}) for code in codes])
        again = single.run_batch([ToolCallRequest(code, "f", {}) for code in codes[:50]])
    assert [r.content for r in first] == [str(i) for i in range(300)]
    assert [r.content for r in again] == [str(i) for i in range(50)]


# ---- batches and threads ---------------------------------------------------------------------------


def test_batch_results_come_back_in_order_with_good_and_bad_calls_mixed(big_pool):
    kinds = [
        (ToolCallRequest(SQUARE, "square", {"i": 7}), ToolResult(True, "49")),
        (ToolCallRequest(SQUARE, "nope", {}), ToolResult.failure("unknown tool 'nope'")),
        (
            ToolCallRequest("def f(:", "f", {}),
            ToolResult.failure("SyntaxError: invalid syntax (<tool>, line 1)"),
        ),
        (
            ToolCallRequest("def f():\n    return 1 / 0\n", "f", {}),
            ToolResult.failure("ZeroDivisionError: division by zero"),
        ),
        (
            ToolCallRequest(SQUARE, "square", {"i": "ab"}),
            ToolResult.failure("TypeError: can't multiply sequence by non-int of type 'str'"),
        ),
        (
            ToolCallRequest(SQUARE, "square", {"i": {1, 2}}),
            ToolResult.failure(
                "invalid tool call: arguments are not JSON-serializable: "
                "Object of type set is not JSON serializable"
            ),
        ),
        (
            ToolCallRequest(SQUARE, "square", [1]),  # type: ignore[arg-type]
            ToolResult.failure("invalid tool call: arguments must be a JSON object (dict), got list"),
        ),
    ]
    requests = [kinds[i % len(kinds)][0] for i in range(70)]
    expected = [kinds[i % len(kinds)][1] for i in range(70)]
    assert big_pool.run_batch(requests) == expected
    assert big_pool.run_batch([]) == []


def test_concurrent_use_from_threads(big_pool):
    failures: list[str] = []

    def work(offset: int) -> None:
        numbers = range(offset, offset + 60)
        results = big_pool.run_batch([ToolCallRequest(SQUARE, "square", {"i": n}) for n in numbers])
        if [r.content for r in results] != [str(n * n) for n in numbers]:
            failures.append(f"batch at {offset}")
        for n in numbers[:10]:
            if big_pool.run(SQUARE, "square", {"i": n}).content != str(n * n):
                failures.append(f"run {n}")

    threads = [threading.Thread(target=work, args=(1000 * k,)) for k in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


def test_run_tool_uses_a_shared_pool_per_limits():
    assert run_tool(SQUARE, "square", {"i": 3}) == ToolResult(True, "9")
    assert default_pool() is default_pool()
    small = Limits(output_bytes=1)
    assert run_tool(SQUARE, "square", {"i": 4}, limits=small) == ToolResult.failure(
        "output of 2 bytes is over the limit of 1"
    )
    assert default_pool(small) is not default_pool()


def test_a_forked_child_cannot_use_the_parents_pool_nor_harm_it(big_pool):
    pid = os.fork()
    if pid == 0:  # the child: report through the exit status only
        status = 1
        try:
            big_pool.run(SQUARE, "square", {"i": 2})
        except SandboxError as exc:
            status = 0 if "a forked child must create its own" in str(exc) else 2
        finally:
            os._exit(status)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert big_pool.run(SQUARE, "square", {"i": 3}) == ToolResult(True, "9")


def test_a_pool_whose_workers_cannot_restart_says_so_and_recovers_when_they_can():
    class BrokenLauncher:
        def start(self, limits):
            raise SandboxError("sandbox worker failed to start (simulated)")

    with SandboxPool(workers=1) as single:
        working = single._launcher
        single._launcher = BrokenLauncher()
        crash = single.run("import os\ndef f():\n    os._exit(1)\n", "f", {})
        assert crash == ToolResult.failure(
            "sandbox worker lost during the call: the worker exited with status 1"
        )
        with pytest.raises(
            SandboxError, match=r"starting one failed: sandbox worker failed to start \(simulated\)"
        ):
            single.run(SQUARE, "square", {"i": 2})
        single._launcher = working
        assert single.run(SQUARE, "square", {"i": 2}) == ToolResult(True, "4")


# ---- configuration errors --------------------------------------------------------------------------


def test_limits_reject_bad_values_and_name_all_of_them():
    with pytest.raises(ValueError) as caught:
        Limits(wall_time_s=0, memory_mb=10, max_processes=-1)
    assert str(caught.value) == (
        "invalid sandbox Limits: wall_time_s must be > 0, got 0; memory_mb must be >= 64, got 10; "
        "max_processes must be >= 0, got -1"
    )
    with pytest.raises(ValueError, match=r"cpu_time_s must be a finite number of seconds, got inf"):
        Limits(cpu_time_s=float("inf"))


def test_pool_arguments_are_checked_and_a_closed_pool_says_so():
    with pytest.raises(ValueError, match=r"SandboxPool needs workers >= 1, got 0"):
        SandboxPool(workers=0)
    closed = SandboxPool(workers=1)
    closed.close()
    with pytest.raises(SandboxError, match=r"the sandbox pool has been closed"):
        closed.run(SQUARE, "square", {"i": 1})


# ---- canonical digest ------------------------------------------------------------------------------


def test_canonical_digest_is_sha256_of_sorted_compact_json():
    text = '{"a":[1,"é"],"b":{"c":null,"d":true}}'
    expected = hashlib.sha256(text.encode("utf-8")).hexdigest()
    assert canonical_digest({"b": {"d": True, "c": None}, "a": [1, "é"]}) == expected


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=20,
)


def _reversed_keys(value):
    if isinstance(value, dict):
        return {k: _reversed_keys(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [_reversed_keys(v) for v in value]
    return value


@settings(max_examples=100)
@given(st.dictionaries(st.text(max_size=5), json_values, max_size=6))
def test_canonical_digest_ignores_key_order(state):
    assert canonical_digest(_reversed_keys(state)) == canonical_digest(state)


# ---- stateful sessions (τ-bench airline) -----------------------------------------------------------


@pytest.fixture(scope="module")
def airline():
    codes = json.loads((AIRLINE / "codes.json").read_text())
    tools = json.loads((AIRLINE / "tools.json").read_text())
    data = {p.stem: json.loads(p.read_text()) for p in sorted(AIRLINE.glob("*.json"))}
    del data["codes"], data["tools"]
    assert {t["function"]["name"] for t in tools} == set(codes)
    return codes, data


def test_airline_session_reads_writes_and_digests_the_state(big_pool, airline):
    codes, data = airline
    pristine = copy.deepcopy(data)
    with big_pool.session(codes, data) as session:
        read = session.call("get_reservation_details", {"reservation_id": "4WQ150"})
        assert read.ok and json.loads(read.content) == data["reservations"]["4WQ150"]
        assert session.digest() == canonical_digest(data)

        arguments = {
            "reservation_id": "4WQ150",
            "total_baggages": 6,
            "nonfree_baggages": 1,
            "payment_id": "gift_card_3576581",
        }
        write = session.call("update_reservation_baggages", arguments)
        assert write.ok

        # By hand: one more non-free bag costs 50 * (1 - 0) = 50, paid from the gift card.
        expected = copy.deepcopy(data)
        reservation = expected["reservations"]["4WQ150"]
        reservation["total_baggages"] = 6
        reservation["nonfree_baggages"] = 1
        reservation["payment_history"].append({"payment_id": "gift_card_3576581", "amount": 50})
        expected["users"]["chen_jackson_3290"]["payment_methods"]["gift_card_3576581"]["amount"] -= 50
        assert json.loads(write.content) == reservation

        state = session.state()
        assert state["reservations"]["4WQ150"] == reservation
        assert state == expected
        assert session.digest() == canonical_digest(expected) != canonical_digest(data)

        assert session.call("no_such_tool", {}) == ToolResult.failure("unknown tool 'no_such_tool'")
        state["users"].clear()  # a copy: the session's database does not change
        assert session.digest() == canonical_digest(expected)
    assert data == pristine  # the caller's database was copied into the worker, never changed


def test_equal_session_states_in_different_key_orders_have_equal_digests(big_pool):
    codes = {"put": "def put(data, key, value):\n    data['items'][key] = value\n    return 'ok'\n"}
    with big_pool.session(codes, {"items": {}, "meta": {"v": 1}}) as one:
        one.call("put", {"key": "a", "value": 1})
        one.call("put", {"key": "b", "value": [2]})
        with big_pool.session(codes, {"meta": {"v": 1}, "items": {}}) as other:
            other.call("put", {"key": "b", "value": [2]})
            other.call("put", {"key": "a", "value": 1})
            assert list(one.state()["items"]) == ["a", "b"]
            assert list(other.state()["items"]) == ["b", "a"]
            assert (
                one.digest()
                == other.digest()
                == canonical_digest({"items": {"a": 1, "b": [2]}, "meta": {"v": 1}})
            )


def test_a_session_whose_worker_times_out_is_broken():
    codes = {
        "hang": "def hang(data):\n    while True:\n        pass\n",
        "count": "def count(data):\n    return len(data['rows'])\n",
    }
    with (
        SandboxPool(workers=1, limits=Limits(wall_time_s=1)) as small,
        small.session(codes, {"rows": [1]}) as session,
    ):
        assert session.call("count", {}) == ToolResult(True, "1")
        timed_out = session.call("hang", {})
        assert not timed_out.ok and "wall-time limit of 1 s exceeded" in timed_out.error
        assert session.call("count", {}) == ToolResult.failure(f"session is broken: {timed_out.error}")
        with pytest.raises(SandboxError, match=r"session is broken: wall-time limit"):
            session.digest()
        assert small.run(SQUARE, "square", {"i": 5}) == ToolResult(True, "25")


def test_session_inputs_are_checked(big_pool):
    with pytest.raises(
        TypeError, match=r"session codes must map tool names to Python source; 'f' maps to int"
    ):
        big_pool.session({"f": 1}, {})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match=r"session data is not JSON-serializable: .*set"):
        big_pool.session({}, {"s": {1}})
    with pytest.raises(TypeError, match=r"session data must be a dict \(the domain database\), got list"):
        big_pool.session({}, [])  # type: ignore[arg-type]


def test_a_session_state_that_json_cannot_hold_is_an_error_not_a_crash(big_pool):
    codes = {"spoil": "def spoil(data):\n    data['s'] = {1}\n    return 'done'\n"}
    with big_pool.session(codes, {}) as session:
        assert session.call("spoil", {}) == ToolResult(True, "done")
        with pytest.raises(SandboxError, match=r"cannot read the session state: not JSON-serializable"):
            session.state()


# ---- without bubblewrap -----------------------------------------------------------------------------


@pytest.fixture
def fresh_launcher_choice(monkeypatch):
    """Forget which launcher was chosen and which warnings were given; monkeypatch restores both."""
    monkeypatch.setattr(_launch, "_chosen", {})
    monkeypatch.setattr(_launch, "_warned", set())


def test_forced_fallback_warns_once_naming_what_is_off(monkeypatch, fresh_launcher_choice, caplog):
    monkeypatch.setenv("FTRL_SANDBOX_BWRAP", "0")
    with caplog.at_level(logging.WARNING, logger="envs.sandbox._launch"):
        with pytest.warns(SandboxWarning) as record:
            first = SandboxPool(workers=1)
    messages = [str(w.message) for w in record]
    assert len(messages) == 1
    message = messages[0]
    assert message.startswith("FTRL sandbox: tool code runs WITHOUT bubblewrap because FTRL_SANDBOX_BWRAP=0")
    for protection in ("filesystem isolation", "network isolation", "process isolation"):
        assert protection in message
    assert [r.getMessage() for r in caplog.records] == [message]
    assert first.protections_off and all(p.split(" (")[0] in message for p in first.protections_off)
    with first:
        assert first.run(SQUARE, "square", {"i": 6}) == ToolResult(True, "36")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", SandboxWarning)  # the second pool must not warn again
        SandboxPool(workers=1).close()
