"""OpenAI: which methods are metered and where their usage lives (minimal seed; expanded later)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._call import Endpoint, Kind, Reducer
from .._usage import Usage, to_count
from .._wrap import CLIENT
from .._wrapping import Target
from ._base import Provider

__all__ = ["PROVIDER"]


def _get(obj: Any, name: str) -> Any:
    if obj is None:
        return None
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


def chat_usage(u: Any, model: str | None, response_id: str | None) -> Usage | None:
    if u is None:
        return None
    prompt = to_count(_get(u, "prompt_tokens"))
    completion = to_count(_get(u, "completion_tokens"))
    if prompt is None and completion is None:
        return None
    prompt = prompt or 0
    completion = completion or 0
    total = to_count(_get(u, "total_tokens"))
    pd = _get(u, "prompt_tokens_details")
    cd = _get(u, "completion_tokens_details")
    return Usage(
        "openai", model, prompt, completion, total if total is not None else prompt + completion,
        cached_input_tokens=to_count(_get(pd, "cached_tokens")) or 0,
        reasoning_tokens=to_count(_get(cd, "reasoning_tokens")) or 0,
        audio_input_tokens=to_count(_get(pd, "audio_tokens")) or 0,
        audio_output_tokens=to_count(_get(cd, "audio_tokens")) or 0,
        response_id=response_id,
    )


class ChatReducer(Reducer):
    __slots__ = ("hide_usage_chunk",)

    def observe(self, chunk: Any) -> bool:
        u = getattr(chunk, "usage", None)
        if u is not None:
            self.exact = chat_usage(u, getattr(chunk, "model", None) or self.model, getattr(chunk, "id", None))
            choices = getattr(chunk, "choices", None)
            return bool(self.hide_usage_chunk and not choices)
        choices = getattr(chunk, "choices", None)
        if choices:
            delta = getattr(choices[0], "delta", None)
            content = getattr(delta, "content", None)
            if content:
                self.chars += len(content)
        return False


class ChatCompletions(Endpoint):
    provider = "openai"
    name = "chat.completions.create"

    def prepare(self, instance: Any, kwargs: dict[str, Any]) -> tuple[dict[str, Any], Any]:
        if kwargs.get("stream") is True:
            so = kwargs.get("stream_options")
            if not isinstance(so, Mapping) or "include_usage" not in so:
                new = dict(kwargs)
                new["stream_options"] = {**(so if isinstance(so, Mapping) else {}), "include_usage": True}
                return new, True
        return kwargs, False

    def kind(self, result: Any) -> Kind:
        return "stream" if (hasattr(result, "response") and hasattr(result, "__next__")) or hasattr(result, "__anext__") else "response"

    def usage(self, response: Any) -> Usage | None:
        return chat_usage(getattr(response, "usage", None), getattr(response, "model", None),
                          getattr(response, "id", None))

    def reducer(self, kwargs: Mapping[str, Any], hint: Any) -> Reducer:
        r = ChatReducer(self.provider, kwargs)
        r.hide_usage_chunk = bool(hint)
        return r


_CHAT = ChatCompletions()


def _targets() -> list[Target]:
    return [
        Target("openai.resources.chat.completions", "Completions.create", _CHAT),
        Target("openai.resources.chat.completions", "AsyncCompletions.create", _CHAT),
    ]


PROVIDER = Provider(
    "openai",
    _targets,
    client_tree={
        "chat": {"completions": {"create": _CHAT}},
        "with_options": CLIENT,
        "copy": CLIENT,
    },
)
