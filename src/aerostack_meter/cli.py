"""The `aerostack-meter` command: `gateway`, `mock-llm`, `report` and `demo`.

The server subcommands run until SIGINT or SIGTERM and print one line, `... listening on URL`,
once they accept connections.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from .servers._runner import ServerHandle

_H = TypeVar("_H", bound="ServerHandle")

__all__ = ["build_parser", "main"]

DEFAULT_GATEWAY_PORT = 8787
DEFAULT_MOCK_PORT = 8788


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


def _add_gateway(sub: Any) -> None:
    p = sub.add_parser(
        "gateway", help="run the billing API emulator", description="Run the billing API emulator."
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=DEFAULT_GATEWAY_PORT)
    p.add_argument("--db", default=None, help="SQLite file (default: a temporary file)")
    p.add_argument(
        "--key",
        action="append",
        default=None,
        help="accepted X-Aerostack-Key (repeatable; default: any)",
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
    p.add_argument("--port", type=int, default=DEFAULT_MOCK_PORT)
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aerostack-meter", description="aerostack-meter tools")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_gateway(sub)
    _add_mock(sub)
    report = sub.add_parser("report", help="print usage totals", description="Print usage totals.")
    source = report.add_mutually_exclusive_group()
    source.add_argument(
        "--ledger",
        default=None,
        help="ledger SQLite file (default: $AEROSTACK_METER_LEDGER or ./aerostack-usage.db)",
    )
    source.add_argument("--gateway", default=None, metavar="URL", help="a gateway emulator's URL")
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
    """Start a server, say where it listens, and serve until SIGINT or SIGTERM."""
    try:
        handle = start()
    except (OSError, ValueError, RuntimeError) as exc:
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


def _run_report(ns: argparse.Namespace) -> int:
    import httpx

    from .servers._report import default_ledger_path, format_totals, gateway_totals, ledger_totals

    try:
        if ns.gateway:
            rows = gateway_totals(ns.gateway)
            title = f"Usage totals from gateway {ns.gateway}"
        else:
            path = ns.ledger or default_ledger_path()
            rows = ledger_totals(path)
            title = f"Usage totals from ledger {os.path.abspath(path)}"
    except (OSError, httpx.HTTPError) as exc:
        print(f"aerostack-meter report: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # sqlite errors, unexpected shapes: say so, no traceback
        print(f"aerostack-meter report: cannot read totals: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(format_totals(rows, title=title))
    return 0


def _run_demo(args: Sequence[str]) -> int:
    try:
        demo = importlib.import_module("aerostack_meter.demo")
    except ModuleNotFoundError as exc:
        if exc.name != "aerostack_meter.demo":
            raise
        print("aerostack-meter demo: the demo is not available in this build", file=sys.stderr)
        return 2
    result = demo.main(list(args))
    return int(result or 0)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["demo"]:  # everything after `demo` belongs to the demo's own parser
        return _run_demo(args[1:])
    parser = build_parser()
    ns = parser.parse_args(args)
    if ns.command == "gateway":
        return _run_gateway(ns)
    if ns.command == "mock-llm":
        return _run_mock(ns)
    if ns.command == "report":
        return _run_report(ns)
    return _run_demo(ns.args)


if __name__ == "__main__":
    sys.exit(main())
