"""The dashboard's JSON API and command, over a ledger, a gateway emulator and health sources."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from aerostack_meter import cli
from aerostack_meter._health import DeliveryHealth, SpoolHealth, StateDirHealth, StaticHealth
from aerostack_meter.servers import start_gateway
from aerostack_meter.servers.dashboard import DashboardHandle, start_dashboard
from aerostack_meter.sinks import Batch

from ._data import ledger_sum


def test_api_numbers_equal_the_ledger(dashboard: DashboardHandle, ledger: Path) -> None:
    with httpx.Client(base_url=dashboard.base_url, timeout=10) as http:
        summary = http.get("/api/summary").json()
        assert summary["units"] == ledger_sum(ledger)
        alice = http.get("/api/summary", params={"consumer": "usr_alice"}).json()
        assert alice["units"] == ledger_sum(ledger, "WHERE consumer_id = 'usr_alice'") < summary["units"]
        series = http.get("/api/series", params={"by": "metric", "range": "24h"}).json()
        assert series["grain"] == "hour"
        assert {s["name"] for s in series["series"]} == {"input_tokens", "output_tokens", "cost_micro_usd"}
        top = http.get("/api/top", params={"limit": 3}).json()
        assert top["consumers"][0]["consumer_id"] == "usr_alice"
        assert len(top["consumers"]) == 3
        assert http.get("/api/options").json()["api_ids"] == ["chat-api", "search-api"]
        bad = http.get("/api/summary", params={"range": "forever"})
        assert bad.status_code == 400 and "range" in bad.json()["message"]
        assert http.get("/api/nope").status_code == 400


def test_the_overview_is_the_other_endpoints_in_one(dashboard: DashboardHandle) -> None:
    params = {"range": "24h", "api": "chat-api"}
    with httpx.Client(base_url=dashboard.base_url, timeout=10) as http:
        overview = http.get("/api/overview", params=params).json()
        assert overview["options"] == http.get("/api/options").json()
        assert overview["top"] == http.get("/api/top", params={**params, "limit": 10}).json()
        for by in ("consumer", "metric", "api"):
            assert overview["series"][by]["series"] == http.get(
                "/api/series", params={**params, "by": by}).json()["series"]
        summary = http.get("/api/summary", params=params).json()
        for body in (summary, overview["summary"]):
            body["filter"].pop("since")
        assert overview["summary"] == summary
        assert overview["health"]["sources"][0]["source"] == "ledger"
        assert http.get("/api/overview", params={"range": "1y"}).status_code == 400


def test_every_asset_is_served_locally(dashboard: DashboardHandle) -> None:
    with httpx.Client(base_url=dashboard.base_url, timeout=10) as http:
        page = http.get("/").text
        sources = re.findall(r'(?:src|href)="([^"]+)"', page)
        assert sources and all(s.startswith(("/", "data:")) for s in sources), sources
        for src in sources:
            if src.startswith("/"):
                assert http.get(src).status_code == 200, src
        plotly = http.get("/assets/plotly.min.js")
        assert plotly.headers["content-type"].startswith("text/javascript")
        assert len(plotly.content) > 1_000_000 and b"plotly" in plotly.content[:2000].lower()
        assert http.get("/assets/index.html").status_code == 404


def test_off_loopback_needs_a_token(ledger: Path) -> None:
    with pytest.raises(ValueError, match="token"):
        start_dashboard(ledger=ledger, host="0.0.0.0")


def test_a_token_guards_the_api(ledger: Path) -> None:
    with start_dashboard(ledger=ledger, token="s3cret") as dash, httpx.Client(timeout=10) as http:
        assert dash.url.endswith("/?token=s3cret")
        assert http.get(dash.base_url + "/api/summary").status_code == 401
        assert http.get(dash.base_url + "/api/health").status_code == 401
        assert http.get(dash.base_url + "/api/summary", params={"token": "wrong"}).status_code == 401
        ok = http.get(dash.base_url + "/api/summary", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200 and ok.json()["units"] == ledger_sum(ledger)
        assert http.get(dash.base_url + "/api/top", params={"token": "s3cret"}).status_code == 200


def test_over_a_gateway_emulator() -> None:
    with start_gateway() as gw, httpx.Client(timeout=10) as http:
        for consumer, units in (("usr_a", 30), ("usr_b", 12), ("usr_a", 5)):
            r = http.post(gw.billing_url, headers={"X-Aerostack-Key": "k"},
                          json={"consumerId": consumer, "apiId": "api_1", "units": units})
            assert r.status_code == 200
        with start_dashboard(gateway=gw.url) as dash:
            summary = http.get(dash.base_url + "/api/summary").json()
            assert (summary["units"], summary["requests"], summary["consumers"]) == (47, 3, 2)
            top = http.get(dash.base_url + "/api/top").json()["consumers"]
            assert [(c["consumer_id"], c["units"]) for c in top] == [("usr_a", 35), ("usr_b", 12)]
            health = http.get(dash.base_url + "/api/health").json()
            assert health["sources"][0]["source"] == "gateway"
            assert time.time() - health["sources"][0]["last_success"] < 60
        gw.stop()
        with start_dashboard(gateway=gw.url) as dash:  # the emulator is gone: a clear 502
            r = http.get(dash.base_url + "/api/summary")
            assert r.status_code == 502 and r.json()["code"] == "SOURCE_UNAVAILABLE"


def test_health_from_a_spool_and_a_state_directory(ledger: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    _journal_backlog(state, [("usr_a", "api", "tokens", 7, 0), ("usr_b", "api", "tokens", 5, 0)])
    extra = StaticHealth(DeliveryHealth(source="relay", dropped=2, dead_lettered=1, ambiguous_retries=3))
    with start_dashboard(ledger=ledger, state_dir=state, health=[extra]) as dash:
        body = httpx.get(dash.base_url + "/api/health", timeout=10).json()
    sources = {s["source"]: s for s in body["sources"]}
    assert set(sources) == {"ledger", f"state dir {state}", "relay"}
    assert sources[f"state dir {state}"]["backlog_records"] == 2
    assert sources[f"state dir {state}"]["backlog_units"] == 12
    assert sources[f"state dir {state}"]["backlog_bytes"] > 0
    conn = sqlite3.connect(ledger)
    assert sources["ledger"]["last_success"] == conn.execute("SELECT MAX(ts) FROM ledger").fetchone()[0]
    conn.close()
    total = body["total"]
    assert (total["backlog_records"], total["dropped"], total["dead_lettered"], total["ambiguous_retries"]) \
        == (2, 2, 1, 3)


def test_health_of_a_durable_state_directory(tmp_path: Path) -> None:
    """The journal layout: a destination sub-directory with `<token>.<n>.journal` files and
    `dead-letters.jsonl` (one JSON object per line)."""
    dest = tmp_path / "0123456789abcdef"
    dest.mkdir()
    (dest / "destination").write_text("http://127.0.0.1:8787/v1")
    (dest / "aaaa.0.journal").write_bytes(b"x" * 300)
    (dest / "bbbb.2.journal").write_bytes(b"y" * 200)
    (dest / "aaaa.lock").write_bytes(b"")
    (dest / "dead-letters.jsonl").write_text(
        '{"consumerId": "usr_a", "units": 5, "reason": "rejected_400"}\n'
        '{"consumerId": "usr_b", "units": 7, "reason": "rejected_422"}\n')
    health = StateDirHealth(tmp_path).read()
    assert health.error is None
    assert (health.backlog_bytes, health.dead_lettered, health.backlog_records) == (500, 2, None)
    part = health.details["parts"][0]
    assert part["details"] == {"destination": "http://127.0.0.1:8787/v1", "journals": 2}


def _journal_backlog(state: Path, events: list[tuple[str, str, str, int, int]]) -> None:
    """Usage left undelivered in a state directory, as a process that died would leave it."""
    import time as _time

    from aerostack_meter._paths import destination_dir
    from aerostack_meter._stats import Counters
    from aerostack_meter._store import JournalStore

    store = JournalStore(destination_dir(str(state), "https://billing.invalid/v1"), 1 << 20, Counters())
    store.put_many(events, _time.time())
    store.close(settled=False)



def test_health_sources_report_errors_instead_of_raising(tmp_path: Path) -> None:
    assert SpoolHealth(tmp_path / "missing.db").read().error
    assert StateDirHealth(tmp_path / "missing").read().error
    (tmp_path / "not-a-spool.db").write_bytes(b"hello")
    empty = StateDirHealth(tmp_path).read()
    assert empty.error is None and empty.backlog_records == 0


def test_report_prints_the_dashboards_aggregates(dashboard: DashboardHandle, ledger: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    for view, params in (("summary", {"consumer": "usr_bob"}), ("top", {"limit": "2"}),
                         ("series", {"by": "api", "range": "24h"})):
        argv = ["report", "--ledger", str(ledger), "--view", view]
        for key, value in params.items():
            argv += [f"--{key}", value] if key != "by" else ["--by", value]
        assert cli.main(argv) == 0
        printed = json.loads(capsys.readouterr().out)
        served = httpx.get(f"{dashboard.base_url}/api/{view}", params=params, timeout=10).json()
        for body in (printed, served):  # "now" differs between the two calls
            body.get("filter", {}).pop("since", None)
            if view == "series":
                body["buckets"] = body["buckets"][1:]
                for s in body["series"]:
                    s["units"] = s["units"][1:]
                    s.pop("total")
        assert printed == served
    assert cli.main(["report", "--ledger", str(ledger), "--consumer", "usr_carol"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-1].split()[1] == str(ledger_sum(ledger, "WHERE consumer_id = 'usr_carol'"))
    assert cli.main(["report", "--ledger", str(ledger), "--range", "2y"]) == 2
    assert "range" in capsys.readouterr().err


def test_the_command_serves_until_sigterm(ledger: Path, tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "aerostack_meter.cli", "dashboard", "--ledger", str(ledger),
         "--port", "0", "--state-dir", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        match = re.fullmatch(r"aerostack-meter dashboard listening on (http://127\.0\.0\.1:\d+)", line)
        assert match, line
        summary = httpx.get(match.group(1) + "/api/summary", timeout=10).json()
        assert summary["units"] == ledger_sum(ledger)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize(("argv", "message"), [
    (["--ledger", "missing.db"], "no ledger"),
    (["--host", "0.0.0.0", "--port", "0"], "token"),
])
def test_the_command_fails_cleanly(tmp_path: Path, argv: list[str], message: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AEROSTACK_")}
    (tmp_path / "aerostack-usage.db").write_bytes(b"")
    proc = subprocess.run([sys.executable, "-m", "aerostack_meter.cli", "dashboard", *argv],
                          capture_output=True, text=True, timeout=30, cwd=tmp_path, env=env)
    assert proc.returncode == 1
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_estimated_units_from_the_reporter_show_on_the_dashboard(tmp_path: Path) -> None:
    from aerostack_meter.sinks._ledger import LedgerSink

    sink = LedgerSink(str(tmp_path / "l.db"))
    sink.send(Batch("usr_a", "api", "tokens", 40, 3, "k1", estimated=True, estimated_units=15))
    sink.close()
    with start_dashboard(ledger=tmp_path / "l.db") as dash:
        s = httpx.get(dash.base_url + "/api/summary", timeout=10).json()
    assert (s["units"], s["estimated_units"], s["exact_units"], s["events"]) == (40, 15, 25, 3)


@pytest.mark.parametrize("blocked", ["plotly", "uvicorn"])
def test_without_the_extra_it_says_which_to_install(blocked: str) -> None:
    code = (f"import sys; sys.modules[{blocked!r}] = None\n"
            "from aerostack_meter.cli import main\n"
            "sys.exit(main(['dashboard', '--port', '0']))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "aerostack-meter[dashboard]" in proc.stderr and blocked in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
