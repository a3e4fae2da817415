"""`import aerostack_meter` imports only what every configuration needs (issue 16): no SDK, no
httpx (the billing sink's client), no wrapt or asyncio (wrap()/instrument() and async code pull
them in on first use), and not the meter either: settings, the delivery machinery, budgets, cost
tables, dead letters and the rejected store load with ``init()`` (or the first ``log()``), each
only when the configuration needs it. Checked in a fresh interpreter, where nothing else imported
them first."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import aerostack_meter as am

SDKS = ("openai", "anthropic", "google", "boto3", "botocore", "mistralai")
HEAVY = ("httpx", "wrapt", "asyncio", "ssl", *SDKS)
# Not needed by `import aerostack_meter` (each costs a few ms, or brings modules that do):
# the standard library...
NOT_AT_IMPORT_STDLIB = ("dataclasses", "inspect", "concurrent.futures", "sqlite3", "uuid", "platform",
                        "hashlib", "json", "decimal", "datetime", "urllib.parse", "queue", "random")
# ...and ours: the meter and everything behind it
NOT_AT_IMPORT_OURS = tuple(f"aerostack_meter.{m}" for m in (
    "_meter", "_config", "_budget", "_cost", "_deferred", "_reporter", "_store", "_journal",
    "_deadletter", "_otherkeys", "_rejected", "_stats", "_events", "_secret", "_paths", "_drain",
    "sinks", "providers"))
# What init() with the default configuration (no API key: the local ledger; the durable journal)
# still does not need in a process without any SDK
NOT_AT_INIT = ("httpx", "wrapt", "asyncio", "ssl", "concurrent.futures", "uuid", "platform",
               "genai_prices", *SDKS, *(f"aerostack_meter.{m}" for m in (
                   "_budget", "_wrap", "_wrapping", "_drain", "_health",
                   "providers.openai", "providers.anthropic", "providers._base", "sinks._aerostack")))


def _modules_after(code: str, *, cwd: Path | None = None, env: dict[str, str] | None = None) -> set[str]:
    script = textwrap.dedent(f"""
        import sys
        class Block:  # no SDK installed, as far as this process can tell
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {SDKS!r}:
                    raise ImportError(name)
        sys.meta_path.insert(0, Block())
    """) + code + "\nprint(' '.join(sorted(sys.modules)))\n"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                         cwd=cwd, env=env)
    assert out.returncode == 0, out.stderr
    return set(out.stdout.split())


def _clean_env(tmp: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AEROSTACK_")}
    env["AEROSTACK_METER_STATE_DIR"] = str(tmp / "state")
    env.update(extra)
    return env


def test_import_pulls_in_no_heavy_module() -> None:
    loaded = _modules_after("import aerostack_meter")
    assert "aerostack_meter" in loaded
    assert loaded.isdisjoint(HEAVY), sorted(loaded & set(HEAVY))


def test_import_defers_the_meter_and_what_only_it_needs() -> None:
    loaded = _modules_after("import aerostack_meter\n"
                            "assert aerostack_meter.get_meter() is None and aerostack_meter.flush()\n"
                            "with aerostack_meter.consumer('usr_1'):\n"
                            "    assert aerostack_meter.current_consumer() == 'usr_1'\n")
    assert "aerostack_meter._context" in loaded  # what consumer() is made of is there
    early = loaded & {*NOT_AT_IMPORT_STDLIB, *NOT_AT_IMPORT_OURS}
    assert not early, sorted(early)


def test_init_with_the_default_config_and_no_sdk_loads_what_it_needs_only(tmp_path: Path) -> None:
    loaded = _modules_after(
        "import aerostack_meter\n"
        "meter = aerostack_meter.init()\n"
        "assert meter.durable and type(meter.sink).__name__ == 'LedgerSink', meter\n"
        "aerostack_meter.log('usr_1', 3)\n"
        "assert aerostack_meter.flush(30)\n", cwd=tmp_path, env=_clean_env(tmp_path))
    assert {"aerostack_meter._meter", "aerostack_meter._journal", "sqlite3"} <= loaded  # it ran
    early = loaded & set(NOT_AT_INIT)
    assert not early, sorted(early)
    assert (tmp_path / "aerostack-usage.db").exists()  # the usage went to the ledger


def test_init_with_an_api_key_needs_no_sqlite(tmp_path: Path) -> None:
    """SQLite is for the ledger and for usage refused for lack of funds (kept on the first
    refusal): a meter that sends to the billing API does not import it."""
    loaded = _modules_after(
        "import aerostack_meter\n"
        "meter = aerostack_meter.init('sk_test_import', api_id='api_1', base_url='http://127.0.0.1:9/v1')\n"
        "assert type(meter.sink).__name__ == 'AerostackSink', meter\n",
        cwd=tmp_path, env=_clean_env(tmp_path))
    assert "httpx" in loaded  # the billing sink's client: this configuration needs it
    early = loaded & {"sqlite3", "aerostack_meter._usage_query", "aerostack_meter.sinks._ledger"}
    assert not early, sorted(early)


def test_lazy_names_still_resolve() -> None:
    loaded = _modules_after(
        "import aerostack_meter\n"
        "from aerostack_meter import wrap, instrument, uninstrument\n"
        "from aerostack_meter.sinks import AerostackSink, LedgerSink\n"
        "assert callable(wrap) and callable(instrument) and callable(uninstrument)\n"
        "assert aerostack_meter.wrap is wrap\n"
        "assert 'wrap' in dir(aerostack_meter)\n")
    assert {"wrapt", "httpx"} <= loaded


def test_every_public_name_resolves_to_its_module_object() -> None:
    """Every name of ``__all__`` (lazy or not) resolves in a fresh interpreter, is listed by
    ``dir()``, and is the object its module defines (one class, whichever way it is reached)."""
    loaded = _modules_after(textwrap.dedent("""
        import importlib
        import aerostack_meter as am
        from aerostack_meter import Budget, Meter, Settings, Stats, UsageEvent, DEFAULT_BASE_URL
        for name in am.__all__:
            value = getattr(am, name)
            assert name in dir(am), name
        assert Meter is importlib.import_module("aerostack_meter._meter").Meter
        assert Budget is importlib.import_module("aerostack_meter._budget").Budget
        assert Settings is importlib.import_module("aerostack_meter._config").Settings
        assert DEFAULT_BASE_URL == "https://api.aerostack.dev/v1"
        assert am.stats() == Stats()  # no meter yet: an empty snapshot
        assert am.CostPolicy is importlib.import_module("aerostack_meter._cost").CostPolicy
        assert UsageEvent("usr_1", "api_1", "tokens", 3).units == 3
    """))
    assert "aerostack_meter._meter" in loaded
    assert sorted(am.__all__) == sorted(set(am.__all__))


def test_unknown_attribute_is_still_an_attribute_error() -> None:
    loaded = _modules_after(
        "import aerostack_meter, aerostack_meter.sinks\n"
        "for mod in (aerostack_meter, aerostack_meter.sinks):\n"
        "    try:\n"
        "        mod.no_such_name\n"
        "    except AttributeError:\n"
        "        pass\n"
        "    else:\n"
        "        raise SystemExit('no AttributeError')\n")
    assert "aerostack_meter.sinks" in loaded
