"""A FastAPI service that bills each request's LLM tokens to the authenticated user.

One dependency maps the request's ``Authorization: Bearer <token>`` to a user id and opens a
``consumer()`` scope for the rest of the request; every OpenAI call the endpoint makes (async,
sync in FastAPI's thread pool, or streamed back to the client) is billed to that user.

    python examples/fastapi_app.py                   # offline demo: a few requests, then the totals
    uvicorn fastapi_app:app --app-dir examples       # serve it (set the environment, see below)

Offline by default (a local mock LLM and gateway emulator); set OPENAI_BASE_URL, OPENAI_API_KEY,
AEROSTACK_BASE_URL and AEROSTACK_API_KEY to use the real services.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

import openai
from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

import aerostack_meter

MODEL = os.environ.get("OPENAI_MODEL", "gpt-4o-mini")

# Stand-in for your real authentication (a session store, a JWT's "sub" claim, ...).
TOKENS = {"tok_alice_123": "usr_alice", "tok_bob_456": "usr_bob"}


def authenticated_user(authorization: Annotated[str | None, Header()] = None) -> str:
    scheme, _, token = (authorization or "").partition(" ")
    user = TOKENS.get(token.strip()) if scheme.lower() == "bearer" else None
    if user is None:
        raise HTTPException(401, "unknown or missing bearer token", headers={"WWW-Authenticate": "Bearer"})
    return user


async def metered_user(user: Annotated[str, Depends(authenticated_user)]) -> AsyncIterator[str]:
    """Bill every LLM call made while handling this request to the authenticated user."""
    async with aerostack_meter.consumer(user):
        yield user


User = Annotated[str, Depends(metered_user)]


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # on_missing_consumer="raise": an LLM call outside a user's request fails instead of going unbilled
    aerostack_meter.init(api_id=os.environ.get("AEROSTACK_API_ID", "api_fastapi_demo"),
                         on_missing_consumer="raise")
    app.state.llm = openai.AsyncOpenAI()
    app.state.sync_llm = openai.OpenAI()
    yield
    await app.state.llm.close()
    await aerostack_meter.aflush(10)


app = FastAPI(lifespan=lifespan)


class Ask(BaseModel):
    question: str


@app.post("/chat")
async def chat(body: Ask, user: User, request: Request) -> dict[str, object]:
    llm: openai.AsyncOpenAI = request.app.state.llm
    r = await llm.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": body.question}])
    return {"user": user, "answer": r.choices[0].message.content,
            "tokens": r.usage.total_tokens if r.usage else 0}


@app.post("/chat/sync")
def chat_sync(body: Ask, user: User, request: Request) -> dict[str, object]:
    """A plain ``def`` endpoint: FastAPI runs it in a thread pool, with the request's context."""
    llm: openai.OpenAI = request.app.state.sync_llm
    r = llm.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": body.question}])
    return {"user": user, "answer": r.choices[0].message.content,
            "tokens": r.usage.total_tokens if r.usage else 0}


@app.post("/chat/stream")
async def chat_stream(body: Ask, user: User, request: Request) -> StreamingResponse:
    llm: openai.AsyncOpenAI = request.app.state.llm
    # Created (and so billed) while the request's scope is open; the body streams afterwards.
    stream = await llm.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": body.question}], stream=True)

    async def text() -> AsyncIterator[str]:
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                yield chunk.choices[0].delta.content

    return StreamingResponse(text(), media_type="text/plain")


def demo() -> None:
    """Drive the app in-process with a few users' requests, then print what each was billed."""
    from _local import billed, local_servers
    from fastapi.testclient import TestClient

    alice = {"Authorization": "Bearer tok_alice_123"}
    bob = {"Authorization": "Bearer tok_bob_456"}
    with local_servers():
        with TestClient(app) as http:  # runs the lifespan: init() on start, flush on exit
            replied = {"usr_alice": 0, "usr_bob": 0}
            for path, headers, question in [("/chat", alice, "What is metering?"),
                                            ("/chat", bob, "Hi"),
                                            ("/chat/sync", bob, "The same, from a sync endpoint"),
                                            ("/chat", alice, "And how is it billed?")]:
                r = http.post(path, json={"question": question}, headers=headers)
                r.raise_for_status()
                replied[r.json()["user"]] += r.json()["tokens"]
            streamed = http.post("/chat/stream", json={"question": "Stream a short answer"}, headers=alice)
            streamed.raise_for_status()
            anonymous = http.post("/chat", json={"question": "Free tokens?"})
        totals = billed()
        aerostack_meter.shutdown()
    print(f"request without a token: HTTP {anonymous.status_code}")
    for user, tokens in replied.items():
        line = f"{user}: {tokens} tokens in JSON replies"
        if user == "usr_alice":
            line += f" + 1 streamed reply ({len(streamed.text.split())} words)"
        if totals is not None:
            line += f"; billed {totals.get(user, {}).get('tokens', 0)} tokens"
        print(line)


if __name__ == "__main__":
    demo()
