"""Each example runs offline as ``python examples/X.py`` (starting its own local servers), exits 0
and prints per-consumer totals that match what the LLM reported. All run at once to save time."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import API_KEY

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NAMES = ["openai_chatbot", "anthropic_chatbot", "async_streaming", "fastapi_app", "credits_policy",
         "gemini_chatbot", "bedrock_chatbot", "mistral_chatbot"]
_ENV_VARS = ("OPENAI_BASE_URL", "ANTHROPIC_BASE_URL", "OPENAI_API_KEY", "ANTHROPIC_API_KEY",
             "GOOGLE_GEMINI_BASE_URL", "GOOGLE_VERTEX_BASE_URL", "GEMINI_API_KEY", "GOOGLE_API_KEY",
             "AWS_ENDPOINT_URL_BEDROCK_RUNTIME", "AWS_ENDPOINT_URL", "MISTRAL_SERVER_URL",
             "MISTRAL_API_KEY",
             "AEROSTACK_BASE_URL", "AEROSTACK_API_KEY", "AEROSTACK_API_ID",
             "AEROSTACK_METER_DEFAULT_CONSUMER", "AEROSTACK_METER_SPOOL", "AEROSTACK_METER_DISABLED")


def _fresh_env(**extra: str) -> dict[str, str]:
    """A "fresh machine": none of the services named, so the example starts its own."""
    env = {k: v for k, v in os.environ.items() if k not in _ENV_VARS}
    env.update(extra)
    return env


def _start(name: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, str(EXAMPLES / f"{name}.py")], env=env, cwd=EXAMPLES.parent,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def runs(gateway: Any, mock_llm: Any) -> Iterator[dict[str, subprocess.Popen[str]]]:
    procs = {name: _start(name, _fresh_env()) for name in NAMES}
    # the same script against services named in the environment (here: the suite's own)
    procs["openai_chatbot@env"] = _start("openai_chatbot", _fresh_env(
        OPENAI_BASE_URL=mock_llm.url, OPENAI_API_KEY="x", AEROSTACK_BASE_URL=gateway.url,
        AEROSTACK_API_KEY=API_KEY, AEROSTACK_API_ID="api_example_env"))
    yield procs
    for proc in procs.values():
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def _output(runs: dict[str, subprocess.Popen[str]], name: str) -> str:
    out, err = runs[name].communicate(timeout=60)
    assert runs[name].returncode == 0, err
    return out


LINE = re.compile(r"^(usr_\w+): (\d+) (?:tokens reported by the API|credits expected), (\d+) billed", re.M)


def _reported_vs_billed(out: str) -> dict[str, tuple[int, int]]:
    return {m[1]: (int(m[2]), int(m[3])) for m in LINE.finditer(out)}


def test_openai_chatbot(runs: dict[str, subprocess.Popen[str]]) -> None:
    got = _reported_vs_billed(_output(runs, "openai_chatbot"))
    assert set(got) == {"usr_alice", "usr_bob", "usr_carol"}
    assert all(reported == billed > 0 for reported, billed in got.values()), got


def test_openai_chatbot_uses_the_services_in_the_environment(runs: dict[str, subprocess.Popen[str]],
                                                             gateway: Any) -> None:
    got = _reported_vs_billed(_output(runs, "openai_chatbot@env"))
    rows = [r for r in gateway.client.totals() if r["apiId"] == "api_example_env"]
    assert {r["consumerId"]: r["units"] for r in rows} == {user: billed for user, (_, billed) in got.items()}
    assert len(rows) == 3


def test_anthropic_chatbot(runs: dict[str, subprocess.Popen[str]]) -> None:
    out = _output(runs, "anthropic_chatbot")
    got = _reported_vs_billed(out)
    assert set(got) == {"usr_dana", "usr_erik"}
    assert all(reported == billed > 0 for reported, billed in got.values()), got
    assert "input_tokens=" in out and "output_tokens=" in out  # the "split" policy's metrics


def test_async_streaming(runs: dict[str, subprocess.Popen[str]]) -> None:
    got = _reported_vs_billed(_output(runs, "async_streaming"))
    assert len(got) == 12
    assert all(reported == billed > 0 for reported, billed in got.values()), got
    # the to_thread and carry_consumer calls made usr_00 and usr_01 more than a bare stream
    assert got["usr_00"][1] > got["usr_02"][1] and got["usr_01"][1] > got["usr_03"][1]


def test_fastapi_app(runs: dict[str, subprocess.Popen[str]]) -> None:
    out = _output(runs, "fastapi_app")
    assert "request without a token: HTTP 401" in out
    found = re.findall(r"^(usr_\w+): (\d+) tokens in JSON replies.*billed (\d+) tokens$", out, re.M)
    lines = {user: (int(replied), int(billed)) for user, replied, billed in found}
    assert set(lines) == {"usr_alice", "usr_bob"}, out
    bob_replied, bob_billed = lines["usr_bob"]
    alice_replied, alice_billed = lines["usr_alice"]
    assert bob_billed == bob_replied > 0  # async and sync endpoints
    assert alice_billed > alice_replied > 0  # plus the streamed reply, billed to her too


def test_credits_policy(runs: dict[str, subprocess.Popen[str]]) -> None:
    got = _reported_vs_billed(_output(runs, "credits_policy"))
    assert set(got) == {"usr_free", "usr_pro"}
    assert all(expected == billed > 0 for expected, billed in got.values()), got
    assert got["usr_pro"][1] > got["usr_free"][1]  # gpt-4o costs more per token


@pytest.mark.parametrize(("name", "users"), [
    ("gemini_chatbot", {"usr_fatima", "usr_gus"}),
    ("bedrock_chatbot", {"usr_hana", "usr_ivo"}),
    ("mistral_chatbot", {"usr_jo", "usr_kim"}),
])
def test_new_provider_examples(runs: dict[str, subprocess.Popen[str]], name: str, users: set[str]) -> None:
    out = _output(runs, name)
    got = _reported_vs_billed(out)
    assert set(got) == users, out
    assert all(reported == billed > 0 for reported, billed in got.values()), got
    if name == "bedrock_chatbot":
        assert "input_tokens=" in out and "output_tokens=" in out  # the "split" policy's metrics


def test_credits_policy_is_usable_as_a_library(tmp_path: Path) -> None:
    """The policy itself: ints only, cache parts priced apart, unknown models at the top price."""
    sys.path.insert(0, str(EXAMPLES))
    try:
        import credits_policy as cp
    finally:
        sys.path.remove(str(EXAMPLES))
    from aerostack_meter import Usage

    plain = cp.credits(Usage("openai", "gpt-4o-mini", 1000, 100, 1100))
    cached = cp.credits(Usage("openai", "gpt-4o-mini-2024-07-18", 1000, 100, 1100, cached_input_tokens=800))
    unknown = cp.credits(Usage("openai", "mystery-model", 1000, 100, 1100))
    assert plain == {"credits": 210} and cached == {"credits": 150}  # 150 + 60 ; 30 + 60 + 60
    assert unknown["credits"] > plain["credits"]
    assert all(type(v) is int for d in (plain, cached, unknown) for v in d.values())
