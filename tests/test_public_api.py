"""The public names are a contract: __all__ matches what the package exports, and each is there."""

from __future__ import annotations

import aerostack_meter

CONTRACT = {"init", "log", "wrap", "consumer", "flush", "aflush", "shutdown", "stats", "uninstrument",
            "current_consumer", "carry_consumer", "Meter", "MissingConsumerError", "ConfigError",
            "Usage", "UsageEvent", "Stats"}


def test_all_matches_the_exports() -> None:
    public = {n for n in dir(aerostack_meter) if not n.startswith("_") and n not in {
        "auto", "providers", "sinks", "servers", "cli", "demo", "testing", "otel", "relay"}}
    assert set(aerostack_meter.__all__) - {"__version__"} == public
    assert set(aerostack_meter.__all__) >= CONTRACT


def test_private_modules_keep_their_own_all() -> None:
    import importlib
    import pkgutil

    for info in pkgutil.iter_modules(aerostack_meter.__path__):
        if info.name.startswith("_") and info.name not in ("__main__",):
            mod = importlib.import_module(f"aerostack_meter.{info.name}")
            if info.name != "_version":
                assert hasattr(mod, "__all__"), info.name


def test_the_version_is_written_once() -> None:
    import importlib.metadata
    import re
    from pathlib import Path

    assert aerostack_meter.__version__ == importlib.metadata.version("aerostack-meter")
    root = Path(__file__).resolve().parent.parent
    pyproject = (root / "pyproject.toml").read_text()
    assert re.search(r'^dynamic = \[[^\]]*"version"', pyproject, re.M)
    assert not re.search(r"^version\s*=", pyproject, re.M)
