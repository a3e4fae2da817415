"""A call's worst case reads the request however the SDK holds it (SDK objects, JSON bodies,
several choices); real SDK calls against the mock LLM server."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from google import genai
from google.genai import types

import aerostack_meter as am

LONG = "word " * 800  # 4000 characters: estimated at 1000 input tokens


def test_gemini_chat_content_objects_count_as_input(meter_factory: Any, mock_llm: Any) -> None:
    """A chat session sends ``types.Content`` objects: their text is part of the worst case."""
    meter_factory(budget=am.Budget(limits={"u": 500}))
    client = genai.Client(api_key="k", http_options=types.HttpOptions(base_url=mock_llm.base_url))
    chat = client.chats.create(model="gemini-2.5-flash",
                               config=types.GenerateContentConfig(max_output_tokens=100))
    before = int(mock_llm.stats()["requests"])
    with am.consumer("u"), pytest.raises(am.BudgetExceededError) as info:
        chat.send_message(LONG)
    assert info.value.needed == 1000 + 100
    assert int(mock_llm.stats()["requests"]) == before  # nothing was sent


def test_a_system_instruction_in_the_config_counts_as_input(meter_factory: Any, mock_llm: Any) -> None:
    meter_factory(budget=am.Budget(limits={"u": 500}))
    client = genai.Client(api_key="k", http_options=types.HttpOptions(base_url=mock_llm.base_url))
    config = types.GenerateContentConfig(max_output_tokens=100, system_instruction=LONG)
    with am.consumer("u"), pytest.raises(am.BudgetExceededError) as info:
        client.models.generate_content(model="gemini-2.5-flash", contents="hi", config=config)
    assert info.value.needed == 1001 + 100  # "hi" + the instruction's 4000 characters


@dataclasses.dataclass(slots=True)
class _Slotted:
    content: str
    role: str = "user"


class _Plain:
    def __init__(self, content: Any) -> None:
        self.role = "user"
        self.content = content


@pytest.mark.parametrize("message", [
    pytest.param(lambda: __import__("mistralai.client.models", fromlist=["UserMessage"]).UserMessage(content=LONG),
                 id="mistralai-UserMessage"),
    pytest.param(lambda: types.Content(role="user", parts=[types.Part(text=LONG)]), id="genai-Content"),
    pytest.param(lambda: _Slotted(LONG), id="slotted-dataclass"),
    pytest.param(lambda: _Plain([{"type": "text", "text": LONG}]), id="plain-object"),
])
def test_text_in_request_objects_is_counted(message: Any) -> None:
    request = {"model": "m", "max_tokens": 10, "messages": [message()]}
    assert am.Budget().worst_case("mistral", request) == 1000 + 10
