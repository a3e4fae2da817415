"""OpenAI, declared: the endpoint paths metered at the base client, the stream helpers' close
hooks, and the ``wrap()`` tree.

Every client class (``OpenAI``, ``AsyncOpenAI``, the Azure ones, any ``base_url``) sends every call
through ``SyncAPIClient``/``AsyncAPIClient.request``: metering there (``_stainless.py``) covers every
surface that posts to a listed path, however it was reached (a method captured before ``init()``,
a cached ``with_raw_response`` resource, ``client.post(...)``, an SDK helper).
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
from ._stainless import REQUEST_METHODS, BaseClient

__all__ = ["PROVIDER", "chat_usage", "responses_usage"]

CHAT_CREATE = ChatEndpoint("chat.completions.create")
CHAT_PARSE = ChatEndpoint("chat.completions.parse")
RESPONSES_CREATE = ResponsesEndpoint("responses.create")
RESPONSES_PARSE = ResponsesEndpoint("responses.parse")
RESPONSES_COMPACT = ResponsesEndpoint("responses.compact")
COMPLETIONS_CREATE = CompletionsEndpoint("completions.create")
EMBEDDINGS_CREATE = EmbeddingsEndpoint("embeddings.create")


def _targets() -> list[Target]:
    """What the HTTP layer cannot see: the stream helpers' ``close()`` closes the HTTP response
    directly, never the raw stream the layer proxies (see ``_openai_endpoints``)."""
    out = []
    hook = {"": sync_close_hook, "Async": async_close_hook}
    for prefix, factory in hook.items():
        out += [
            Target("openai.lib.streaming.chat._completions", f"{prefix}ChatCompletionStream.close",
                   None, hook=factory),
            Target("openai.lib.streaming.responses._responses", f"{prefix}ResponseStream.close",
                   None, hook=factory),
        ]
    return out


# Every call passes through the base client; these endpoint paths are metered (POST only).
BASE_CLIENT = BaseClient("openai._base_client", {
    "/chat/completions": CHAT_CREATE,
    "/completions": COMPLETIONS_CREATE,
    "/embeddings": EMBEDDINGS_CREATE,
    "/responses": RESPONSES_CREATE,
    "/responses/compact": RESPONSES_COMPACT,
})


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
    base_client=BASE_CLIENT,
    client_tree={
        "chat": {"completions": _CHAT_NODE, **_RAW},
        "responses": _RESPONSES_NODE,
        "completions": {"create": COMPLETIONS_CREATE, **_RAW},
        "embeddings": {"create": EMBEDDINGS_CREATE, **_RAW},
        "beta": {
            "chat": {"completions": _CHAT_NODE, **_RAW},
            "responses": {"create": RESPONSES_CREATE, "compact": RESPONSES_COMPACT, **_RAW},
            **_RAW,
        },
        **_RAW,
        **REQUEST_METHODS,
        "with_options": CLIENT,
        "copy": CLIENT,
    },
)
