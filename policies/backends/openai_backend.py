"""Any OpenAI-compatible chat-completions endpoint (hosted models, a vLLM server) over httpx.

Each conversation is one ``POST {base_url}/chat/completions``, at most ``max_concurrency`` in flight.
Endpoints fail in ordinary ways (rate limits, restarts, overloaded proxies), so a request is retried
on 429, 5xx, connection and protocol errors, timeouts and bodies that are not JSON, with exponential
backoff and full jitter (or the server's ``Retry-After``). What still fails becomes that
conversation's error; the batch goes on. Every attempt has a deadline, so a server that stalls or
trickles bytes costs time, never a hang.

The API key is read from an environment variable and sent only in the ``Authorization`` header: it
is never logged, and error text is scrubbed of it in case a server echoes it back.
"""

from __future__ import annotations

import email.utils
import ipaddress
import json
import logging
import os
import random
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import httpx

from policies.backends.base import (
    BackendError,
    Conversation,
    Generation,
    GenerationBackend,
    SamplingParams,
    failed,
    row_seeds,
)
from policies.backends.local import load_parser
from policies.parsing import HermesParser, ToolCallParser
from policies.rendering import normalize_messages
from policies.types import ParsedTurn

__all__ = ["OpenAIBackend", "chat_messages", "endpoint_url"]

logger = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
_SNIPPET = 200


class _Retryable(Exception):
    """An attempt failed in a way another attempt may not; carries the server's Retry-After, if any."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class _Failed(Exception):
    """The request failed for good: a client error, an unreadable response, or retries used up."""


class OpenAIBackend(GenerationBackend):
    """Generates through an OpenAI-compatible HTTP endpoint.

    Args:
        base_url: as OpenAI clients take it, e.g. ``http://127.0.0.1:8000/v1``; requests go to
            ``{base_url}/chat/completions``. ``None`` reads ``OPENAI_BASE_URL``, else OpenAI's own.
        model: the served model's name.
        parser: the tool-call format, for content that carries ``<tool_call>`` text because the
            server parses no tools (``parsing.PARSERS``).
        api_key_env: the environment variable holding the key. It may be unset only for a server on
            loopback (127.0.0.0/8, ::1, localhost), which then gets no ``Authorization`` header.
        max_concurrency: requests in flight at once.
        timeout_s: per attempt: connect, each read, and the whole response body.
        max_retries: further attempts after the first, for retryable failures.
        backoff_base_s, backoff_cap_s: retry ``k`` (from 0) waits a uniform draw from
            ``[0, min(cap, base * 2**k)]`` ("full jitter").
        retry_after_cap_s: the longest ``Retry-After`` that is honoured as given.
        transport: an httpx transport to use instead of the network (``httpx.MockTransport``).
        sleep: waits between attempts; tests pass a recorder.

    Sampling: ``temperature``, ``top_p``, ``max_tokens`` and ``seed`` are sent as given;
    ``enable_thinking`` goes as ``chat_template_kwargs`` (vLLM's convention), only when it is set.
    """

    name = "openai"

    def __init__(
        self,
        base_url: str | None,
        model: str,
        *,
        parser: str = "qwen2.5",
        api_key_env: str = "OPENAI_API_KEY",
        max_concurrency: int = 8,
        timeout_s: float = 120.0,
        max_retries: int = 4,
        backoff_base_s: float = 0.5,
        backoff_cap_s: float = 8.0,
        retry_after_cap_s: float = 60.0,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        _check_positive("max_concurrency", max_concurrency, integer=True)
        _check_positive("timeout_s", timeout_s)
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise BackendError(f"max_retries must be an integer >= 0, got {max_retries!r}")
        if not isinstance(model, str) or not model:
            raise BackendError(f"model must be the served model's name, got {model!r}")
        self.url = endpoint_url(base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL)
        self.model = model
        self.parser = load_parser(parser)
        self.max_concurrency = max_concurrency
        self.timeout_s = float(timeout_s)
        self.max_retries = max_retries
        self.backoff_base_s, self.backoff_cap_s = backoff_base_s, backoff_cap_s
        self.retry_after_cap_s = retry_after_cap_s
        self._api_key = os.environ.get(api_key_env) or None
        if self._api_key is None and not _is_loopback(httpx.URL(self.url).host):
            raise BackendError(
                f"environment variable {api_key_env} is not set: the openai backend needs an API key for "
                f"{httpx.URL(self.url).host} (only a server on loopback may go without one)"
            )
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        self._client = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(self.timeout_s),
            limits=httpx.Limits(max_connections=max_concurrency, max_keepalive_connections=max_concurrency),
            transport=transport,
        )
        self._random = random.Random()
        self._sleep = sleep

    def __repr__(self) -> str:  # names the endpoint, never the headers that carry the key
        return f"OpenAIBackend(url={self.url!r}, model={self.model!r})"

    def generate(self, conversations: Sequence[Conversation], params: SamplingParams) -> list[Generation]:
        if not conversations:
            return []
        seeds = row_seeds(conversations, params)
        workers = min(self.max_concurrency, len(conversations))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="openai-backend") as pool:
            return list(pool.map(self._one, conversations, seeds, [params] * len(conversations)))

    def close(self) -> None:
        self._client.close()

    def _one(self, conversation: Conversation, seed: int | None, params: SamplingParams) -> Generation:
        try:
            body = json.dumps(self._body(conversation, seed, params), ensure_ascii=False).encode()
        except (TypeError, ValueError) as error:
            return failed(f"cannot build the request: {error}")
        try:
            return self._generation(self._post(body), conversation.turn)
        except _Failed as error:
            return failed(self._scrub(str(error)))

    def _body(self, conversation: Conversation, seed: int | None, params: SamplingParams) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": chat_messages(conversation.messages),
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_tokens": params.max_new_tokens,
            "n": 1,
        }
        if conversation.tools:
            body["tools"] = list(conversation.tools)
        if seed is not None:
            body["seed"] = seed
        if params.enable_thinking is not None:
            body["chat_template_kwargs"] = {"enable_thinking": params.enable_thinking}
        return body

    def _post(self, body: bytes) -> Any:
        """The decoded JSON of a successful response, after retries; ``_Failed`` otherwise."""
        attempt = 0
        while True:
            try:
                return self._attempt(body)
            except _Retryable as error:
                reason = self._scrub(str(error))
                if attempt == self.max_retries:
                    attempts = f" (gave up after {attempt + 1} attempts)" if attempt else ""
                    raise _Failed(f"POST {self.url}: {reason}{attempts}") from None
                delay = self._delay(attempt, error.retry_after)
                attempt += 1
                logger.warning(
                    "POST %s: %s; retry %d of %d in %.2f s",
                    self.url,
                    reason,
                    attempt,
                    self.max_retries,
                    delay,
                )
                self._sleep(delay)

    def _attempt(self, body: bytes) -> Any:
        try:
            status, reason_phrase, headers, content = self._send(body)
        except httpx.TimeoutException as error:
            raise _Retryable(f"timed out after {self.timeout_s:g} s ({type(error).__name__})") from None
        except httpx.RequestError as error:  # connection refused or reset, closed mid-response, bad encoding
            raise _Retryable(f"{type(error).__name__}: {error or 'connection failed'}") from None
        if status == 429 or status >= 500:
            raise _Retryable(
                f"HTTP {status} {reason_phrase}: {_snippet(content)}",
                _retry_after(headers.get("Retry-After")),
            )
        if not 200 <= status < 300:
            raise _Failed(
                f"POST {self.url}: HTTP {status} {reason_phrase}: {_snippet(content)} (not retried)"
            )
        try:
            return json.loads(content)
        except ValueError:
            raise _Retryable(f"HTTP {status} with a body that is not JSON: {_snippet(content)}") from None

    def _send(self, body: bytes) -> tuple[int, str, httpx.Headers, bytes]:
        """One request; the body must arrive within ``timeout_s`` of sending, or it times out."""
        deadline = time.monotonic() + self.timeout_s
        headers = {"Content-Type": "application/json"}
        with self._client.stream("POST", self.url, content=body, headers=headers) as response:
            chunks = []
            for chunk in response.iter_bytes():
                chunks.append(chunk)
                if time.monotonic() > deadline:
                    raise httpx.ReadTimeout(
                        "response body still arriving at the deadline", request=response.request
                    )
            return response.status_code, response.reason_phrase, response.headers, b"".join(chunks)

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.retry_after_cap_s)
        return self._random.uniform(0.0, min(self.backoff_cap_s, self.backoff_base_s * 2**attempt))

    def _generation(self, response: Any, turn: int) -> Generation:
        try:
            choice = response["choices"][0]
            message = choice["message"]
            if not isinstance(message, Mapping):
                raise TypeError("message is not an object")
            parsed = self._parse(message, turn)
            usage = response.get("usage") or {}
            prompt_tokens, completion_tokens = (
                int(usage.get("prompt_tokens", 0)),
                int(usage.get("completion_tokens", 0)),
            )
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as error:
            raise _Failed(
                f"POST {self.url}: unexpected response shape ({type(error).__name__}: {error}): "
                f"{_snippet(json.dumps(response).encode())}"
            ) from None
        return Generation(
            turn=parsed,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            finish_reason="length" if choice.get("finish_reason") == "length" else "stop",
        )

    def _parse(self, message: Mapping[str, Any], turn: int) -> ParsedTurn:
        """The message as a parsed turn.

        Structured ``tool_calls`` are written back as the Hermes ``<tool_call>`` text the model
        generated and read by the parser, so a call whose arguments are not a JSON object is
        malformed by exactly the parser's rule (whole text as content, ``parse_error`` set). Content
        with no structured calls is parsed as is: a server without a tool parser leaves the tags in it.
        """
        content = message.get("content") or ""
        if not isinstance(content, str):
            raise TypeError("message content is not a string")
        calls = message.get("tool_calls") or []
        parser: ToolCallParser = self.parser
        if calls:
            blocks = "\n".join(_hermes_block(call) for call in calls)
            content = f"{content.rstrip()}\n{blocks}" if content.strip() else blocks
            parser = self.parser if isinstance(self.parser, HermesParser) else HermesParser()
        parsed = parser.parse(content, turn)
        reasoning = message.get("reasoning_content") or message.get("reasoning")
        return replace(parsed, reasoning=reasoning) if isinstance(reasoning, str) else parsed

    def _scrub(self, text: str) -> str:
        return text.replace(self._api_key, "<redacted>") if self._api_key else text


def endpoint_url(base_url: str) -> str:
    """``{base_url}/chat/completions``, after checking that ``base_url`` is an http(s) base URL."""
    try:
        url = httpx.URL(base_url)
    except (httpx.InvalidURL, TypeError) as error:
        raise BackendError(f"base_url {base_url!r}: not a URL ({error})") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise BackendError(
            f"base_url {base_url!r}: expected http(s)://host[:port]/path, e.g. http://127.0.0.1:8000/v1"
        )
    path = url.path.rstrip("/")
    if path.endswith("/chat/completions"):
        raise BackendError(
            f"base_url {base_url!r}: give the API's base (e.g. .../v1); /chat/completions is added to it"
        )
    return str(url.copy_with(path=f"{path}/chat/completions", query=None, fragment=None))


def chat_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``messages`` in the chat-completions wire format.

    ``normalize_messages`` gives every call an id and arguments as a dict; the API wants the
    arguments as JSON text. A tool message without ``tool_call_id`` gets the id of the call it
    answers (the k-th open call of the assistant turn before it), which hosted APIs require.
    """
    wire: list[dict[str, Any]] = []
    open_calls: deque[str] = deque()
    for message in normalize_messages(messages):
        if message["role"] == "assistant":
            open_calls.clear()
            for call in message.get("tool_calls") or []:
                function = call["function"]
                function["arguments"] = json.dumps(function["arguments"], ensure_ascii=False)
                open_calls.append(call["id"])
        elif message["role"] == "tool":
            if message.get("tool_call_id") in open_calls:
                open_calls.remove(message["tool_call_id"])
            elif "tool_call_id" not in message and open_calls:
                message["tool_call_id"] = open_calls.popleft()
        wire.append(message)
    return wire


def _hermes_block(call: Any) -> str:
    function = call.get("function") if isinstance(call, Mapping) else None
    if not isinstance(function, Mapping):
        return f"<tool_call>\n{json.dumps(call, ensure_ascii=False, default=str)}\n</tool_call>"
    arguments = function.get("arguments")
    if arguments is None or (isinstance(arguments, str) and not arguments.strip()):
        arguments = "{}"
    elif not isinstance(arguments, str):
        arguments = json.dumps(arguments, ensure_ascii=False)
    name = json.dumps(function.get("name"), ensure_ascii=False)
    return f'<tool_call>\n{{"name": {name}, "arguments": {arguments}}}\n</tool_call>'


def _snippet(content: bytes) -> str:
    """The server's error message, or the start of its body, on one line."""
    text = content.decode("utf-8", errors="replace")
    try:
        error = json.loads(text).get("error")
        message = error.get("message") if isinstance(error, Mapping) else error
        if isinstance(message, str) and message:
            text = message
    except (ValueError, AttributeError):
        pass
    text = " ".join(text.split())
    return (text[:_SNIPPET] + "...") if len(text) > _SNIPPET else (text or "(empty body)")


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date); ``None`` if absent or bad."""
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_positive(name: str, value: Any, *, integer: bool = False) -> None:
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not value > 0:
        raise BackendError(f"{name} must be a positive {'integer' if integer else 'number'}, got {value!r}")
