"""The repository's own promises: CI runs the README's test command, then the linters."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _test_command(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("python3 -m venv .venv &&")]


def test_ci_runs_exactly_the_readme_test_command_then_the_linters() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    [command] = _test_command(ci)
    assert command in _test_command(readme)
    assert re.search(r"python -m pytest -n auto$", command)  # parallel: under 5 minutes on 2 cores
    after = ci[ci.index(command):]
    assert "bash scripts/sdk-matrix.sh" in after
    assert re.search(r"^ruff check src tests$", after, re.M) and re.search(r"^mypy$", after, re.M)


def test_mypy_reports_unused_ignores() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r"^strict = true$", pyproject, re.M)
    assert re.search(r"^warn_unused_ignores = true$", pyproject, re.M)


_TEXT = {".md", ".py", ".toml", ".sh", ".txt", ".cfg", ".ini", ".yml", ".yaml", ".json", ""}
_SKIP_DIRS = {"__pycache__", "build", "dist", "node_modules"}
# a path on a developer's machine: /work/..., /root/..., /home/... (not a URL's path: no word before)
_MACHINE_PATH = re.compile(r"(?<![\w.~-])/(?:work|root|home)/\w")


def _repo_text_files() -> list[Path]:
    found = [ROOT / ".ci" / "run", ROOT / ".gitignore"]
    stack = [ROOT]
    while stack:
        for p in stack.pop().iterdir():
            if p.is_dir():
                if not p.name.startswith(".") and p.name not in _SKIP_DIRS and not p.name.endswith(".egg-info"):
                    stack.append(p)
            elif p.suffix in _TEXT and not p.name.startswith(".") and p.stat().st_size < 2_000_000:
                found.append(p)
    return found


def test_no_path_of_a_developer_machine_in_the_repository() -> None:
    hits = []
    for path in _repo_text_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        hits += [f"{path.relative_to(ROOT)}: {m.group(0)}" for m in _MACHINE_PATH.finditer(text)]
    assert hits == []


def test_the_license_matches_pyproject() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^license = "MIT"$', pyproject, re.M)
    assert (ROOT / "LICENSE").read_text().startswith("MIT License\n")


_UNRAISABLE = '''
import gc, socket, weakref


class Thing:
    pass


def test_a_failing_finalizer_fails_the_test():
    t = Thing()
    weakref.finalize(t, lambda: 1 / 0)
    del t
    gc.collect()


def test_a_socket_left_to_the_gc_does_not():
    s = socket.socket()
    del s
    gc.collect()
'''


def test_unraisable_exceptions_fail_tests_but_resource_warnings_do_not(tmp_path: Path) -> None:
    import subprocess
    import sys

    (tmp_path / "test_unraisable.py").write_text(_UNRAISABLE)
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
                           "-c", str(ROOT / "pyproject.toml"), "--rootdir", str(tmp_path),
                           str(tmp_path / "test_unraisable.py")],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert "1 failed, 1 passed" in done.stdout, done.stdout[-3000:]
    assert "FAILED test_unraisable.py::test_a_failing_finalizer_fails_the_test" in done.stdout
    assert "ZeroDivisionError" in done.stdout
