"""PatchSet: targets in modules not imported yet are wrapped on their import, never imported by us."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from aerostack_meter._call import Endpoint
from aerostack_meter._wrapping import MeterWrapper, PatchSet, Target


@pytest.fixture
def lazy_pkg(tmp_path: Path) -> Iterator[str]:
    """A package whose ``res`` submodule is only loaded on first use (like the SDKs' resources)."""
    name = f"lazy_sdk_{tmp_path.name.replace('-', '_')}"
    pkg = tmp_path / name
    pkg.mkdir()
    (pkg / "__init__.py").write_text(textwrap.dedent("""
        import importlib

        def __getattr__(attr):
            if attr == "Res":
                return importlib.import_module(__name__ + ".res").Res
            raise AttributeError(attr)
    """))
    (pkg / "res.py").write_text("class Res:\n    def create(self):\n        return 42\n")
    sys.path.insert(0, str(tmp_path))
    try:
        yield name
    finally:
        sys.path.remove(str(tmp_path))
        for mod in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
            del sys.modules[mod]


def _patchset(module: str) -> PatchSet:
    return PatchSet("lazy", lambda: [Target(module, "Res.create", Endpoint())])


def test_a_module_not_imported_yet_is_wrapped_when_imported(lazy_pkg: str) -> None:
    import importlib

    ps = _patchset(f"{lazy_pkg}.res")
    assert ps.patch() == 0  # nothing to wrap yet, and nothing imported by patching
    assert f"{lazy_pkg}.res" not in sys.modules
    assert ps.patched
    res = importlib.import_module(f"{lazy_pkg}.res")
    assert isinstance(res.Res.__dict__["create"], MeterWrapper)
    assert res.Res().create() == 42  # no meter: calls straight through
    ps.unpatch()
    assert not isinstance(res.Res.__dict__["create"], MeterWrapper)


def test_a_hook_pending_from_before_unpatch_does_nothing(lazy_pkg: str) -> None:
    import importlib

    ps = _patchset(f"{lazy_pkg}.res")
    ps.patch()
    ps.unpatch()
    res = importlib.import_module(f"{lazy_pkg}.res")
    assert not isinstance(res.Res.__dict__["create"], MeterWrapper)
    assert not ps.patched


def test_a_lazy_package_resolving_names_during_the_hook_does_not_deadlock(lazy_pkg: str) -> None:
    import importlib

    # The target's module is the package; resolving ``Res`` on it imports the submodule, whose
    # own hook (a second target) fires inside the first hook, on the same thread.
    ps = PatchSet("lazy", lambda: [Target(lazy_pkg, "Res.create", Endpoint()),
                                   Target(f"{lazy_pkg}.res", "Res.create", Endpoint())])
    ps.patch()
    pkg = importlib.import_module(lazy_pkg)
    create = pkg.Res.__dict__["create"]
    assert isinstance(create, MeterWrapper)
    assert not isinstance(create.__wrapped__, MeterWrapper)  # wrapped once
    ps.unpatch()
    assert not isinstance(pkg.Res.__dict__["create"], MeterWrapper)
