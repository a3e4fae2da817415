"""Usage journaled under one API key is only ever delivered with that key (real processes, a
loopback billing stand-in that records the X-Aerostack-Key of every request). Two apps on one host
share the default state directory and base URL but not their keys; a key is rotated; a directory
written before key fingerprints existed is still adopted by whoever sends to its base URL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from aerostack_meter import Meter
from aerostack_meter._journal_format import encode_event, encode_mark, key_blob
from aerostack_meter._paths import destination_dir, destination_slug, legacy_dir
from aerostack_meter._secret import Secret
from aerostack_meter.sinks import AerostackSink, FanOutSink, LedgerSink
from tests.standin import StandIn, standin_server

KEY_A = "ac_secret_APP_A_k3y"
KEY_B = "ac_secret_APP_B_k3y"

# app A journals 777 units and dies by SIGKILL before its reporter delivers them
APP_A = textwrap.dedent("""
    import os, aerostack_meter as am
    am.init(api_id="api_app_a", flush_interval=30, instrument=False)
    am.log("usr_of_app_a", 777)
    print("logged", flush=True)
    os.kill(os.getpid(), 9)
""")
# app B, another key: logs its own usage, delivers it, reports its stats
APP_B = textwrap.dedent("""
    import json, aerostack_meter as am
    am.init(api_id="api_app_b", flush_interval=0.05, instrument=False)
    am.log("usr_of_app_b", 5)
    assert am.flush(10)
    st = am.stats()
    print(json.dumps({"awaiting_key": st.awaiting_key, "events_adopted": st.events_adopted}), flush=True)
""")


@pytest.fixture
def gw() -> Iterator[StandIn]:
    with standin_server() as server:
        yield server


def env(home: Path, url: str, key: str) -> dict[str, str]:
    """The default state directory of one user (both apps share it), one base URL, one key."""
    out = {k: v for k, v in os.environ.items() if not k.startswith("AEROSTACK_")}
    out.update(HOME=str(home), XDG_STATE_HOME=str(home / ".local" / "state"),
               AEROSTACK_BASE_URL=url, AEROSTACK_API_KEY=key)
    return out


def run(code: str, home: Path, url: str, key: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], env=env(home, url, key), capture_output=True,
                          text=True, timeout=60)


def drain(home: Path, url: str, key: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "aerostack_meter.cli", "drain", "--timeout", "10"],
                          env=env(home, url, key), capture_output=True, text=True, timeout=60)


def sent(gw: StandIn) -> list[tuple[str, str, int]]:
    """(key, consumer, units) of every request the stand-in accepted."""
    return [(r.headers["x-aerostack-key"], r.body["consumerId"], r.body["units"]) for r in gw.accepted()]


def kill_app_a(home: Path, url: str) -> None:
    a = run(APP_A, home, url, KEY_A)
    assert a.stdout.strip() == "logged" and a.returncode == -9, a.stderr


def test_another_apps_usage_is_never_sent_with_our_key_and_its_own_key_delivers_it_once(
        tmp_path: Path, gw: StandIn) -> None:
    kill_app_a(tmp_path, gw.url)
    b = run(APP_B, tmp_path, gw.url, KEY_B)
    assert b.returncode == 0, b.stderr
    stats = json.loads(b.stdout)
    assert stats == {"awaiting_key": 1, "events_adopted": 0}
    warnings = [line for line in b.stderr.splitlines() if "another API key" in line]
    assert len(warnings) == 1, b.stderr  # said once
    assert "aerostack-meter drain" in warnings[0] and Secret(KEY_A).fingerprint() in warnings[0]
    assert KEY_A not in b.stderr and KEY_B not in b.stderr
    assert sent(gw) == [(KEY_B, "usr_of_app_b", 5)]  # B never sent A's usage

    again = run(APP_B, tmp_path, gw.url, KEY_B)  # a restart of B: still not B's to send
    assert json.loads(again.stdout)["awaiting_key"] == 1
    assert [c for _k, c, _u in sent(gw)] == ["usr_of_app_b", "usr_of_app_b"]

    d = drain(tmp_path, gw.url, KEY_A)  # app A's key delivers A's usage: once, with key A
    assert d.returncode == 0, d.stdout + d.stderr
    assert "delivered 1 event(s)" in d.stdout
    assert [s for s in sent(gw) if s[1] == "usr_of_app_a"] == [(KEY_A, "usr_of_app_a", 777)]
    assert drain(tmp_path, gw.url, KEY_A).returncode == 0
    assert json.loads(run(APP_B, tmp_path, gw.url, KEY_B).stdout)["awaiting_key"] == 0
    assert [s for s in sent(gw) if s[1] == "usr_of_app_a"] == [(KEY_A, "usr_of_app_a", 777)]
    assert {k for k, c, _u in sent(gw) if c == "usr_of_app_b"} == {KEY_B}


def test_the_same_key_at_its_next_start_adopts_what_it_left(tmp_path: Path, gw: StandIn) -> None:
    """A key rotation's old key, or app A simply restarting: the same key adopts at once."""
    kill_app_a(tmp_path, gw.url)
    a = run(APP_B.replace("api_app_b", "api_app_a"), tmp_path, gw.url, KEY_A)
    assert a.returncode == 0, a.stderr
    assert json.loads(a.stdout) == {"awaiting_key": 0, "events_adopted": 1}
    assert sorted(sent(gw)) == [(KEY_A, "usr_of_app_a", 777), (KEY_A, "usr_of_app_b", 5)]


def test_drain_with_another_key_delivers_nothing_of_it_and_says_so(tmp_path: Path, gw: StandIn) -> None:
    kill_app_a(tmp_path, gw.url)
    d = drain(tmp_path, gw.url, KEY_B)
    assert d.returncode == 1  # something is left: for another key
    assert "delivered 0 event(s)" in d.stdout
    assert "1 event(s) for this base URL were journaled under another API key" in d.stdout
    assert Secret(KEY_A).fingerprint() in d.stdout and "AEROSTACK_API_KEY=<that key>" in d.stdout
    assert KEY_A not in d.stdout + d.stderr and KEY_B not in d.stdout + d.stderr
    assert gw.requests == []
    d = drain(tmp_path, gw.url, KEY_A)
    assert d.returncode == 0 and sent(gw) == [(KEY_A, "usr_of_app_a", 777)]


def test_drain_adopt_key_moves_a_revoked_keys_usage_to_this_key_on_request(
        tmp_path: Path, gw: StandIn) -> None:
    """A key rotated and revoked (or mistyped): only the operator moves its usage to the new key."""
    kill_app_a(tmp_path, gw.url)
    bad = subprocess.run([sys.executable, "-m", "aerostack_meter.cli", "drain", "--adopt-key", KEY_A],
                         env=env(tmp_path, gw.url, KEY_B), capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "takes a key fingerprint" in bad.stderr
    assert KEY_A not in bad.stderr and gw.requests == []
    fa = Secret(KEY_A).fingerprint()
    d = subprocess.run([sys.executable, "-m", "aerostack_meter.cli", "drain", "--adopt-key", fa],
                       env=env(tmp_path, gw.url, KEY_B), capture_output=True, text=True, timeout=60)
    assert d.returncode == 0, d.stdout + d.stderr
    assert f"1 event(s) journaled under key fingerprint {fa} are delivered with this key" in d.stdout
    assert sent(gw) == [(KEY_B, "usr_of_app_a", 777)]
    assert drain(tmp_path, gw.url, KEY_A).returncode == 0 and len(gw.requests) == 1  # once


def test_a_directory_of_a_version_before_key_fingerprints_is_still_adopted(
        tmp_path: Path, gw: StandIn) -> None:
    """Written by the previous version (``<slug>``, no fingerprint): whoever sends to that base URL
    adopts it, as before, so an upgrade loses nothing; it moves into the adopter's directory."""
    kill_app_a(tmp_path, gw.url)  # a keyed directory of key A...
    state = tmp_path / ".local" / "state" / "aerostack-meter"  # the default state directory
    old = Path(legacy_dir(str(state), gw.url))  # ...and, next to it, one of the old version
    old.mkdir(mode=0o700)
    (old / "destination").write_text(gw.url)
    (old / "0123456789abcdef0123.0.journal").write_bytes(
        encode_event(key_blob("usr_old", "api_app_a", "units"), 42, 0, time.time()))
    (old / "0123456789abcdef0123.lock").touch()
    b = run(APP_B, tmp_path, gw.url, KEY_B)
    assert json.loads(b.stdout) == {"awaiting_key": 1, "events_adopted": 1}
    assert sorted(sent(gw)) == [(KEY_B, "usr_of_app_b", 5), (KEY_B, "usr_old", 42)]
    assert list(old.glob("*.journal*")) == [] and list(old.glob("*.lock")) == []
    assert all(c != "usr_of_app_a" for _k, c, _u in sent(gw))


@pytest.mark.parametrize("copied", [True, False], ids=["died-after-copying", "died-before-copying"])
def test_an_adopter_of_a_legacy_journal_that_died_mid_adoption_neither_loses_nor_doubles(
        tmp_path: Path, gw: StandIn, copied: bool) -> None:
    """Adopting from the legacy directory renames the dead file into the adopter's own directory
    (``<name>.adopting-<token>``), where whoever adopts the adopter finds it: copied (its ``M``
    mark names the file) it is dropped, not copied it is adopted. Each unit arrives once."""
    fp = Secret(KEY_B).fingerprint()
    mine = Path(destination_dir(str(tmp_path), gw.url, fp))
    old = Path(legacy_dir(str(tmp_path), gw.url))
    old.mkdir(mode=0o700)
    (old / "aaaa00000000.lock").touch()  # left behind: the adopter died before removing it
    ev = encode_event(key_blob("a", "api", "units"), 5, 0, time.time())
    (mine / "aaaa00000000.0.journal.adopting-bbbb00000000").write_bytes(ev)
    b_journal = encode_event(key_blob("b", "api", "units"), 6, 0, time.time())
    if copied:
        b_journal += ev + encode_mark("M", "aaaa00000000.0.journal")
    (mine / "bbbb00000000.0.journal").write_bytes(b_journal)
    (mine / "bbbb00000000.lock").touch()
    m = Meter(KEY_B, api_id="api", base_url=gw.url, state_dir=str(tmp_path), flush_interval=0.05,
              instrument=False)
    assert m.flush(5)
    m.shutdown()
    assert gw.units_by_consumer() == {"a": 5, "b": 6}
    assert list(mine.glob("*.journal*")) == [] and list(old.glob("*")) == []


def test_the_directory_names_the_key_by_a_one_way_fingerprint(tmp_path: Path) -> None:
    fa, fb = Secret(KEY_A).fingerprint(), Secret(KEY_B).fingerprint()
    assert fa == Secret(KEY_A).fingerprint() and fa != fb
    assert len(fa) == 16 and int(fa, 16) >= 0 and KEY_A not in fa
    url = "https://api.aerostack.dev/v1"
    a = AerostackSink(KEY_A, base_url=url)
    assert a.key_fingerprint == fa
    assert Path(destination_dir(str(tmp_path), url, fa)).name == f"{destination_slug(url)}-{fa}"
    # a fan-out is delivered only with the same keys in every part
    led = LedgerSink(str(tmp_path / "l.db"))
    assert getattr(led, "key_fingerprint", None) is None
    both_a = FanOutSink([a, led]).key_fingerprint
    assert both_a is not None and both_a != FanOutSink([AerostackSink(KEY_B, base_url=url), led]).key_fingerprint
    assert FanOutSink([led]).key_fingerprint is None
    # the ledger has no key: its directory is the destination's alone, as before
    m = Meter(ledger_path=str(tmp_path / "l.db"), state_dir=str(tmp_path), api_id="x", instrument=False)
    try:
        assert m.state_dir is not None and "-" not in Path(m.state_dir).name
    finally:
        m.shutdown()
    for s in (a, led):
        s.close()


def test_a_destination_marker_that_cannot_be_written_leaves_no_file_half_made(tmp_path: Path) -> None:
    # A file-size limit of 8 bytes (a full disk): the marker write is short, then fails. The
    # directory must hold neither a truncated marker (drain would deliver to a wrong address)
    # nor the temporary file.
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        import resource, signal
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (8, 8))
        from aerostack_meter._paths import destination_dir
        try:
            destination_dir({str(tmp_path)!r}, "https://api.aerostack.dev/v1")
        except OSError as exc:
            print("raised", exc.errno)
    """)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("raised")
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == []
