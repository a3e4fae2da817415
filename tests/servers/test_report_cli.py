"""`aerostack-meter report` and the `gateway` / `mock-llm` subcommands run as real processes."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from aerostack_meter import cli
from aerostack_meter._report import TotalRow, format_totals, ledger_totals
from aerostack_meter.servers import start_gateway

from ._helpers import post_log

RunCli = Callable[..., tuple["subprocess.Popen[str]", str]]

LEDGER_SCHEMA = (
    "CREATE TABLE ledger(id INTEGER PRIMARY KEY, ts REAL NOT NULL, consumer_id TEXT NOT NULL,"
    " api_id TEXT NOT NULL, metric TEXT NOT NULL, units INTEGER NOT NULL, idempotency_key TEXT,"
    " events INTEGER NOT NULL DEFAULT 1)"
)


@pytest.fixture
def ledger(tmp_path: Path) -> Path:
    path = tmp_path / "usage.db"
    conn = sqlite3.connect(path)
    conn.execute(LEDGER_SCHEMA)
    rows = [
        ("usr_b", "api_chat", "output_tokens", 40, 2),
        ("usr_a", "api_chat", "input_tokens", 100, 1),
        ("usr_a", "api_chat", "input_tokens", 23, 3),
        ("usr_a", "api_search", "tokens", 7, 1),
    ]
    conn.executemany(
        "INSERT INTO ledger (ts, consumer_id, api_id, metric, units, events) VALUES (1.0, ?, ?, ?, ?, ?)",
        rows,
    )
    conn.commit()
    conn.close()
    return path


def test_ledger_totals_group_and_sum(ledger: Path) -> None:
    assert ledger_totals(ledger) == [
        TotalRow("usr_a", "api_chat", "input_tokens", 123, 4),
        TotalRow("usr_a", "api_search", "tokens", 7, 1),
        TotalRow("usr_b", "api_chat", "output_tokens", 40, 2),
    ]


def test_ledger_is_opened_read_only(ledger: Path) -> None:
    before = ledger.read_bytes()
    ledger_totals(ledger)
    assert ledger.read_bytes() == before
    assert not Path(str(ledger) + "-wal").exists()


def test_format_totals_aligned_with_total_line() -> None:
    text = format_totals(
        [
            {
                "consumerId": "usr_long_name",
                "apiId": "a",
                "metric": "tokens",
                "units": 5,
                "requests": 1,
            },
            {"consumer_id": "u", "api_id": "api_x", "metric": "m", "units": 12345, "events": 3},
        ]
    )
    lines = text.splitlines()
    assert lines[0].split() == ["CONSUMER", "API", "METRIC", "UNITS", "EVENTS"]
    assert lines[2].split() == ["u", "api_x", "m", "12345", "3"]
    assert lines[3].split() == ["usr_long_name", "a", "tokens", "5", "1"]
    assert lines[-1].split() == ["TOTAL", "12350", "4"]
    # numbers are right-aligned in one column
    assert {len(line) for line in (lines[0], lines[2], lines[3], lines[-1])} == {len(lines[0])}
    assert lines[0].index("API") == lines[2].index("api_x")


def test_format_totals_empty() -> None:
    assert "no usage" in format_totals([])


def test_report_from_ledger(ledger: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["report", "--ledger", str(ledger)]) == 0
    out = capsys.readouterr().out
    assert str(ledger) in out
    assert any(
        line.split() == ["usr_a", "api_chat", "input_tokens", "123", "4"]
        for line in out.splitlines()
    )
    assert out.splitlines()[-1].split() == ["TOTAL", "170", "7"]


def test_report_default_ledger_from_env(
    ledger: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AEROSTACK_METER_LEDGER", str(ledger))
    assert cli.main(["report"]) == 0
    assert "TOTAL" in capsys.readouterr().out


def test_report_default_ledger_in_cwd(
    ledger: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AEROSTACK_METER_LEDGER", raising=False)
    monkeypatch.chdir(ledger.parent)
    ledger.rename(ledger.parent / "aerostack-usage.db")
    assert cli.main(["report"]) == 0
    assert "170" in capsys.readouterr().out


def test_report_missing_ledger_fails_cleanly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["report", "--ledger", str(tmp_path / "nope.db")]) == 1
    assert "no ledger" in capsys.readouterr().err


def test_report_from_gateway(capsys: pytest.CaptureFixture[str]) -> None:
    with start_gateway() as gw, httpx.Client() as http:
        post_log(
            http,
            gw,
            {"consumerId": "usr_g", "apiId": "api_1", "units": 30, "metric": "tokens"},
            key="k",
        )
        post_log(
            http,
            gw,
            {"consumerId": "usr_g", "apiId": "api_1", "units": 12, "metric": "tokens"},
            key="k",
        )
        assert cli.main(["report", "--gateway", gw.url]) == 0
    out = capsys.readouterr().out
    assert any(line.split() == ["usr_g", "api_1", "tokens", "42", "2"] for line in out.splitlines())
    # a gateway knows billing requests, not the events each coalesced: the column says so
    assert ["CONSUMER", "API", "METRIC", "UNITS", "REQUESTS"] in [line.split() for line in out.splitlines()]


def test_report_of_a_gateway_database_file_counts_requests(capsys: pytest.CaptureFixture[str],
                                                            tmp_path: Path) -> None:
    """``--ledger`` given an emulator's database file: its rows are billing requests, headed so."""
    db = tmp_path / "gw.db"
    with start_gateway(db_path=str(db)) as gw, httpx.Client() as http:
        for units in (30, 12):
            post_log(http, gw, {"consumerId": "usr_g", "apiId": "api_1", "units": units, "metric": "tokens"},
                     key="k")
    assert cli.main(["report", "--ledger", str(db)]) == 0
    lines = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert ["CONSUMER", "API", "METRIC", "UNITS", "REQUESTS"] in lines
    assert ["usr_g", "api_1", "tokens", "42", "2"] in lines


def test_report_gateway_unreachable(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["report", "--gateway", f"http://127.0.0.1:{_free_port()}/v1"]) == 1
    assert capsys.readouterr().err


def test_demo_is_called_with_its_args(monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    seen: list[list[str]] = []
    fake = types.ModuleType("aerostack_meter.demo")
    fake.main = lambda args: seen.append(args) or 0  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "aerostack_meter.demo", fake)
    assert cli.main(["demo", "--fast", "x"]) == 0
    assert seen == [["--fast", "x"]]


def test_wallet_flag_parsing() -> None:
    ns = cli.build_parser().parse_args(
        ["gateway", "--wallet", "usr_1=100", "--wallet", "usr_2=-5", "--key", "a", "--key", "b"]
    )
    assert ns.wallet == [("usr_1", 100), ("usr_2", -5)]
    assert ns.key == ["a", "b"]
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["gateway", "--wallet", "nobalance"])


# -- the servers as subprocesses ------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def run_cli() -> Iterator[RunCli]:
    procs: list[subprocess.Popen[str]] = []

    def start(*args: str) -> tuple[subprocess.Popen[str], str]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "aerostack_meter.cli", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        procs.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline()  # blocks until the server prints its ready line
        assert "listening on" in line, proc.stderr.read() if proc.stderr else line
        return proc, line.rsplit("listening on ", 1)[1].split()[0]

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def _stop(proc: subprocess.Popen[str]) -> int:
    start = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(10)
    assert time.monotonic() - start < 5
    return code


def test_gateway_subprocess(run_cli: RunCli, tmp_path: Path) -> None:
    port = _free_port()
    db = tmp_path / "gw.db"
    proc, url = run_cli(
        "gateway",
        "--port",
        str(port),
        "--db",
        str(db),
        "--key",
        "k1",
        "--wallet",
        "usr_w=10",
        "--rate-limit-next",
        "1",
    )
    assert url == f"http://127.0.0.1:{port}/v1"
    with httpx.Client(timeout=5) as http:
        body = {"consumerId": "usr_w", "apiId": "a", "units": 4}
        r = http.post(f"{url}/gateway/billing/log", json=body, headers={"X-Aerostack-Key": "k1"})
        assert r.status_code == 429 and r.headers["retry-after"] == "1"
        r = http.post(f"{url}/gateway/billing/log", json=body, headers={"X-Aerostack-Key": "k1"})
        assert r.json() == {"success": True, "loggedUnits": 4}
        assert (
            http.post(
                f"{url}/gateway/billing/log", json=body, headers={"X-Aerostack-Key": "k2"}
            ).status_code
            == 401
        )
        assert http.get(f"http://127.0.0.1:{port}/_emulator/wallets").json() == {
            "wallets": {"usr_w": 6}
        }
    assert _stop(proc) == 0
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT consumer_id, units FROM billing_log").fetchall() == [("usr_w", 4)]
    conn.close()


def test_mock_llm_subprocess(run_cli: RunCli) -> None:
    port = _free_port()
    proc, url = run_cli("mock-llm", "--port", str(port), "--output-tokens", "3", "--cache", "1")
    assert url == f"http://127.0.0.1:{port}/v1"
    with httpx.Client(timeout=5) as http:
        body = {"model": "m", "messages": [{"role": "user", "content": "a b"}]}
        usage = http.post(f"{url}/chat/completions", json=body).json()["usage"]
        assert usage["completion_tokens"] == 3
        assert usage["prompt_tokens_details"]["cached_tokens"] == 1
    assert _stop(proc) == 0


def test_gateway_subprocess_port_in_use(run_cli: RunCli) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "aerostack_meter.cli", "gateway", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=20,
        )
    assert result.returncode == 1
    assert "gateway" in result.stderr
