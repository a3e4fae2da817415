"""The provider registry: providers are data the core discovers; the core names none of them; a
provider declared from readers alone is patched, proxied and metered like the built-in ones."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import aerostack_meter as am
from aerostack_meter import providers
from aerostack_meter._usage import Usage, to_count
from aerostack_meter._wrapping import Target
from aerostack_meter.providers._base import Provider, ReaderEndpoint, in_range, read_field
from tests.conftest import billed

SRC = Path(am.__file__).parent


def test_every_provider_module_imports_without_its_sdk() -> None:
    """``init()`` must never import an SDK the application does not use: the registry imports every
    provider module, so none may import its SDK."""
    code = textwrap.dedent("""
        import sys
        from aerostack_meter import providers
        ps = providers.all_providers()
        assert ps, "no providers"
        leaked = [p.package for p in ps if p.package in sys.modules]
        print(",".join(leaked))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


def _code_words(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """Names, attributes, imported modules and string constants of a module, docstrings excluded."""
    docstrings = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Expr)
                  and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            yield node.lineno, node.id
        elif isinstance(node, ast.Attribute):
            yield node.lineno, node.attr
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                yield node.lineno, alias.name
            if isinstance(node, ast.ImportFrom) and node.module:
                yield node.lineno, node.module
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str)
              and id(node) not in docstrings):
            yield node.lineno, node.value


def test_the_core_names_no_provider() -> None:
    """Provider names and SDK packages appear in no core module's code (only under ``providers/``)."""
    words = set()
    for p in providers.all_providers():
        words |= {p.name, p.package.split(".")[0], p.distribution}
    pattern = re.compile(r"\b(" + "|".join(sorted(map(re.escape, words))) + r")\b", re.IGNORECASE)
    offenders = []
    for path in sorted(SRC.glob("_*.py")):
        for line, word in _code_words(ast.parse(path.read_text())):
            if pattern.search(word):
                offenders.append(f"{path.name}:{line}: {word}")
    assert offenders == []


def test_declarations_are_complete() -> None:
    # init() skips a provider whose SDK is missing by sdk_of(), without importing its module
    assert providers.declared_names() == providers.names()
    for p in providers.all_providers():
        sdk = providers.sdk_of(p.name)
        assert sdk is not None and (p.package == sdk or p.package.startswith(sdk + ".")), p.name
        assert p.package and p.distribution and p.versions
        assert in_range("0", p.versions) is False  # a real lower bound
        assert isinstance(p.client_tree, dict), p.name  # empty for a callback provider (litellm)


@pytest.mark.parametrize(("version", "spec", "ok"), [
    ("1.40.0", ">=1.40,<4", True), ("1.39.9", ">=1.40,<4", False), ("4.0.0", ">=1.40,<4", False),
    ("3.57.0", ">=1.40,<4", True), ("2.4.6", ">=1,!=2.4.6", False), ("2.4.7", ">=1,!=2.4.6", True),
    ("1.0.0rc1", ">=1.0", True), ("x", ">=1", None), ("1.0", "~=1", None),
])
def test_version_ranges(version: str, spec: str, ok: bool | None) -> None:
    assert in_range(version, spec) is ok


def test_unknown_instrument_name_lists_the_registry() -> None:
    with pytest.raises(am.ConfigError) as err:
        am.Meter(disabled=True, instrument=("nosuch",))
    for name in providers.names():
        assert name in str(err.value)


# -- a provider declared from readers: a tiny SDK package written for the test --------------------

_SDK = '''
class Reply:
    def __init__(self, n_in, n_out):
        self.usage = {"in": n_in, "out": n_out}
        self.text = "x" * n_out


class Chat:
    def send(self, prompt):
        return Reply(len(prompt), 5)

    def stream(self, prompt):
        # cumulative usage on every event: the last value wins
        for i in range(1, 4):
            yield {"text": "abcd", "usage": {"in": len(prompt), "out": 2 * i}}

    async def asend(self, prompt):
        return Reply(len(prompt), 7)


class Client:
    def __init__(self):
        self.chat = Chat()
'''


def _usage(u: Any) -> Usage | None:
    if u is None:
        return None
    n_in, n_out = to_count(read_field(u, "in")), to_count(read_field(u, "out"))
    if n_in is None or n_out is None:
        return None
    return Usage("toy", None, n_in, n_out, n_in + n_out)


def _event_chars(event: Any) -> int:
    return len(event["text"])


@pytest.fixture
def toy(tmp_path: Path, meter: Any) -> Iterator[tuple[Any, Provider]]:
    name = f"toy_sdk_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(_SDK)
    sys.path.insert(0, str(tmp_path))
    send = ReaderEndpoint("toy", "chat.send", response=lambda r: _usage(read_field(r, "usage")))
    stream = ReaderEndpoint("toy", "chat.stream", event=lambda e: _usage(e.get("usage")),
                            event_chars=_event_chars)
    provider = Provider(
        name=f"toy-{tmp_path.name}", package=name, versions=">=0", targets=lambda: [
            Target(name, "Chat.send", send, is_async=False, returns="response"),
            Target(name, "Chat.asend", send, is_async=True),
            Target(name, "Chat.stream", stream, is_async=False, returns="stream"),
        ],
        client_tree={"chat": {"send": send, "asend": send, "stream": stream}})
    providers.register(provider)
    try:
        yield __import__(name), provider
    finally:
        provider.unpatch()
        providers._extra.pop(provider.name, None)
        sys.path.remove(str(tmp_path))
        sys.modules.pop(name, None)


async def test_a_reader_provider_is_patched_and_metered(toy: tuple[Any, Provider], gateway: Any) -> None:
    sdk, provider = toy
    assert am.instrument((provider.name,)) == [provider.name]
    c = sdk.Client()
    with am.consumer("u1"):
        assert c.chat.send("hello").text == "xxxxx"  # 5 in + 5 out
        assert await c.chat.asend("hey") is not None  # 3 in + 7 out
        events = list(c.chat.stream("hi"))  # last cumulative value: 2 in + 6 out
    assert [e["usage"]["out"] for e in events] == [2, 4, 6]
    assert billed(gateway) == {"u1": 10 + 10 + 8}
    assert am.stats().calls_metered == 3


def test_a_reader_provider_stream_left_early_is_estimated_once(toy: tuple[Any, Provider],
                                                                gateway: Any) -> None:
    sdk, provider = toy
    am.instrument((provider.name,))
    with am.consumer("u1"):
        s = sdk.Client().chat.stream("hi")
        first = next(s)
        s.close()
    assert first["usage"]["out"] == 2
    assert billed(gateway) == {"u1": 2 + 2}  # the exact usage seen so far (last value wins)
    st = am.stats()
    assert (st.calls_metered, st.internal_errors) == (1, 0)


def test_a_reader_provider_is_wrapped_without_patching(toy: tuple[Any, Provider], gateway: Any) -> None:
    sdk, _ = toy
    c = am.wrap(sdk.Client(), consumer_id="w1")
    assert isinstance(c, sdk.Client)
    c.chat.send("abc")
    sdk.Client().chat.send("abc")  # not wrapped, not patched: not metered
    assert billed(gateway) == {"w1": 3 + 5}


def test_a_hook_that_raises_is_counted_and_the_stream_goes_on(toy: tuple[Any, Provider],
                                                              gateway: Any) -> None:
    """The generic layer guards every provider hook once: a reader raising on an event the SDK
    yielded fine never reaches the user's loop."""
    sdk, provider = toy
    am.instrument((provider.name,))
    target = provider.targets()[2]
    assert isinstance(target.endpoint, ReaderEndpoint)
    target.endpoint._event = lambda e: e["missing"]  # KeyError on every event
    with am.consumer("u1"):
        events = list(sdk.Client().chat.stream("hi"))
    assert len(events) == 3
    st = am.stats()
    assert am.flush(5)
    st = am.stats()
    assert (st.internal_errors, st.calls_metered, st.events_estimated) == (1, 1, 1)
