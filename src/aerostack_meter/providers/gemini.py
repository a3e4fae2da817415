"""Google Gemini (``google-genai``, ``from google import genai``): which methods are metered and
where their usage lives. Gemini API and Vertex AI (``vertexai=True``) share every class.

Metered at the SDK's per-request methods ``Models._generate_content`` and
``Models._generate_content_stream`` (and their ``AsyncModels`` twins): every public surface sends
through them, so ``generate_content``, ``generate_content_stream``, ``client.aio`` and chat sessions
(``chats.create(...).send_message`` / ``send_message_stream``, sync and async) are metered, and so is
each request the SDK makes on its own inside one public call (automatic function calling rounds,
automatic continuation hops), each from its own ``usage_metadata``. ``count_tokens`` (and
``compute_tokens``, ``embed_content``) are never metered. Usage rules: :mod:`._gemini_usage` and
docs/providers/gemini.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._call import Kind, Reducer
from .._estimate import estimate_input_tokens, tokens_from_chars
from .._usage import Usage
from .._wrap import HELPER
from ._base import Provider, ReaderEndpoint, Target, method_target, read_field
from ._gemini_usage import (
    Counts,
    build_usage,
    merge_counts,
    read_counts,
    response_meta,
    response_usage,
)

__all__ = ["PROVIDER"]


def _candidate(chunk: Any) -> tuple[int, bool]:
    """Output characters of one chunk's first candidate (text and thought parts), and whether it
    says the candidate finished."""
    candidates = read_field(chunk, "candidates")
    if not candidates:
        return 0, False
    first = candidates[0]
    return (_text_chars(read_field(read_field(first, "content"), "parts") or ()),
            read_field(first, "finish_reason") is not None)


def _text_chars(parts: Any) -> int:
    """Characters of the text (and thought) parts of a candidate's content."""
    chars = 0
    for part in parts:
        text = read_field(part, "text")
        if isinstance(text, str):
            chars += len(text)
    return chars


def _plain(value: Any, depth: int = 0) -> Any:
    """Request contents as plain data (SDK ``Content``/``Part`` models dumped) for estimates."""
    if depth > 6:
        return None
    if hasattr(value, "model_dump"):
        return value.model_dump(exclude_none=True)
    if isinstance(value, (list, tuple)):
        return [_plain(v, depth + 1) for v in value]
    return value


class GeminiReducer(Reducer):
    """A ``generate_content_stream`` request: every chunk's usage is the count so far, so the last
    one is the stream's (a field the last chunk leaves out keeps the chunk before's value); exact
    once a chunk says the candidate finished, an estimate otherwise. Chunks' usage objects are only
    kept (the last two) and read when the stream ends: the per-chunk cost stays a few lookups."""

    __slots__ = ("finished", "last", "prev", "slow")

    def __init__(self, provider: str, kwargs: Mapping[str, Any]) -> None:
        Reducer.__init__(self, provider, kwargs)  # not super(): this runs before every first chunk
        self.last: Any = None
        self.prev: Any = None
        self.finished = False
        self.slow = False  # chunks that are not the SDK's models (JSON dicts): read field by field

    def observe(self, event: Any) -> bool:
        # The per-chunk path: the SDK's models' declared fields (pydantic 2 keeps each in the
        # instance's __dict__). An attribute read of a pydantic model is not specialized by the
        # interpreter (the class has __getattr__: ~415 instructions a read on CPython 3.11, a
        # dict subscript ~200): a chunk and its first candidate are read from their __dict__,
        # the candidate's one part (the common chunk) without an iterator, and what every chunk
        # repeats (model, response id) is compared before it is checked. Anything else (a JSON
        # dict, an SDK without a field) goes the general way. All reads come before any write:
        # a chunk that fails half-way is read again, whole, the general way.
        if not self.slow:
            try:
                d = event.__dict__
                meta = d["usage_metadata"]
                model = d["model_version"]
                rid = d["response_id"]
                candidates = d["candidates"]
                chars = 0
                finished = False
                if candidates:
                    first = candidates[0].__dict__
                    content = first["content"]
                    finished = first["finish_reason"] is not None
                    if content is not None:
                        parts = content.parts
                        if parts:
                            try:
                                [part] = parts
                            except ValueError:  # several parts
                                chars = _text_chars(parts)
                            else:
                                text = part.text
                                if text.__class__ is str or isinstance(text, str):
                                    chars = len(text)
            except (AttributeError, KeyError):  # not a GenerateContentResponse
                self.slow = True
                return self.observe(event)
        else:
            meta, model, rid = response_meta(event)
            chars, finished = _candidate(event)
        if meta is not None:
            self.prev = self.last
            self.last = meta
        # the last non-empty string wins; the same one, as every chunk repeats it, changes nothing
        if model != self.model and model and isinstance(model, str):
            self.model = model
        if rid != self.response_id and rid and isinstance(rid, str):
            self.response_id = rid
        if chars:
            self.chars += chars
        if finished:
            self.finished = True
        return False

    def _counts(self) -> Counts | None:
        last = read_counts(self.last)
        if last is None:  # no usage yet, or usage that cannot be trusted
            return None
        earlier = read_counts(self.prev)
        return merge_counts(earlier, last) if earlier is not None else last

    def final(self, complete: bool) -> Usage | None:
        if self.finished and self.exact is None:
            counts = self._counts()
            if counts is not None:
                self.exact = build_usage(counts, self.model, self.response_id)
        return super().final(complete)

    def partial(self) -> Usage | None:
        counts = self._counts()
        return build_usage(counts, self.model, self.response_id) if counts is not None else None

    def estimate_when_complete(self) -> bool:
        # ended without a finish reason: bill what is known (untrustworthy usage: missing)
        return self._counts() is not None

    def estimate(self) -> Usage:
        if self.partial() is not None:
            return super().estimate()
        config = self.kwargs.get("config")
        system = read_field(config, "system_instruction") if config is not None else None
        inp = estimate_input_tokens({"content": _plain(self.kwargs.get("contents")),
                                     "system": _plain(system)})
        out = tokens_from_chars(self.chars) if self.chars else 0
        return Usage(self.provider, self.model, inp, out, inp + out, response_id=self.response_id,
                     estimated=True)


class GenerateContent(ReaderEndpoint):
    """One Gemini request: a ``GenerateContentResponse``, or a stream of them."""

    def __init__(self, name: str, returns: Kind) -> None:
        super().__init__("gemini", name, response=response_usage, returns=returns)

    def reducer(self, kwargs: Mapping[str, Any], hint: Any) -> Reducer:
        return GeminiReducer(self.provider, kwargs)


GENERATE = GenerateContent("models.generate_content", "response")
GENERATE_STREAM = GenerateContent("models.generate_content_stream", "stream")

_MODELS = "google.genai.models"


def _targets() -> list[Target]:
    out = []
    for cls, is_async in (("Models", False), ("AsyncModels", True)):
        for method, endpoint in (("_generate_content", GENERATE), ("_generate_content_stream", GENERATE_STREAM)):
            out.append(method_target(_MODELS, f"{cls}.{method}", endpoint, is_async, endpoint.returns))
    return out


# wrap(client): the public methods are evaluated with the proxy as ``self`` so that their calls to
# the per-request methods go through it; chat sessions get the proxied ``models`` as ``_modules``.
_MODELS_NODE: dict[str, Any] = {
    "generate_content": HELPER,
    "generate_content_stream": HELPER,
    "_generate_content_with_continuation": HELPER,  # 3.x: continuation hops
    "_generate_content_stream_with_continuation": HELPER,
    "_generate_content": GENERATE,
    "_generate_content_stream": GENERATE_STREAM,
}
_CHATS_NODE: dict[str, Any] = {"create": HELPER, "_modules": _MODELS_NODE}

PROVIDER = Provider(
    name="gemini",
    package="google.genai",
    distribution="google-genai",
    versions=">=1.20,<4",
    targets=_targets,
    client_tree={
        "models": _MODELS_NODE,
        "chats": _CHATS_NODE,
        "aio": {"models": _MODELS_NODE, "chats": _CHATS_NODE},
    },
)
