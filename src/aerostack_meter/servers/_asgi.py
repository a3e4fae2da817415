"""Small raw-ASGI helpers shared by the emulators (lean paths that skip Starlette's Request)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from ._runner import Receive, Scope, Send, mark_intentional_drop

__all__ = [
    "BodyTooLarge",
    "drop_response",
    "header",
    "json_bytes",
    "read_body",
    "send_bytes",
    "send_json",
]

Headers = Iterable[tuple[bytes, bytes]]


class BodyTooLarge(Exception):
    pass


def header(scope: Scope, name: bytes) -> str | None:
    """The first value of a request header (name in lower case), decoded as latin-1."""
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


async def read_body(receive: Receive, limit: int = 4 * 1024 * 1024) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


async def send_bytes(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes = b"application/json",
    headers: Headers = (),
) -> None:
    raw_headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
        *headers,
    ]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def send_json(send: Send, status: int, obj: Any, headers: Headers = ()) -> None:
    await send_bytes(send, status, json_bytes(obj), headers=headers)


async def drop_response(send: Send, status: int, body: bytes) -> None:
    """Start a response with a Content-Length, send part of the body, and abandon it.

    The caller must return right after; uvicorn then closes the connection, so the client sees
    a protocol error (a body shorter than announced).
    """
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body[: len(body) // 2], "more_body": True})
    mark_intentional_drop()
