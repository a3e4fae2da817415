"""Deterministic usage for the mock LLM server: pure functions, no I/O.

The formula (documented in docs/servers.md):

* words(text) = len(text.split())
* prompt tokens P: chat / messages / responses = words of every text in the request
  (messages, system, instructions, tool results) + 3 per message (input item); completions and
  embeddings = words of each prompt string (or the length of each token-id list).
* the reply is the words of the last user text, cycled, to `reply_words` words (default 10,
  header `x-mock-output-tokens`), capped by max_tokens / max_completion_tokens /
  max_output_tokens: V visible output tokens.
* reasoning R (`x-mock-reasoning`) is added to the output tokens; cache reads C
  (`x-mock-cache`) and cache writes W (`x-mock-cache-write`) are taken out of P, each clamped.
* Gemini only: tool-use prompt tokens T (`x-mock-tool-use-prompt`) are input reported apart
  from P (`toolUsePromptTokenCount`); the input is P + T.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

__all__ = [
    "USAGE_MODES",
    "ControlError",
    "Controls",
    "Tally",
    "Usage",
    "hostile",
    "reply_words",
    "words",
]

USAGE_MODES = ("normal", "null", "missing", "negative", "string", "huge")
PER_MESSAGE = 3
_FILLER = "ok"


class ControlError(ValueError):
    """An `x-mock-*` header (or server default) has a bad value."""


@dataclass(frozen=True)
class Controls:
    """The knobs of one mock request: server defaults overridden by `x-mock-*` headers."""

    latency_ms: float = 0.0
    chunk_delay_ms: float = 0.0
    cache: int = 0
    cache_write: int = 0
    cache_write_1h: int = 0
    reasoning: int = 0
    web_search: int = 0
    service_tier: str | None = None
    tool_use_prompt: int = 0
    error: int | None = None
    chunks: int | None = None
    output_tokens: int = 10
    usage: str = "normal"
    repeat_deltas: bool = False
    stream_error_after: int | None = None
    stream_error_event: int | None = None
    consumer: str | None = None

    def with_headers(self, headers: Mapping[str, str]) -> Controls:
        """Apply `x-mock-*` headers (names in lower case)."""
        changes: dict[str, Any] = {}
        for f in fields(self):
            name = "x-mock-" + f.name.replace("_", "-")
            if name in headers:
                changes[f.name] = _parse(f.name, headers[name])
        out = replace(self, **changes) if changes else self
        out.validate()
        return out

    def validate(self) -> None:
        for name in ("latency_ms", "chunk_delay_ms"):
            if getattr(self, name) < 0:
                raise ControlError(f"{name} must be >= 0")
        for name in _INT_FIELDS:
            if getattr(self, name) < 0:
                raise ControlError(f"{name} must be >= 0")
        if self.chunks is not None and self.chunks < 1:
            raise ControlError("chunks must be >= 1")
        if self.error is not None and not 400 <= self.error <= 599:
            raise ControlError("error must be an HTTP status in 400..599")
        if self.usage not in USAGE_MODES:
            raise ControlError(f"usage must be one of {', '.join(USAGE_MODES)}")
        for name in ("stream_error_after", "stream_error_event"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ControlError(f"{name} must be >= 0")


_INT_FIELDS = (
    "cache",
    "cache_write",
    "cache_write_1h",
    "reasoning",
    "web_search",
    "tool_use_prompt",
    "output_tokens",
)
_OPT_INT_FIELDS = {"error", "chunks", "stream_error_after", "stream_error_event"}
_FLOAT_FIELDS = {"latency_ms", "chunk_delay_ms"}


def _parse(name: str, raw: str) -> Any:
    raw = raw.strip()
    try:
        if name in _INT_FIELDS:
            return int(raw)
        if name in _OPT_INT_FIELDS:
            return None if raw.lower() in ("", "none", "off") else int(raw)
        if name in _FLOAT_FIELDS:
            return float(raw)
    except ValueError:
        raise ControlError(
            f"x-mock-{name.replace('_', '-')} must be a number, got {raw!r}"
        ) from None
    if name == "repeat_deltas":
        return raw.lower() in ("1", "true", "yes", "on")
    return raw or None if name in ("consumer", "service_tier") else raw


# -- counting -------------------------------------------------------------------------------------


def words(text: str) -> int:
    return len(text.split())


def _texts(content: Any) -> Iterable[str]:
    """Every text string in a message content (string, list of parts, nested tool results)."""
    if isinstance(content, str):
        yield content
    elif isinstance(content, list):
        for part in content:
            if isinstance(part, str):
                yield part
            elif isinstance(part, dict):
                for key in ("text", "content", "output"):
                    if key in part:
                        yield from _texts(part[key])


def _count_prompt(prompt: Any) -> int:
    """Completions/embeddings input: a string, a list of strings or token-id lists."""
    if isinstance(prompt, str):
        return words(prompt)
    if isinstance(prompt, list):
        if all(isinstance(x, int) and not isinstance(x, bool) for x in prompt):
            return len(prompt)
        return sum(_count_prompt(x) for x in prompt)
    return 0


@dataclass(frozen=True)
class Prompt:
    """The input side of a request: P and the text the reply echoes."""

    tokens: int
    last_user_text: str


def chat_prompt(body: Mapping[str, Any]) -> Prompt:
    messages = body.get("messages") or []
    total, last = 0, ""
    for message in messages if isinstance(messages, list) else []:
        if not isinstance(message, dict):
            continue
        text = " ".join(_texts(message.get("content")))
        total += words(text) + PER_MESSAGE
        if message.get("role") == "user" and text.strip():
            last = text
    return Prompt(total, last)


def anthropic_prompt(body: Mapping[str, Any]) -> Prompt:
    prompt = chat_prompt(body)
    system = " ".join(_texts(body.get("system")))
    return Prompt(prompt.tokens + words(system), prompt.last_user_text)


def responses_prompt(body: Mapping[str, Any]) -> Prompt:
    items = body.get("input")
    instructions = body.get("instructions")
    total = words(instructions) if isinstance(instructions, str) else 0
    if isinstance(items, str):
        return Prompt(total + words(items) + PER_MESSAGE, items)
    last = ""
    for item in items if isinstance(items, list) else []:
        if isinstance(item, str):
            text = item
        elif isinstance(item, dict):
            text = " ".join(_texts(item.get("content", item.get("output"))))
            if item.get("role") == "user" and text.strip():
                last = text
        else:
            continue
        total += words(text) + PER_MESSAGE
    return Prompt(total, last)


def gemini_prompt(body: Mapping[str, Any]) -> Prompt:
    """Gemini ``contents`` (a list of ``{role, parts: [{text}]}``) plus ``systemInstruction``."""
    contents = body.get("contents") or []
    total, last = 0, ""
    for content in contents if isinstance(contents, list) else []:
        if not isinstance(content, dict):
            continue
        text = " ".join(_texts(content.get("parts")))
        total += words(text) + PER_MESSAGE
        if content.get("role") in (None, "user") and text.strip():
            last = text
    system = body.get("systemInstruction", body.get("system_instruction"))
    if isinstance(system, dict):
        total += words(" ".join(_texts(system.get("parts"))))
    return Prompt(total, last)


def completion_prompt(body: Mapping[str, Any], key: str = "prompt") -> Prompt:
    prompt = body.get(key)
    text = prompt if isinstance(prompt, str) else ""
    if isinstance(prompt, list) and prompt and isinstance(prompt[-1], str):
        text = prompt[-1]
    return Prompt(_count_prompt(prompt), text)


def reply_words(prompt: Prompt, n: int) -> list[str]:
    """The reply: the last user text's words, cycled to `n` words."""
    source = prompt.last_user_text.split() or [_FILLER]
    return [source[i % len(source)] for i in range(n)]


def cap(body: Mapping[str, Any], wanted: int, *keys: str) -> tuple[int, bool]:
    """`wanted` capped by the first max-tokens key present; also whether it was capped."""
    for key in keys:
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return (min(wanted, value), value < wanted)
    return wanted, False


@dataclass(frozen=True)
class Usage:
    """One response's usage in neutral terms (P includes the cached and cache-written tokens;
    Gemini's tool-use prompt tokens T are input outside P)."""

    prompt: int
    visible: int
    cached: int = 0
    cache_write: int = 0
    reasoning: int = 0
    web_search: int = 0
    cache_write_1h: int = 0
    service_tier: str | None = None
    tool_use_prompt: int = 0

    @classmethod
    def build(cls, prompt: int, visible: int, controls: Controls, *, cache_writes: bool = True) -> Usage:
        """``cache_writes=False``: a response shape that reports none (``x-mock-cache-write`` is
        then ignored, so the tally counts what the response says)."""
        cached = min(controls.cache, prompt)
        cache_write = min(controls.cache_write, prompt - cached) if cache_writes else 0
        return cls(prompt, visible, cached, cache_write, controls.reasoning, controls.web_search,
                   min(controls.cache_write_1h, cache_write), controls.service_tier)

    @property
    def output(self) -> int:
        return self.visible + self.reasoning

    @property
    def input(self) -> int:
        return self.prompt + self.tool_use_prompt

    @property
    def total(self) -> int:
        return self.input + self.output

    def openai_chat(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt,
            "completion_tokens": self.output,
            "total_tokens": self.total,
            "prompt_tokens_details": {"cached_tokens": self.cached, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": self.reasoning,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }

    def openai_responses(self) -> dict[str, Any]:
        return {
            "input_tokens": self.prompt,
            "input_tokens_details": {
                "cached_tokens": self.cached,
                "cache_write_tokens": self.cache_write,
            },
            "output_tokens": self.output,
            "output_tokens_details": {"reasoning_tokens": self.reasoning},
            "total_tokens": self.total,
        }

    def openai_embeddings(self) -> dict[str, Any]:
        return {"prompt_tokens": self.prompt, "total_tokens": self.prompt}

    def anthropic(self, output_tokens: int | None = None) -> dict[str, Any]:
        usage: dict[str, Any] = {
            "input_tokens": self.prompt - self.cached - self.cache_write,
            "cache_creation_input_tokens": self.cache_write,
            "cache_read_input_tokens": self.cached,
            "cache_creation": {
                "ephemeral_5m_input_tokens": self.cache_write - self.cache_write_1h,
                "ephemeral_1h_input_tokens": self.cache_write_1h,
            },
            "output_tokens": self.output if output_tokens is None else output_tokens,
            "service_tier": self.service_tier or "standard",
        }
        if self.reasoning:
            usage["output_tokens_details"] = {"thinking_tokens": self.reasoning}
        if self.web_search:
            usage["server_tool_use"] = {
                "web_search_requests": self.web_search,
                "web_fetch_requests": 0,
            }
        return usage

    def anthropic_delta(self, output_tokens: int) -> dict[str, Any]:
        """`message_delta` usage: cumulative output plus the input and cache fields."""
        usage: dict[str, Any] = {
            "input_tokens": self.prompt - self.cached - self.cache_write,
            "cache_creation_input_tokens": self.cache_write,
            "cache_read_input_tokens": self.cached,
            "output_tokens": output_tokens,
        }
        if self.web_search:
            usage["server_tool_use"] = {
                "web_search_requests": self.web_search,
                "web_fetch_requests": 0,
            }
        return usage


    def gemini(self, visible: int | None = None) -> dict[str, Any]:
        """``usageMetadata``: ``promptTokenCount`` includes the cached part; thoughts and tool-use
        prompt tokens are reported apart; ``visible`` gives a stream chunk's running count."""
        shown = self.visible if visible is None else visible
        usage: dict[str, Any] = {
            "promptTokenCount": self.prompt,
            "candidatesTokenCount": shown,
            "totalTokenCount": self.input + shown + self.reasoning,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": self.prompt}],
        }
        if self.cached:
            usage["cachedContentTokenCount"] = self.cached
            usage["cacheTokensDetails"] = [{"modality": "TEXT", "tokenCount": self.cached}]
        if self.reasoning:
            usage["thoughtsTokenCount"] = self.reasoning
        if self.tool_use_prompt:
            usage["toolUsePromptTokenCount"] = self.tool_use_prompt
        return usage

    def bedrock_converse(self) -> dict[str, Any]:
        """Converse ``usage``: ``inputTokens`` excludes the cache parts, ``totalTokens`` includes them."""
        return {
            "inputTokens": self.prompt - self.cached - self.cache_write,
            "outputTokens": self.output,
            "totalTokens": self.total,
            "cacheReadInputTokens": self.cached,
            "cacheWriteInputTokens": self.cache_write,
        }

    def bedrock_metrics(self) -> dict[str, Any]:
        """``amazon-bedrock-invocationMetrics`` (input without the cache, like the headers)."""
        return {
            "inputTokenCount": self.prompt - self.cached - self.cache_write,
            "outputTokenCount": self.output,
            "invocationLatency": 1,
            "firstByteLatency": 1,
            "cacheReadInputTokenCount": self.cached,
            "cacheWriteInputTokenCount": self.cache_write,
        }

    def mistral(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt,
            "completion_tokens": self.output,
            "total_tokens": self.total,
            "prompt_tokens_details": {"cached_tokens": self.cached},
        }


_MISSING = object()


def hostile(usage: dict[str, Any], mode: str) -> Any:
    """The usage value to put on the wire in `mode`; `_MISSING` means "leave the key out"."""
    if mode == "normal":
        return usage
    if mode == "null":
        return None
    if mode == "missing":
        return _MISSING
    return _map_ints(usage, mode)


def put_usage(target: dict[str, Any], usage: dict[str, Any], mode: str, key: str = "usage") -> None:
    value = hostile(usage, mode)
    if value is not _MISSING:
        target[key] = value


def _map_ints(value: Any, mode: str) -> Any:
    if isinstance(value, dict):
        return {k: _map_ints(v, mode) for k, v in value.items()}
    if isinstance(value, int) and not isinstance(value, bool):
        if mode == "negative":
            return -(value or 1)
        if mode == "string":
            return str(value)
        return 2**70
    return value


# -- the running totals of usage actually sent ---------------------------------------------------

_TALLY_FIELDS = (
    "requests",
    "input_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "output_tokens",
    "reasoning_tokens",
    "total_tokens",
)


@dataclass
class Tally:
    """Usage returned with status 200 in normal mode: overall, per consumer, per endpoint."""

    total: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_TALLY_FIELDS, 0))
    by_consumer: dict[str, dict[str, int]] = field(default_factory=dict)
    by_endpoint: dict[str, dict[str, int]] = field(default_factory=dict)

    def add(self, usage: Usage, *, consumer: str, endpoint: str) -> None:
        values = {
            "requests": 1,
            "input_tokens": usage.input,
            "cached_input_tokens": usage.cached,
            "cache_write_tokens": usage.cache_write,
            "output_tokens": usage.output,
            "reasoning_tokens": usage.reasoning,
            "total_tokens": usage.total,
        }
        for bucket in (
            self.total,
            self.by_consumer.setdefault(consumer, dict.fromkeys(_TALLY_FIELDS, 0)),
            self.by_endpoint.setdefault(endpoint, dict.fromkeys(_TALLY_FIELDS, 0)),
        ):
            for key, value in values.items():
                bucket[key] += value

    def to_dict(self) -> dict[str, Any]:
        return {
            "total": dict(self.total),
            "by_consumer": {k: dict(v) for k, v in sorted(self.by_consumer.items())},
            "by_endpoint": {k: dict(v) for k, v in sorted(self.by_endpoint.items())},
        }
