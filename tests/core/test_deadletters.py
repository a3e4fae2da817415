"""The dead-letter store's resend (``aerostack-meter drain --retry-dead``): dead letters that live
processes add meanwhile are kept, and an interrupted run is finished without sending twice."""

from __future__ import annotations

from pathlib import Path

import pytest

from aerostack_meter._deadletter import DeadLetters
from aerostack_meter.sinks import Batch, SendResult

OK = SendResult("ok")


def letter(i: int) -> Batch:
    return Batch(f"usr_{i}", "api", "tokens", 10 + i, 1, f"am-key-{i}")


def test_letters_added_while_a_retry_runs_are_kept(tmp_path: Path) -> None:
    store = DeadLetters(str(tmp_path))
    for i in range(3):
        assert store.add(letter(i), SendResult("fatal", reason="insufficient_funds"))
    sent: list[str] = []

    def send(batch: Batch) -> SendResult:
        sent.append(batch.consumer_id)
        # a live process refused for lack of funds right now: a new dead letter
        assert DeadLetters(str(tmp_path)).add(letter(10 + len(sent)), SendResult("fatal", reason="insufficient_funds"))
        return OK

    assert store.retry(send) == (3, 0, 0)
    assert sent == ["usr_0", "usr_1", "usr_2"]
    entries, bad = store.read()
    assert ([e["consumerId"] for e in entries], bad) == (["usr_11", "usr_12", "usr_13"], 0)


def test_an_interrupted_retry_is_finished_without_sending_twice(tmp_path: Path) -> None:
    store = DeadLetters(str(tmp_path))
    for i in range(6):
        store.add(letter(i), SendResult("fatal", reason="rejected_400"))
    sent: list[str] = []

    def interrupted(batch: Batch) -> SendResult:
        if len(sent) == 3:
            raise KeyboardInterrupt  # Ctrl-C (or a kill) in the middle of the run
        sent.append(batch.consumer_id)
        return OK

    with pytest.raises(KeyboardInterrupt):
        store.retry(interrupted)
    assert len(store.read()[0]) == 3  # what is still to send, as `report --dead-letters` lists it

    def refuse_one(batch: Batch) -> SendResult:
        sent.append(batch.consumer_id)
        return SendResult("fatal", reason="rejected_400") if batch.consumer_id == "usr_5" else OK

    assert store.retry(refuse_one) == (2, 1, 0)
    assert sent == [f"usr_{i}" for i in range(6)]  # each sent once
    assert [e["consumerId"] for e in store.read()[0]] == ["usr_5"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dead-letters.jsonl", "dead-letters.jsonl.lock"]
