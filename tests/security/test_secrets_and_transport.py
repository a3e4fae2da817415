"""The API key stays secret, TLS is verified, plain http is for loopback only.

The key must never show in a repr, a log line (any logger, at DEBUG), an exception message, the
stats, or the spool file; TLS certificates are verified unless ``verify=`` says otherwise;
redirects are not followed (the key would go to another host)."""

from __future__ import annotations

import http.server
import logging
import os
import pickle
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest

import aerostack_meter as am
from aerostack_meter import ConfigError, Meter
from aerostack_meter._config import build_settings
from aerostack_meter.servers import start_gateway
from aerostack_meter.sinks import AerostackSink
from tests.standin import standin_server

KEY = "ac_secret_SECURITY_k3y_9d1e4b7a"


def _closed_port() -> int:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


def _spool_bytes(path: Path) -> bytes:
    """Every byte of every file of the state directory ``path``."""
    return b"".join(p.read_bytes() for p in path.rglob("*") if p.is_file())


def test_the_key_never_shows_in_reprs_stats_exceptions_logs_or_the_spool(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.DEBUG)  # every logger: ours, httpx, httpcore
    spool = tmp_path / "spool.db"
    with start_gateway(keys=["another_key"]) as gw:  # 401: the key is wrong, the API says so
        m = Meter(KEY, api_id="api", base_url=gw.url, spool_path=str(spool), flush_interval=0.02,
                  backoff_base=0.01, max_backoff=0.05)
        m.log("usr", 5)
        assert not m.flush(5)  # paused: the usage is kept on disk until the key is right
        shown = [repr(m), str(m), repr(m.settings), repr(m.sink), repr(m.settings.api_key),
                 f"{m.settings.api_key}", str(m.settings.api_key), repr(m.stats()), str(m.stats())]
        assert m.stats().paused and m.stats().spooled == 1
        gw.client.set_faults(fail_next=3, fail_status=500)
        m.shutdown(0.2)
        assert _spool_bytes(spool)  # what the scan below reads
    m2 = Meter(KEY, api_id="api", base_url=f"http://127.0.0.1:{_closed_port()}/v1", read_timeout=0.2,
               connect_timeout=0.2, flush_interval=0.02, backoff_base=0.01, max_backoff=0.05, max_retries=1000)
    m2.log("usr", 1)  # connection refused, retried: errors logged
    assert not m2.flush(0.5)
    m2.shutdown(0.1)
    errors = []
    for bad in ({"base_url": "http://example.com/v1"}, {"flush_interval": -1}, {"verify": 3},
                {"no_such_option": 1}):
        with pytest.raises(ConfigError) as info:
            Meter(KEY, api_id="api", **bad)
        errors.append(str(info.value) + repr(info.value))
    with pytest.raises(TypeError) as pickled:
        pickle.dumps(m.settings.api_key)
    errors.append(str(pickled.value))
    out = capsys.readouterr()
    haystack = "\n".join(shown + errors + [out.out, out.err] +
                         [r.getMessage() + str(r.args) + str(r.exc_text) for r in caplog.records])
    assert len(caplog.records) > 3  # the path above did log (401, retries)
    assert KEY not in haystack
    assert KEY.encode() not in _spool_bytes(spool)


def test_the_key_is_only_ever_sent_in_its_header(tmp_path: Path) -> None:
    with standin_server() as gw:
        m = Meter(KEY, api_id="api", base_url=gw.url, flush_interval=0.02)
        m.log("usr", 5)
        assert m.flush(5)
        m.shutdown()
        [req] = gw.requests
        assert req.headers["x-aerostack-key"] == KEY
        assert KEY not in repr(req.body) and KEY not in req.path
        assert "authorization" not in req.headers


class _Redirect(http.server.BaseHTTPRequestHandler):
    target = ""

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(307)
        self.send_header("Location", self.target)
        self.send_header("Content-Length", "0")
        self.end_headers()


def test_a_redirect_is_not_followed_so_the_key_never_reaches_another_host() -> None:
    with standin_server() as elsewhere:
        _Redirect.target = elsewhere.url + "/gateway/billing/log"
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Redirect)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            m = Meter(KEY, api_id="api", base_url=f"http://127.0.0.1:{server.server_address[1]}/v1",
                      flush_interval=0.02)
            m.log("usr", 5)
            assert m.flush(5)
            st = m.stats()
            m.shutdown()
        finally:
            server.shutdown()
            server.server_close()
        assert elsewhere.requests == []
        assert st.dropped == {} and st.dead_lettered == 1  # refused for good: kept aside, not resent


# -- TLS -------------------------------------------------------------------------------------------

def _sink_ssl_context(**options: Any) -> ssl.SSLContext:
    sink = AerostackSink(KEY, **options)
    client = sink._get_client()
    try:
        pool = client._transport._pool  # httpx.HTTPTransport -> httpcore.ConnectionPool
        ctx: ssl.SSLContext = pool._ssl_context
        assert client._trust_env is False  # SSL_CERT_FILE / proxies in the environment are ignored
        assert client.follow_redirects is False
        return ctx
    finally:
        sink.close()


def test_tls_is_verified_by_default_and_only_verify_changes_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", "/nonexistent")  # ignored: trust_env=False
    ctx = _sink_ssl_context()
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    off = _sink_ssl_context(verify=False)
    assert off.verify_mode == ssl.CERT_NONE and not off.check_hostname
    mine = ssl.create_default_context()
    assert _sink_ssl_context(verify=mine) is mine
    for bad in (0, None, b"path"):
        with pytest.raises(ConfigError, match="verify"):
            build_settings(KEY, api_id="api", environ={}, verify=bad)


class _Billing(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: ClassVar[list[dict[str, Any]]] = []

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        import json

        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        type(self).seen.append({"key": self.headers.get("X-Aerostack-Key"), **body})
        out = json.dumps({"success": True, "loggedUnits": body["units"]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A loopback HTTPS billing stand-in with a self-signed certificate for 127.0.0.1."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a certificate")
    d = tmp_path_factory.mktemp("tls")
    cert, key = str(d / "cert.pem"), str(d / "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", key, "-out", cert], check=True, capture_output=True, timeout=60)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Billing)
    server.daemon_threads = True
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}/v1", cert
    finally:
        server.shutdown()
        server.server_close()


def test_a_certificate_that_does_not_verify_gets_no_usage_and_no_key(tls_server: tuple[str, str]) -> None:
    url, cert = tls_server
    _Billing.seen.clear()
    m = Meter(KEY, api_id="api", base_url=url, flush_interval=0.02, backoff_base=0.01, max_backoff=0.05,
              max_retries=1000)
    m.log("usr", 5)
    assert not m.flush(1.0)  # retried: an unverified peer is treated as unreachable
    assert m.stats().retries >= 1
    m.shutdown(0.1)
    assert _Billing.seen == []  # the handshake failed before the key was sent
    ok = Meter(KEY, api_id="api", base_url=url, flush_interval=0.02, verify=cert)
    ok.log("usr", 7)
    assert ok.flush(5)
    ok.shutdown()
    # the 5 units the first meter kept on disk are delivered by the next one, which verifies
    assert sorted(_Billing.seen, key=lambda r: r["units"]) == [
        {"key": KEY, "consumerId": "usr", "apiId": "api", "metric": "units", "units": u} for u in (5, 7)]


# -- plain http --------------------------------------------------------------------------------------

@pytest.mark.parametrize("url", [
    "http://example.com/v1", "http://10.0.0.1/v1", "http://[2001:db8::1]/v1", "http://192.168.1.5:8787/v1",
    "http://127.0.0.1@evil.example/v1", "http://evil.example#@127.0.0.1/v1", "http://localhost.evil.example/v1",
    "http://127.0.0.1.nip.io/v1",
])
def test_plain_http_to_a_non_loopback_host_is_refused_unless_allow_insecure(url: str) -> None:
    with pytest.raises(ConfigError, match="allow_insecure") as info:
        build_settings(KEY, api_id="api", base_url=url, environ={})
    assert KEY not in str(info.value)
    with pytest.raises(ConfigError, match="allow_insecure"):
        build_settings(KEY, api_id="api", environ={"AEROSTACK_BASE_URL": url})
    assert build_settings(KEY, api_id="api", base_url=url, allow_insecure=True, environ={}).base_url


@pytest.mark.parametrize("url", ["http://127.0.0.1:8787/v1", "http://localhost/v1", "http://[::1]:9/v1",
                                 "http://127.8.9.10/v1", "https://example.com/v1"])
def test_loopback_http_and_any_https_are_allowed(url: str) -> None:
    assert build_settings(KEY, api_id="api", base_url=url, environ={}).base_url == url.rstrip("/")


def test_init_with_an_insecure_url_from_the_environment_fails_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AEROSTACK_BASE_URL", "http://example.com/v1")
    with pytest.raises(ConfigError, match="base_url"):
        am.Meter(KEY, api_id="api")


def test_httpx_is_never_given_the_key_as_a_default_header() -> None:
    sink = AerostackSink(KEY)
    client = sink._get_client()
    try:
        assert all(KEY not in v for v in client.headers.values())  # only per request, not kept
        assert isinstance(client, httpx.Client)
    finally:
        sink.close()
    assert os.environ.get("AEROSTACK_API_KEY") != KEY
