"""OpenAI: which methods are metered (patch targets and the ``wrap()`` tree).

Every client class (``OpenAI``, ``AsyncOpenAI``, the Azure ones, any ``base_url``) shares the same
resource classes, so patching the resource classes covers them all. The ``parse``/``stream``
helpers are covered where they send: ``parse`` posts itself (patched), ``stream`` calls ``create``
(patched; a re-entrancy guard makes any helper that calls another metered method count once).
Coverage, usage rules and what is relied on: docs/providers/openai.md.
"""

from __future__ import annotations

from typing import Any

from .._wrap import CLIENT, HELPER
from .._wrapping import Target
from ._base import Provider
from ._openai_endpoints import (
    ChatEndpoint,
    CompletionsEndpoint,
    EmbeddingsEndpoint,
    ResponsesEndpoint,
    async_close_hook,
    sync_close_hook,
)
from ._openai_usage import chat_usage, responses_usage

__all__ = ["PROVIDER", "chat_usage", "responses_usage"]

CHAT_CREATE = ChatEndpoint("chat.completions.create")
CHAT_PARSE = ChatEndpoint("chat.completions.parse")
RESPONSES_CREATE = ResponsesEndpoint("responses.create")
RESPONSES_PARSE = ResponsesEndpoint("responses.parse")
RESPONSES_COMPACT = ResponsesEndpoint("responses.compact")
COMPLETIONS_CREATE = CompletionsEndpoint("completions.create")
EMBEDDINGS_CREATE = EmbeddingsEndpoint("embeddings.create")

_CHAT = "openai.resources.chat.completions"  # a module (1.x) or package re-exporting the classes
_RESPONSES = "openai.resources.responses.responses"
_BETA_RESPONSES = "openai.resources.beta.responses.responses"  # 2.x+: a different class, same wire shape


def _targets() -> list[Target]:
    """Patch targets; those the installed SDK lacks are skipped."""
    out = []
    for prefix in ("", "Async"):
        out += [
            Target(_CHAT, f"{prefix}Completions.create", CHAT_CREATE),
            Target(_CHAT, f"{prefix}Completions.parse", CHAT_PARSE),
            # 1.40-era: a separate beta class whose parse calls chat create (counted once: guard)
            Target("openai.resources.beta.chat.completions", f"{prefix}Completions.parse", CHAT_PARSE),
            Target(_RESPONSES, f"{prefix}Responses.create", RESPONSES_CREATE),
            Target(_RESPONSES, f"{prefix}Responses.parse", RESPONSES_PARSE),
            Target(_RESPONSES, f"{prefix}Responses.compact", RESPONSES_COMPACT),
            Target(_BETA_RESPONSES, f"{prefix}Responses.create", RESPONSES_CREATE),
            Target(_BETA_RESPONSES, f"{prefix}Responses.compact", RESPONSES_COMPACT),
            Target("openai.resources.completions", f"{prefix}Completions.create", COMPLETIONS_CREATE),
            Target("openai.resources.embeddings", f"{prefix}Embeddings.create", EMBEDDINGS_CREATE),
        ]
    hook = {"": sync_close_hook, "Async": async_close_hook}
    for prefix, factory in hook.items():
        out += [
            Target("openai.lib.streaming.chat._completions", f"{prefix}ChatCompletionStream.close",
                   None, hook=factory),
            Target("openai.lib.streaming.responses._responses", f"{prefix}ResponseStream.close",
                   None, hook=factory),
        ]
    return out


_RAW = {"with_raw_response": HELPER, "with_streaming_response": HELPER}
_CHAT_NODE: dict[str, Any] = {"create": CHAT_CREATE, "parse": CHAT_PARSE, "stream": HELPER, **_RAW}
_RESPONSES_NODE: dict[str, Any] = {
    "create": RESPONSES_CREATE, "parse": RESPONSES_PARSE, "compact": RESPONSES_COMPACT, "stream": HELPER,
    **_RAW,
}

PROVIDER = Provider(
    name="openai",
    package="openai",
    versions=">=1.40,<4",
    targets=_targets,
    client_tree={
        "chat": {"completions": _CHAT_NODE},
        "responses": _RESPONSES_NODE,
        "completions": {"create": COMPLETIONS_CREATE, **_RAW},
        "embeddings": {"create": EMBEDDINGS_CREATE, **_RAW},
        "beta": {
            "chat": {"completions": _CHAT_NODE},
            "responses": {"create": RESPONSES_CREATE, "compact": RESPONSES_COMPACT, **_RAW},
        },
        **_RAW,
        "with_options": CLIENT,
        "copy": CLIENT,
    },
)
