"""The CLI on the core install (httpx and wrapt only), run as a real process.

A ``None`` entry in ``sys.modules`` makes each extra's module (the SDKs, starlette, uvicorn)
unimportable, as on ``pip install aerostack-meter``: ``report`` must work and never import the dev
servers; the commands that need an extra print one line naming it and exit 2, no traceback.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import httpx
import pytest

from ..conftest import API_KEY

BLOCKED = ("openai", "anthropic", "google", "boto3", "mistralai", "genai_prices", "redis",
           "prometheus_client", "opentelemetry", "starlette", "uvicorn", "fastapi", "plotly")

RUNNER = textwrap.dedent('''
    import sys

    BLOCKED = set(sys.argv[1].split(",")) if sys.argv[1] else set()
    for name in BLOCKED:  # not installed: `import` raises ModuleNotFoundError, find_spec is None
        sys.modules[name] = None

    import aerostack_meter as am
    from aerostack_meter import cli

    if sys.argv[2] == "log":  # write a ledger through the library itself
        m = am.Meter(ledger_path=sys.argv[3], instrument=False)
        m.log("usr_core", 42, metric="tokens", api_id="api_core")
        assert m.flush(10)
        m.shutdown()
        sys.exit(0)
    code = cli.main(sys.argv[2:])
    loaded = sorted(n for n in BLOCKED if sys.modules.get(n) is not None)
    servers = "aerostack_meter.servers" in sys.modules
    print(f"imported-extras={loaded} servers-imported={servers}")
    sys.exit(code)
''')


def run(*args: str, blocked: tuple[str, ...] = BLOCKED, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", RUNNER, ",".join(blocked), *args], capture_output=True,
                          text=True, timeout=60, cwd=cwd)


def test_report_over_the_ledger_needs_no_extra(tmp_path: Path) -> None:
    ledger = tmp_path / "usage.db"
    wrote = run("log", str(ledger))
    assert wrote.returncode == 0, wrote.stderr
    done = run("report", "--ledger", str(ledger))
    assert done.returncode == 0, done.stderr
    rows = [line.split() for line in done.stdout.splitlines()]
    assert ["usr_core", "api_core", "tokens", "42", "1"] in rows
    assert "imported-extras=[] servers-imported=False" in done.stdout
    assert "Traceback" not in done.stderr


def test_report_over_a_gateway_needs_no_extra(gateway: Any) -> None:
    """The gateway runs here (with the servers extra); the core-install process only reads it."""
    gateway.client.reset()
    with httpx.Client() as http:
        r = http.post(f"{gateway.url}/gateway/billing/log", headers={"X-Aerostack-Key": API_KEY},
                      json={"consumerId": "usr_gw", "apiId": "api_core", "metric": "tokens", "units": 7})
        assert r.status_code == 200, r.text
    done = run("report", "--gateway", gateway.url)
    assert done.returncode == 0, done.stderr
    assert ["usr_gw", "api_core", "tokens", "7", "1"] in [line.split() for line in done.stdout.splitlines()]
    assert "imported-extras=[] servers-imported=" in done.stdout


def test_report_with_no_ledger_says_so_without_a_traceback(tmp_path: Path) -> None:
    done = run("report", cwd=tmp_path)
    assert done.returncode == 1
    assert "no ledger" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize(("command", "extras"), [
    ("gateway", "[servers]"),
    ("mock-llm", "[servers]"),
    ("dashboard", "[dashboard]"),
    ("relay", "[relay]"),
    ("demo", "[openai,anthropic,servers]"),
])
def test_commands_that_need_an_extra_name_it_and_exit_2(command: str, extras: str) -> None:
    done = run(command, "--port", "0") if command in ("gateway", "mock-llm") else run(command)
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr  # one line, no traceback
    assert lines[0].startswith(f"aerostack-meter {command}: needs ")
    assert f"pip install 'aerostack-meter{extras}'" in lines[0]


def test_demo_names_both_extras_when_only_the_sdks_are_missing() -> None:
    done = run("demo", blocked=("openai", "anthropic"))
    assert done.returncode == 2
    assert "needs openai, anthropic;" in done.stderr
    assert "aerostack-meter[openai,anthropic,servers]" in done.stderr


@pytest.mark.parametrize(("command", "flag"), [("gateway", "--db"), ("dashboard", "--ledger")])
@pytest.mark.parametrize("bad", ["missing-dir", "not-a-database"])
def test_a_database_that_cannot_be_opened_is_one_line_and_exit_1(tmp_path: Path, command: str, flag: str,
                                                                   bad: str) -> None:
    path = tmp_path / "no" / "such" / "x.db"
    if bad == "not-a-database":
        path = tmp_path / "notes.db"
        path.write_text("hello, not a database\n" * 200)
    done = run(command, "--port", "0", flag, str(path), blocked=())
    assert done.returncode == 1, (done.stdout, done.stderr)
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"aerostack-meter {command}: "), done.stderr


@pytest.mark.parametrize("args", [("gateway", "--port", "99999"), ("mock-llm", "--port", "-1"),
                                  ("dashboard", "--port", "70000"), ("drain", "--timeout", "-1"),
                                  ("report", "--limit", "0")])
def test_an_out_of_range_number_is_one_line_and_exit_2(args: tuple[str, ...]) -> None:
    done = run(*args, blocked=())
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert args[1] in done.stderr  # argparse names the flag
