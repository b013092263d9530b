"""The simulated customer of τ-bench-style evaluation: a model that plays a task's instruction.

τ-bench scores an agent in conversation with a user it cannot see into: the user knows what it
wants (the task's `instruction`) and reveals it bit by bit, and it ends the conversation by saying
`###STOP###`. Any generation backend can play that user; the paper used a strong hosted model.

The simulator's conversation is the agent's, seen from the other side: what the agent said to the
user becomes the simulator's "user" turns, and what the user said becomes its own "assistant"
turns. Tool calls and their results are the agent's business and are left out, as is the agent's
system prompt. It opens, as τ-bench's does, with the agent greeting the customer, so that the
simulator's first turn is the customer's opening request.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from policies.backends import Conversation, GenerationBackend, SamplingParams

__all__ = ["GREETING", "STOP", "USER_PROMPT_PATH", "UserSimulator", "UserTurn", "load_user_prompt"]

STOP = "###STOP###"
GREETING = "Hi! How can I help you today?"
USER_PROMPT_PATH = Path(__file__).parent / "prompts" / "tau_user.md"
_PLACEHOLDER = "{instruction}"


def load_user_prompt(path: str | Path = USER_PROMPT_PATH) -> str:
    """The simulator's system prompt template; it must hold `{instruction}` where the task goes."""
    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"{source}: cannot read the user-simulator prompt ({exc.strerror})") from None
    _check_template(text, str(source))
    return text


def _check_template(text: str, where: str) -> None:
    if _PLACEHOLDER not in text:
        raise ValueError(f"{where}: the user-simulator prompt has no {_PLACEHOLDER} placeholder for the task")


@dataclass(frozen=True)
class UserTurn:
    """What the simulated user said. `stop` is τ-bench's end signal: `###STOP###` anywhere in it.

    `error` is set (and `text` empty) when the simulator's backend gave no turn at all.
    """

    text: str
    stop: bool
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None


class UserSimulator:
    """A backend and its sampling settings, playing the customer of each task.

    The simulator's settings are its own: the agent's temperature or token limit never reach it.
    """

    def __init__(
        self, backend: GenerationBackend, params: SamplingParams, *, prompt: str | None = None
    ) -> None:
        self.backend = backend
        self.params = params
        self.prompt = load_user_prompt() if prompt is None else prompt
        _check_template(self.prompt, "prompt")

    def conversation(
        self,
        instruction: str,
        agent_messages: Sequence[Mapping[str, Any]],
        *,
        turn: int = 0,
        seed: int | None = None,
    ) -> Conversation:
        """The simulator's side of the agent's conversation `agent_messages`, to continue with a user turn."""
        system = self.prompt.replace(_PLACEHOLDER, instruction)
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": system},
            {"role": "user", "content": GREETING},
        ]
        for message in agent_messages:
            role = message.get("role")
            if role == "user":
                messages.append({"role": "assistant", "content": str(message.get("content") or "")})
            elif role == "assistant" and not message.get("tool_calls"):
                messages.append({"role": "user", "content": str(message.get("content") or "")})
        return Conversation(messages=messages, turn=turn, seed=seed)

    def reply(self, conversations: Sequence[Conversation]) -> list[UserTurn]:
        """One user turn per conversation, generated in one batch."""
        turns = []
        for generation in self.backend.generate(conversations, self.params):
            if generation.error is not None:
                turns.append(UserTurn(text="", stop=False, error=generation.error))
                continue
            text = generation.turn.content
            turns.append(
                UserTurn(
                    text=text,
                    stop=STOP in text,
                    prompt_tokens=generation.prompt_tokens,
                    completion_tokens=generation.completion_tokens,
                )
            )
        return turns
