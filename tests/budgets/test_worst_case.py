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


def _bedrock(llm: Any) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client("bedrock-runtime", endpoint_url=llm.base_url, region_name="us-east-1",
                        aws_access_key_id="AKIDTEST", aws_secret_access_key="secret",
                        config=Config(retries={"max_attempts": 1}))


CLAUDE = "anthropic.claude-3-5-sonnet-20241022-v2:0"


@pytest.mark.parametrize("encode", [str, str.encode], ids=["str", "bytes"])
def test_bedrock_invoke_model_reads_its_json_body(meter_factory: Any, mock_llm: Any, encode: Any) -> None:
    """invoke_model's settings and text are in its JSON body: max_tokens=100 reserves 100 of
    output (not the model's context window), and the body's text is the input."""
    import json

    budget = am.Budget(limits={"u": 8_000})
    meter_factory(budget=budget)
    client = _bedrock(mock_llm)
    small = json.dumps({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 100,
                        "messages": [{"role": "user", "content": "hi"}]})
    with am.consumer("u"):
        client.invoke_model(modelId=CLAUDE, body=encode(small))  # 101 fits 8000
    assert budget.remaining("u") is not None and budget.remaining("u") < 8_000  # it was budgeted
    big = json.dumps({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 100, "system": LONG,
                      "messages": [{"role": "user", "content": [{"type": "text", "text": LONG}]}]})
    assert budget.worst_case("bedrock", {"modelId": CLAUDE, "body": encode(big)}) == 2000 + 100


@pytest.mark.parametrize(("body", "needed"), [
    ({"prompt": "x" * 400, "max_gen_len": 50}, 150),                                      # Llama
    ({"inputText": "x" * 400, "textGenerationConfig": {"maxTokenCount": 60}}, 160),       # Titan text
    ({"messages": [{"role": "user", "content": [{"text": "x" * 400}]}],
      "inferenceConfig": {"max_new_tokens": 70}}, 170),                                   # Nova
    ({"prompt": "x" * 400, "max_tokens": 80}, 180),                                       # Mistral
])
def test_each_bedrock_body_shape_is_read(body: dict[str, Any], needed: int) -> None:
    import json

    assert am.Budget().worst_case("bedrock", {"modelId": "some.model-v1:0", "body": json.dumps(body)}) == needed


def test_embeddings_reserve_no_output(meter_factory: Any, mock_llm: Any) -> None:
    """An embedding produces no output: its worst case is its input alone, not the model's context
    window (OpenAI embeddings.create; a Bedrock embedding model's invoke_model)."""
    import json

    import openai

    budget = am.Budget(limits={"u": 50})
    meter_factory(budget=budget)
    client = openai.OpenAI(base_url=mock_llm.url, api_key="x", max_retries=0)
    with am.consumer("u"):
        r = client.embeddings.create(model="text-embedding-3-large", input="hi")
    assert budget.remaining("u") == 50 - r.usage.total_tokens
    titan = {"modelId": "amazon.titan-embed-text-v2:0", "body": json.dumps({"inputText": "x" * 400})}
    assert budget.worst_case("bedrock", titan) == 100


def test_n_choices_multiply_the_output(meter_factory: Any, mock_llm: Any) -> None:
    """n=3 may bill up to 3 x max_tokens of output: the worst case counts every choice."""
    import openai

    meter_factory(budget=am.Budget(limits={"u": 500}))
    client = openai.OpenAI(base_url=mock_llm.url, api_key="x", max_retries=0)
    before = int(mock_llm.stats()["requests"])
    with am.consumer("u"), pytest.raises(am.BudgetExceededError) as info:
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}],
                                       max_tokens=400, n=3)
    assert info.value.needed == 1 + 3 * 400
    assert int(mock_llm.stats()["requests"]) == before


@pytest.mark.parametrize(("provider", "request_", "needed"), [
    ("openai", {"model": "gpt-3.5-turbo-instruct", "prompt": "x" * 400, "max_tokens": 10, "n": 2, "best_of": 5}, 150),
    ("gemini", {"model": "gemini-2.5-flash", "contents": "x" * 400,
                "config": types.GenerateContentConfig(max_output_tokens=50, candidate_count=4)}, 300),
    ("gemini", {"model": "gemini-2.5-flash", "contents": "x" * 400,
                "config": {"maxOutputTokens": 50, "candidateCount": 2}}, 200),
    ("openai", {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x" * 400}],
                "max_completion_tokens": 100, "n": 1}, 200),
])
def test_every_requested_output_is_reserved(provider: str, request_: dict[str, Any], needed: int) -> None:
    assert am.Budget().worst_case(provider, request_) == needed


def test_n_choices_multiply_the_priced_output() -> None:
    one = am.Budget(unit="cost").worst_case("openai", {"model": "gpt-4o-mini", "messages": "x" * 400,
                                                       "max_tokens": 500})
    three = am.Budget(unit="cost").worst_case("openai", {"model": "gpt-4o-mini", "messages": "x" * 400,
                                                         "max_tokens": 500, "n": 3})
    assert (one, three) == (525, 25 + 3 * 500)
