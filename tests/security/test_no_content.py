"""No prompt or completion text in any event, log line or spool row.

Real SDK calls (openai chat/stream/responses, anthropic messages/stream) with a distinctive prompt
go through a spool-enabled meter with DEBUG logging, first while the billing API fails (so the
usage sits in the spool), then delivered. The spool file (with its -wal and -shm), every captured
log record of the library and of the HTTP stack it uses, the stats and every event handed to
``before_send`` are scanned for the prompt and for the completion text the SDK returned. (The
SDKs' own DEBUG logs print request bodies; they are the SDKs', not ours, and are left out.)
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

import aerostack_meter as am
from aerostack_meter.servers import start_gateway, start_mock_llm

KEY = "ac_secret_content_key"
PROMPT_WORD = "Zanzibarquokka7f3a"  # the mock's reply repeats the prompt's words
PROMPT = f"please {PROMPT_WORD} summarise Übersetzung 秘密 {PROMPT_WORD}"
SDK_LOGGERS = ("openai", "anthropic")


def _texts(oc: Any, ac: Any) -> list[str]:
    """Make every kind of call; return the completion texts the caller received."""
    got = []
    msgs = [{"role": "user", "content": PROMPT}]
    r = oc.chat.completions.create(model="gpt-4o-mini", messages=msgs, user="usr_c")
    got.append(r.choices[0].message.content)
    chunks = list(oc.chat.completions.create(model="gpt-4o-mini", messages=msgs, stream=True,
                                             stream_options={"include_usage": True}))
    got.append("".join(c.choices[0].delta.content or "" for c in chunks if c.choices))
    resp = oc.responses.create(model="gpt-4o-mini", input=PROMPT, instructions=f"system {PROMPT_WORD}")
    got.append(resp.output_text)
    m = ac.messages.create(model="claude-3-5-haiku-latest", max_tokens=64, messages=msgs,
                           system=f"system {PROMPT_WORD}")
    got.append(m.content[0].text)
    events = list(ac.messages.create(model="claude-3-5-haiku-latest", max_tokens=64, messages=msgs,
                                     stream=True))
    got.append("".join(e.delta.text for e in events if e.type == "content_block_delta"))
    return got


def test_no_prompt_or_completion_text_is_kept_anywhere(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    spool = tmp_path / "spool.db"
    seen_events: list[Any] = []

    def keep(ev: Any) -> Any:
        seen_events.append(ev)
        return ev

    with start_gateway(keys=[KEY]) as gw, start_mock_llm() as llm:
        gw.client.set_faults(fail_rate=1.0, fail_statuses=[503])
        m = am.Meter(KEY, api_id="api", base_url=gw.url, spool_path=str(spool), flush_interval=0.02,
                     backoff_base=0.01, max_backoff=0.05, before_send=keep, instrument=False)
        oc = am.wrap(openai.OpenAI(base_url=llm.url, api_key="sk-mock", max_retries=0), meter=m,
                     consumer_id="usr_c")
        ac = am.wrap(anthropic.Anthropic(base_url=llm.anthropic_base_url, api_key="sk-mock",
                                         max_retries=0), meter=m, consumer_id="usr_c")
        completions = _texts(oc, ac)
        assert not m.flush(0.5)  # the usage waits in the spool
        assert m.stats().spooled == 5
        on_disk_waiting = b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())
        gw.client.clear_faults()
        assert m.flush(10)
        stats = m.stats()
        m.shutdown()
        billed = gw.client.totals_by_consumer()
    on_disk_after = b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())

    assert billed["usr_c"] > 0 and stats.events_sent == 5
    assert b"usr_c" in on_disk_waiting  # the scan does see what the spool keeps
    assert all(PROMPT_WORD in c for c in completions)  # the completions carry the distinctive word
    needles = {PROMPT_WORD, *(c for c in completions if c)}
    ours = [r for r in caplog.records if not r.name.startswith(SDK_LOGGERS)]
    assert any(r.name.startswith("aerostack_meter") for r in ours)
    text = "\n".join([r.getMessage() + str(r.args) + str(r.exc_text) for r in ours]
                     + [repr(e) for e in seen_events] + [repr(stats)])
    assert len(seen_events) == 5
    for needle in needles:
        assert needle not in text
        for blob in (on_disk_waiting, on_disk_after):
            for encoding in ("utf-8", "utf-16-le", "utf-16-be"):
                assert needle.encode(encoding) not in blob
