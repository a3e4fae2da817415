"""Applications for the process-model matrix, configured from the environment like a user's app:
``import aerostack_meter.auto`` with AEROSTACK_API_KEY / AEROSTACK_BASE_URL / AEROSTACK_API_ID /
AEROSTACK_METER_STATE_DIR, and MATRIX_LLM (the mock LLM's URL).

``asgi``: an ASGI app (uvicorn, gunicorn's UvicornWorker); ``wsgi``: a WSGI app (gunicorn's sync
workers). ``GET /chat?consumer=C&n=N`` makes one chat call billed to C and answers its tokens.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import parse_qs

import openai

import aerostack_meter as am
import aerostack_meter.auto

_client: openai.OpenAI | None = None


def client() -> openai.OpenAI:
    global _client
    if _client is None:
        _client = openai.OpenAI(base_url=os.environ["MATRIX_LLM"], api_key="sk-mock", max_retries=0,
                                timeout=30)
    return _client


def chat(consumer: str, n: int) -> int:
    with am.consumer(consumer):
        r = client().chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": " ".join(["w"] * n)}],
            extra_headers={"x-mock-consumer": consumer})
    assert r.usage is not None
    return int(r.usage.total_tokens)


def _args(query: str) -> tuple[str, int]:
    q = parse_qs(query)
    return q.get("consumer", ["usr"])[0], int(q.get("n", ["3"])[0])


async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    import anyio

    consumer, n = _args(scope.get("query_string", b"").decode())
    units = await anyio.to_thread.run_sync(chat, consumer, n)
    body = str(units).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def wsgi(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    consumer, n = _args(environ.get("QUERY_STRING", ""))
    body = str(chat(consumer, n)).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def task(args: tuple[str, int]) -> int:
    """A pool task: one call (the pool's worker process meters it)."""
    return chat(*args)
