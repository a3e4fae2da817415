"""`import aerostack_meter` imports only what every configuration needs (issue 16): no SDK, no
httpx (the billing sink's client), no wrapt or asyncio (wrap()/instrument() and async code pull
them in on first use). Checked in a fresh interpreter, where nothing else imported them first."""

from __future__ import annotations

import subprocess
import sys
import textwrap

HEAVY = ("httpx", "wrapt", "asyncio", "ssl", "openai", "anthropic")


def _modules_after(code: str) -> set[str]:
    script = textwrap.dedent("""
        import sys
        class Block:  # no SDK installed, as far as this process can tell
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("openai", "anthropic", "google", "boto3", "botocore", "mistralai"):
                    raise ImportError(name)
        sys.meta_path.insert(0, Block())
    """) + code + "\nprint(' '.join(sorted(sys.modules)))\n"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    return set(out.stdout.split())


def test_import_pulls_in_no_heavy_module() -> None:
    loaded = _modules_after("import aerostack_meter")
    assert "aerostack_meter" in loaded
    assert loaded.isdisjoint(HEAVY), sorted(loaded & set(HEAVY))


def test_lazy_names_still_resolve() -> None:
    loaded = _modules_after(
        "import aerostack_meter\n"
        "from aerostack_meter import wrap, instrument, uninstrument\n"
        "from aerostack_meter.sinks import AerostackSink, LedgerSink\n"
        "assert callable(wrap) and callable(instrument) and callable(uninstrument)\n"
        "assert aerostack_meter.wrap is wrap\n"
        "assert 'wrap' in dir(aerostack_meter)\n")
    assert {"wrapt", "httpx"} <= loaded


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
