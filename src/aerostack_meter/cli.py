"""The `aerostack-meter` command: `gateway`, `mock-llm`, `dashboard`, `report`, `relay` and `demo`.

`report` over the local ledger is core: it never imports the dev servers. The other commands need
extras, listed in ``NEEDS``; without them the command prints one line naming the extras to install
and exits 2, no traceback. A new command that needs an extra adds itself to ``NEEDS`` and imports
what it needs inside its handler.

The server subcommands run until SIGINT or SIGTERM and print one line, `... listening on URL`,
once they accept connections.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from .servers._runner import ServerHandle

_H = TypeVar("_H", bound="ServerHandle")

__all__ = ["NEEDS", "build_parser", "main", "missing_extras"]

# extra -> the top-level modules it installs (pyproject.toml's [project.optional-dependencies])
EXTRAS: dict[str, tuple[str, ...]] = {
    "openai": ("openai",),
    "anthropic": ("anthropic",),
    "servers": ("starlette", "uvicorn"),
    "dashboard": ("starlette", "uvicorn", "plotly"),
    "relay": ("redis", "prometheus_client"),
}
# command -> the extras it needs
NEEDS: dict[str, tuple[str, ...]] = {
    "gateway": ("servers",),
    "mock-llm": ("servers",),
    "dashboard": ("dashboard",),
    "relay": ("relay",),
    "demo": ("openai", "anthropic", "servers"),
}

DEFAULT_GATEWAY_PORT = 8787
DEFAULT_MOCK_PORT = 8788
DEFAULT_DASHBOARD_PORT = 8789


def _wallet(value: str) -> tuple[str, int]:
    consumer, sep, balance = value.partition("=")
    if not sep or not consumer:
        raise argparse.ArgumentTypeError("expected CONSUMER=BALANCE")
    try:
        return consumer, int(balance)
    except ValueError:
        raise argparse.ArgumentTypeError(f"balance must be an integer: {balance!r}") from None


def _statuses(value: str) -> list[int]:
    try:
        return [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError("expected comma-separated HTTP statuses") from None


def _port(value: str) -> int:
    """A TCP port, 0 (any free one) to 65535."""
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a port must be an integer: {value!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0 to 65535, got {port}")
    return port


def _count(least: int) -> Callable[[str], int]:
    """An integer of at least ``least``."""
    def parse(value: str) -> int:
        try:
            n = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer: {value!r}") from None
        if n < least:
            raise argparse.ArgumentTypeError(f"must be at least {least}, got {n}")
        return n

    return parse


def _seconds(value: str) -> float:
    """A finite number of seconds, 0 or more."""
    try:
        v = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds: {value!r}") from None
    if not 0 <= v < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds >= 0, got {value}")
    return v


def _add_gateway(sub: Any) -> None:
    p = sub.add_parser(
        "gateway", help="run the billing API emulator", description="Run the billing API emulator."
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=_port, default=DEFAULT_GATEWAY_PORT)
    p.add_argument("--db", default=None, help="SQLite file (default: a temporary file)")
    p.add_argument(
        "--key",
        action="append",
        default=None,
        help="accepted X-Aerostack-Key (repeatable; default: any, on a loopback host only: "
             "another --host needs --key)",
    )
    p.add_argument(
        "--control-token",
        default=None,
        help="off loopback, the token the control endpoints (faults, reset, wallets) require in "
             "X-Emulator-Token (default: $AEROSTACK_GATEWAY_CONTROL_TOKEN; none: they stay closed)",
    )
    p.add_argument(
        "--wallet", action="append", type=_wallet, default=[], metavar="CONSUMER=BALANCE"
    )
    p.add_argument("--on-empty-wallet", choices=("reject", "allow"), default="reject")
    f = p.add_argument_group("faults (billing endpoint only)")
    f.add_argument("--fail-rate", type=float, default=0.0)
    f.add_argument("--fail-statuses", type=_statuses, default=[500, 502, 503], metavar="S1,S2")
    f.add_argument("--fail-next", type=int, default=0)
    f.add_argument("--fail-status", type=int, default=500)
    f.add_argument("--rate-limit-next", type=int, default=0)
    f.add_argument(
        "--retry-after", type=int, default=1, help="Retry-After seconds on injected 429s"
    )
    f.add_argument("--latency-ms", type=float, default=0.0)
    f.add_argument("--drop-rate", type=float, default=0.0)
    f.add_argument("--drop-next", type=int, default=0)
    f.add_argument("--lose-response-rate", type=float, default=0.0)
    f.add_argument("--lose-response-next", type=int, default=0)
    f.add_argument("--lose-response-mode", choices=("drop", "delay"), default="drop")
    f.add_argument("--lose-response-delay-ms", type=float, default=30_000.0)
    f.add_argument(
        "--bad-body", choices=("html", "invalid_json", "empty", "huge", "hang"), default=None
    )
    f.add_argument("--bad-body-commits", action="store_true")
    f.add_argument("--huge-bytes", type=int, default=50 * 1024 * 1024)
    f.add_argument("--seed", type=int, default=None)


_FAULT_FLAGS = (
    "fail_rate",
    "fail_statuses",
    "fail_next",
    "fail_status",
    "rate_limit_next",
    "retry_after",
    "latency_ms",
    "drop_rate",
    "drop_next",
    "lose_response_rate",
    "lose_response_next",
    "lose_response_mode",
    "lose_response_delay_ms",
    "bad_body",
    "bad_body_commits",
    "huge_bytes",
    "seed",
)


def _add_mock(sub: Any) -> None:
    p = sub.add_parser(
        "mock-llm",
        help="run the mock LLM server (OpenAI, Anthropic, Gemini, Bedrock, Mistral)",
        description="Run the mock LLM server (OpenAI, Anthropic, Gemini, Bedrock and Mistral wire formats).",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=_port, default=DEFAULT_MOCK_PORT)
    p.add_argument("--latency-ms", type=float, default=0.0)
    p.add_argument("--chunk-delay-ms", type=float, default=0.0)
    p.add_argument(
        "--output-tokens", type=int, default=10, help="reply length in words (before max_tokens)"
    )
    p.add_argument(
        "--chunks", type=int, default=None, help="content chunks per stream (default: one per word)"
    )
    p.add_argument("--cache", type=int, default=0, help="cached (cache-read) input tokens")
    p.add_argument("--cache-write", type=int, default=0, help="cache-write input tokens")
    p.add_argument("--reasoning", type=int, default=0, help="reasoning tokens added to the output")
    p.add_argument(
        "--web-search", type=int, default=0, help="Anthropic server_tool_use.web_search_requests"
    )
    p.add_argument(
        "--tool-use-prompt", type=int, default=0, help="Gemini toolUsePromptTokenCount (extra input)"
    )
    p.add_argument(
        "--error", type=int, default=None, help="answer every request with this HTTP error"
    )
    p.add_argument(
        "--usage",
        choices=("normal", "null", "missing", "negative", "string", "huge"),
        default="normal",
    )
    p.add_argument("--repeat-deltas", action="store_true")
    p.add_argument("--stream-error-after", type=int, default=None)
    p.add_argument("--stream-error-event", type=int, default=None)


_MOCK_FLAGS = (
    "output_tokens",
    "chunks",
    "cache",
    "cache_write",
    "reasoning",
    "web_search",
    "tool_use_prompt",
    "error",
    "usage",
    "repeat_deltas",
    "stream_error_after",
    "stream_error_event",
)


def _add_relay(sub: Any) -> None:
    p = sub.add_parser(
        "relay", help="deliver usage from a Redis stream to the billing API",
        description="Read usage records from a Redis stream in a consumer group and deliver them to "
        "the billing API (key: $AEROSTACK_API_KEY; URL: $AEROSTACK_BASE_URL or --base-url). "
        "Several relays share the work. See docs/scaling.md.")
    p.add_argument("--redis", default=None, metavar="URL",
                   help="redis://host:port/db?stream=...&group=...&maxlen=... "
                   "(default: $AEROSTACK_METER_REDIS_URL)")
    p.add_argument("--stats", action="store_true", help="print the stream's lag and the relays' "
                   "counters, then exit")
    p.add_argument("--json", action="store_true", help="with --stats: print JSON")
    p.add_argument("--retry-dead", action="store_true", help="move the dead-lettered records back to the "
                   "stream (once their cause is fixed: a wallet topped up), then exit; running relays deliver them")
    p.add_argument("--name", default="", help="consumer name in the group (default: host-pid)")
    p.add_argument("--claim-idle", type=_seconds, default=30.0, metavar="S",
                   help="claim entries another relay held unacknowledged this long (default 30)")
    p.add_argument("--read-count", type=_count(1), default=1000, metavar="N")
    p.add_argument("--block", type=_seconds, default=1.0, metavar="S")
    p.add_argument("--delivered-ttl", type=_seconds, default=7 * 86400.0, metavar="S",
                   help="how long delivered record ids are remembered (default 7 days)")
    p.add_argument("--max-held", type=_count(1), default=100_000, metavar="N")
    p.add_argument("--base-url", default=None, help="billing API base URL")
    p.add_argument("--concurrency", type=int, default=None, metavar="N")
    p.add_argument("--backoff-base", type=float, default=None, metavar="S")
    p.add_argument("--max-backoff", type=float, default=None, metavar="S")
    p.add_argument("--metrics-port", type=_port, default=None, metavar="PORT",
                   help="serve Prometheus /metrics on this port (0: any free port)")
    p.add_argument("--metrics-host", default="127.0.0.1")


def _add_source(p: Any) -> None:
    source = p.add_mutually_exclusive_group()
    source.add_argument(
        "--ledger",
        default=None,
        help="ledger SQLite file (default: $AEROSTACK_METER_LEDGER or ./aerostack-usage.db)",
    )
    source.add_argument("--gateway", default=None, metavar="URL", help="a gateway emulator's URL")


def _add_filters(p: Any) -> None:
    g = p.add_argument_group("filters (the dashboard's URL parameters)")
    g.add_argument("--consumer", default=None, help="consumer id(s), comma-separated")
    g.add_argument("--api", default=None, help="API id(s), comma-separated")
    g.add_argument("--metric", default=None, help="metric(s), comma-separated")
    g.add_argument("--range", default=None, help="15m, 1h, 6h, 24h, 7d, 30d, 90d or all")
    g.add_argument("--since", default=None, help="Unix seconds or ISO 8601 (UTC if no zone)")
    g.add_argument("--until", default=None, help="Unix seconds or ISO 8601 (UTC if no zone)")


def _add_dashboard(sub: Any) -> None:
    p = sub.add_parser(
        "dashboard",
        help="serve the usage dashboard",
        description="Serve a local usage dashboard (a web page and a JSON API under /api/).",
    )
    _add_source(p)
    p.add_argument("--state-dir", default=None, metavar="DIR",
                   help="durable state directory whose backlog to show")
    p.add_argument("--spool", default=None, metavar="FILE", help="a spool file whose backlog to show")
    p.add_argument("--redis", default=None, metavar="URL",
                   help="a Redis stream (as given to the relay) whose backlog and relays to show")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=_port, default=DEFAULT_DASHBOARD_PORT)
    p.add_argument("--token", default=None,
                   help="required by /api/* (default: $AEROSTACK_DASHBOARD_TOKEN); needed off loopback")
    p.add_argument("--refresh", type=_seconds, default=5.0, metavar="SECONDS",
                   help="page refresh interval (0: never)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aerostack-meter", description="aerostack-meter tools")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_gateway(sub)
    _add_mock(sub)
    _add_dashboard(sub)
    report = sub.add_parser("report", help="print usage totals", description="Print usage totals.")
    _add_source(report)
    _add_filters(report)
    report.add_argument(
        "--view",
        choices=("totals", "summary", "top", "series"),
        default="totals",
        help="totals (a table), or one of the dashboard's aggregates as JSON",
    )
    report.add_argument("--by", choices=("consumer", "api", "metric"), default="consumer",
                        help="series: one series per consumer, API id or metric")
    report.add_argument("--limit", type=_count(1), default=None, help="top/series: how many")
    report.add_argument("--dead-letters", action="store_true",
                        help="list the requests the billing API refused for good (the dead-letter "
                             "store of the state directory) instead of totals")
    _add_relay(sub)
    drain = sub.add_parser(
        "drain", help="deliver the usage left in the state directory, then exit",
        description="Deliver everything pending in the state directory (usage left by processes "
                    "that ended before delivering it), reading the same environment as "
                    "`import aerostack_meter.auto`. Usage is sent only with the API key it was "
                    "journaled under (AEROSTACK_API_KEY): run it with each key that left usage. "
                    "Exits 0 only when nothing is left.")
    drain.add_argument("--timeout", type=_seconds, default=60.0, metavar="SECONDS",
                       help="give up after this long (what is left stays on disk; exit 1)")
    drain.add_argument("--retry-dead", action="store_true",
                       help="also resend the dead-letter store (requests the API refused before)")
    drain.add_argument("--adopt-key", action="append", default=[], metavar="FINGERPRINT",
                       help="also deliver, with this key, the usage journaled for this base URL "
                            "under the key with this fingerprint (16 hex digits, named in the "
                            "warning): a key that was mistyped, or rotated and revoked, of the "
                            "same account. Repeatable")
    demo = sub.add_parser("demo", help="run the demo", add_help=False)
    demo.add_argument("args", nargs=argparse.REMAINDER)
    return parser


def _wait_for_signal() -> None:
    stop = threading.Event()

    def handler(signum: int, frame: object) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stop.wait(0.5):
            pass
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _serve(command: str, start: Callable[[], _H], where: Callable[[_H], str]) -> int:
    """Start a server, say where it listens, and serve until SIGINT or SIGTERM. A setting it
    cannot start with (a port in use, a database file it cannot open or that is not one) is one
    line on stderr and exit status 1."""
    import sqlite3

    try:
        handle = start()
    except (OSError, ValueError, OverflowError, RuntimeError, sqlite3.Error) as exc:
        print(f"aerostack-meter {command}: {exc}", file=sys.stderr)
        return 1
    with handle:
        print(f"aerostack-meter {command} listening on {where(handle)}", flush=True)
        _wait_for_signal()
    return 0


def _run_gateway(ns: argparse.Namespace) -> int:
    from .servers import start_gateway

    faults = {name: getattr(ns, name) for name in _FAULT_FLAGS}
    return _serve(
        "gateway",
        lambda: start_gateway(
            keys=ns.key,
            db_path=ns.db,
            port=ns.port,
            host=ns.host,
            wallets=dict(ns.wallet),
            on_empty_wallet=ns.on_empty_wallet,
            faults=faults,
            control_token=ns.control_token or os.environ.get("AEROSTACK_GATEWAY_CONTROL_TOKEN"),
        ),
        lambda handle: f"{handle.url} (db: {handle.db_path})",
    )


def _run_mock(ns: argparse.Namespace) -> int:
    from .servers import start_mock_llm

    defaults = {name: getattr(ns, name) for name in _MOCK_FLAGS}
    return _serve(
        "mock-llm",
        lambda: start_mock_llm(
            port=ns.port,
            host=ns.host,
            latency_ms=ns.latency_ms,
            chunk_delay_ms=ns.chunk_delay_ms,
            **defaults,
        ),
        lambda handle: handle.url,
    )


_FILTER_FLAGS = ("consumer", "api", "metric", "range", "since", "until")


def _run_report(ns: argparse.Namespace) -> int:
    import json

    import httpx

    from ._usage_query import UsageStore, usage_view

    params = {name: getattr(ns, name) for name in _FILTER_FLAGS if getattr(ns, name)}
    if ns.view == "series":
        params["by"] = ns.by
    if ns.limit is not None:
        params["limit"] = str(ns.limit)
    view = "totals" if ns.view == "totals" else ns.view
    requests = bool(ns.gateway)  # a gateway counts billing requests, a ledger events
    try:
        if ns.gateway:
            from .servers._dashboard_sources import GatewayUsage

            gateway = GatewayUsage(ns.gateway)
            try:
                body = gateway.view(view, params)
            finally:
                gateway.close()
            title = f"Usage totals from gateway {ns.gateway}"
        else:
            path = ns.ledger or _default_ledger_path()
            store = UsageStore.open(path, write=False)
            try:
                body = usage_view(store, view, params)
                requests = store.table == "billing_log"  # an emulator's database: requests, not events
            finally:
                store.close()
            title = f"Usage totals from {'gateway database' if requests else 'ledger'} {os.path.abspath(path)}"
    except ValueError as exc:
        print(f"aerostack-meter report: {exc}", file=sys.stderr)
        return 2
    except (OSError, httpx.HTTPError) as exc:
        print(f"aerostack-meter report: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # sqlite errors, unexpected shapes: say so, no traceback
        print(f"aerostack-meter report: cannot read totals: {exc}", file=sys.stderr)
        return 1
    if ns.view != "totals":
        sys.stdout.write(json.dumps(body, indent=2) + "\n")
        return 0
    from ._report import format_totals

    sys.stdout.write(format_totals(body["rows"], title=title, requests=requests))
    return 0


def _run_dead_letters() -> int:
    """The dead-letter store of the configured destination (same environment as the library)."""
    from ._config import build_settings
    from ._deadletter import DeadLetters
    from ._errors import ConfigError
    from ._paths import default_state_dir

    try:
        s = build_settings()
    except ConfigError as exc:
        print(f"aerostack-meter report: {exc}", file=sys.stderr)
        return 2
    root = s.state_dir or default_state_dir()
    rows: list[dict[str, Any]] = []
    bad = 0
    for marker in sorted(_glob(root, "*/dead-letters.jsonl")):
        entries, unreadable = DeadLetters(os.path.dirname(marker)).read()
        rows.extend(entries)
        bad += unreadable
    if not rows:
        print(f"No dead letters in {root}.")
    else:
        print(f"Dead letters in {root} (resend with `aerostack-meter drain --retry-dead`):")
        for e in rows:
            print(f"  {e['consumerId']}\t{e['apiId']}\t{e['metric']}\t{e['units']}\t"
                  f"{e.get('reason', '')}\t{e.get('message', '')}")
    if bad:
        print(f"({bad} unreadable line(s) skipped)")
    return 0


def _glob(root: str, pattern: str) -> list[str]:
    import glob

    return glob.glob(os.path.join(glob.escape(root), pattern))


def _default_ledger_path() -> str:
    return os.environ.get("AEROSTACK_METER_LEDGER") or os.path.join(".", "aerostack-usage.db")


def _run_dashboard(ns: argparse.Namespace) -> int:
    from .servers.dashboard import start_dashboard  # its extra was checked by main()

    token = ns.token or os.environ.get("AEROSTACK_DASHBOARD_TOKEN") or None
    return _serve(
        "dashboard",
        lambda: start_dashboard(
            ledger=ns.ledger,
            gateway=ns.gateway,
            state_dir=ns.state_dir,
            spool=ns.spool,
            redis=ns.redis,
            host=ns.host,
            port=ns.port,
            token=token,
            refresh_seconds=ns.refresh,
        ),
        lambda handle: handle.base_url,
    )


def _run_demo(args: Sequence[str]) -> int:
    demo = importlib.import_module("aerostack_meter.demo")
    return int(demo.main(list(args)) or 0)


def missing_extras(command: str) -> str | None:
    """The one line to print when ``command``'s extras are not installed, else ``None``."""
    needed = NEEDS.get(command, ())
    absent = dict.fromkeys(m for extra in needed for m in EXTRAS[extra]
                           if importlib.util.find_spec(m) is None)
    if not absent:
        return None
    return (f"aerostack-meter {command}: needs {', '.join(absent)}; install them with "
            f"pip install 'aerostack-meter[{','.join(needed)}]'")


def _run_relay(ns: argparse.Namespace) -> int:
    try:
        from .relay import Relay, RelayOptions, StreamConfig, format_stats, gather, retry_dead
    except ImportError as exc:
        print(f"aerostack-meter relay: needs the redis extra (pip install 'aerostack-meter[relay]'): "
              f"{exc}", file=sys.stderr)
        return 2
    from ._config import build_settings
    from ._errors import ConfigError
    from ._stream import safe_url

    url = ns.redis or os.environ.get("AEROSTACK_METER_REDIS_URL")
    if not url:
        print("aerostack-meter relay: no Redis URL (--redis or AEROSTACK_METER_REDIS_URL)", file=sys.stderr)
        return 2
    try:
        stream = StreamConfig.from_url(url)
        if ns.stats:
            import json

            snapshot = gather(stream.connect(decode_responses=True), stream)
            print(json.dumps(snapshot, indent=1) if ns.json else format_stats(snapshot), end="\n" if ns.json else "")
            return 0
        if ns.retry_dead:
            done = retry_dead(stream.connect(decode_responses=True), stream)
            print(f"aerostack-meter relay: moved {done.moved} dead-lettered record(s), {done.units} units, back to "
                  f"{stream.stream!r}" + (f"; {done.left} entr(y/ies) that are not records left in "
                                         f"{stream.dead_stream!r}" if done.left else ""))
            return 0
        overrides = {k: v for k, v in (("concurrency", ns.concurrency), ("backoff_base", ns.backoff_base),
                                       ("max_backoff", ns.max_backoff)) if v is not None}
        settings = build_settings(base_url=ns.base_url, **overrides)
        if settings.api_key is None:
            print("aerostack-meter relay: no API key (set AEROSTACK_API_KEY)", file=sys.stderr)
            return 2
        relay = Relay(stream, settings, RelayOptions(
            name=ns.name, claim_idle=ns.claim_idle, read_count=ns.read_count, block=ns.block,
            delivered_ttl=ns.delivered_ttl, max_held=ns.max_held))
    except ConfigError as exc:
        print(f"aerostack-meter relay: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # Redis unreachable for --stats, and the like: no traceback
        print(f"aerostack-meter relay: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    def handler(signum: int, frame: object) -> None:
        relay.stop()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handler)
    if ns.metrics_port is not None:
        from .relay._metrics import serve_metrics

        try:
            server = serve_metrics(relay, ns.metrics_host, ns.metrics_port)
        except OSError as exc:  # the port in use, a host it cannot bind
            relay.close()
            print(f"aerostack-meter relay: --metrics-port: {exc}", file=sys.stderr)
            return 1
        print(f"aerostack-meter relay metrics on http://{ns.metrics_host}:{server.server_port}/metrics",
              flush=True)
    print(f"aerostack-meter relay {relay.name} consuming {safe_url(stream.redis_url)} stream "
          f"{stream.stream!r} group {stream.group!r} -> {settings.base_url}", flush=True)
    try:
        relay.run()
    finally:
        relay.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    command = args[0] if args else ""
    problem = missing_extras(command)
    if problem is not None:
        print(problem, file=sys.stderr)
        return 2
    if command == "demo":  # everything after `demo` belongs to the demo's own parser
        return _run_demo(args[1:])
    parser = build_parser()
    ns = parser.parse_args(args)
    if ns.command == "gateway":
        return _run_gateway(ns)
    if ns.command == "mock-llm":
        return _run_mock(ns)
    if ns.command == "report":
        if ns.dead_letters:
            return _run_dead_letters()
        return _run_report(ns)
    if ns.command == "drain":
        from ._drain import drain

        return drain(ns.timeout, retry_dead=ns.retry_dead, adopt_keys=ns.adopt_key)
    if ns.command == "relay":
        return _run_relay(ns)
    if ns.command == "dashboard":
        return _run_dashboard(ns)
    return _run_demo(ns.args)


if __name__ == "__main__":
    sys.exit(main())
