"""Docs that run: every Python block of README.md and docs/**/*.md runs as written, in order, one
namespace per page, against the local gateway emulator and mock LLM server (Sybil parses them).

The environment is what a reader would have set: ``AEROSTACK_API_KEY`` / ``AEROSTACK_API_ID`` /
``AEROSTACK_BASE_URL`` point at the emulator, ``OPENAI_BASE_URL`` / ``ANTHROPIC_BASE_URL`` at the
mock, and the working directory is empty. A block that cannot run as written is marked a fragment
with ``<!-- skip: next "fragment: why" -->`` just before it (see README.md, "Development"); a
fragment must still compile. New pages are covered without any change here.
"""

from __future__ import annotations

import ast
import gc
import re
import sys
import unittest
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sybil import Document
from sybil.parsers.markdown import PythonCodeBlockParser, SkipParser

import aerostack_meter as am

from .conftest import API_KEY

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted([ROOT / "README.md", *ROOT.glob("docs/**/*.md")])
_PYTHONISH_FENCE = re.compile(r"^[ \t]*(?:`{3,}|~{3,})[ \t]*(py|python3|pycon|ipython|Python)\b", re.M)
_FRAGMENT = re.compile(r"<!--\s*skip:\s*(next|start)\s+(\S.*?)\s*-->")


@pytest.fixture
def reader_env(gateway: Any, mock_llm: Any, tmp_path: Path,
               monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    gateway.client.reset()
    for name in ("AEROSTACK_METER_DEFAULT_CONSUMER", "AEROSTACK_METER_LEDGER", "AEROSTACK_METER_SPOOL",
                 "AEROSTACK_METER_DISABLED", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AEROSTACK_API_KEY", API_KEY)
    monkeypatch.setenv("AEROSTACK_API_ID", "api_docs")
    monkeypatch.setenv("AEROSTACK_BASE_URL", gateway.url)
    monkeypatch.setenv("OPENAI_BASE_URL", mock_llm.url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-docs-local")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", mock_llm.anthropic_base_url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-docs-local")
    monkeypatch.chdir(tmp_path)
    sys.modules.pop("aerostack_meter.auto", None)  # `import aerostack_meter.auto` runs init() again
    try:
        yield
    finally:
        am.shutdown(timeout=5)
        am.uninstrument()
        sys.modules.pop("aerostack_meter.auto", None)


def _page_id(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_every_python_block_runs_or_is_a_marked_fragment(page: Path, reader_env: None) -> None:
    text = page.read_text(encoding="utf-8")
    odd = _PYTHONISH_FENCE.findall(text)
    assert not odd, f"{_page_id(page)}: label Python blocks ```python (they are run), not {odd}"
    for reason in _FRAGMENT.findall(text):
        assert reason[1].strip("\"'").startswith("fragment"), f"{_page_id(page)}: skip reason {reason}"
    document = Document.parse(str(page), PythonCodeBlockParser(), SkipParser())
    ran = fragments = 0
    for example in document:
        code = isinstance(example.parsed, str)
        gc.collect()  # CPython 3.11 may crash compile() when a GC finalizer runs inside it
        gc.disable()
        try:
            example.evaluate()
        except unittest.SkipTest:
            fragments += 1
            source = "\n" * example.line + str(example.parsed)
            compile(source, str(page), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True)
            continue
        finally:
            gc.enable()
        ran += code
    meter = am.get_meter()
    if meter is not None:  # what a page configured delivers, with nothing lost on the way
        assert meter.flush(10), f"{_page_id(page)}: usage not delivered"
        st = meter.stats()
        deliberate = {"before_send"}  # a hook that returned None
        assert st.internal_errors == 0 and set(st.dropped) <= deliberate, (_page_id(page), st)
    blocks = len(re.findall(r"^\s*```python\s*$", text, re.M))
    assert ran + fragments == blocks, f"{_page_id(page)}: {blocks} blocks, {ran} ran, {fragments} fragments"


def test_the_readme_lists_every_stats_field() -> None:
    import dataclasses

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("### Stats"):]
    section = section[:section.index("\n## ")]
    names = [f.name for f in dataclasses.fields(am.Stats)] + ["events_dropped"]
    missing = [n for n in names if f"| `{n}` |" not in section]
    assert missing == []


def test_the_package_metadata_has_no_relative_links() -> None:
    import importlib.metadata

    description = importlib.metadata.metadata("aerostack-meter").get_payload()  # type: ignore[attr-defined]
    assert "Quickstart" in description
    assert not re.findall(r"\]\((?![a-z][a-z0-9+.-]*:|#)[^)]*\)", description)


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_relative_links_point_at_files(page: Path) -> None:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    targets = re.findall(r"\]\((?![a-z][a-z0-9+.-]*:|#)([^)\s#]+)", text)
    assert [t for t in targets if not (page.parent / t).exists()] == []
