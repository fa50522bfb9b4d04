"""--web.config.file: basic auth on every endpoint, TLS with a test CA, client certificates."""

from __future__ import annotations

import base64
import http.client
import os
import select
import signal
import socket
import ssl
import statistics
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import bcrypt
import pytest

from netprobe_exporter import webconfig
from tests.support.procutil import Processes, parse_samples, value, wait_for
from tests.support.procutil import http as send
from tests.support.servers import Certs, make_certs

HASH = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(4)).decode()  # cost 4: fast tests


PATHS = ["/metrics", "/probe?module=tcp_connect&target=127.0.0.1:9", "/", "/-/healthy"]


def _get(url: str, auth: tuple[str, str] | None = None, context: Any = None,
         method: str = "GET") -> int:  # fmt: skip
    req = urllib.request.Request(url, method=method)
    if auth:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(req, timeout=10, context=context) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _start(procs: Processes, tmp_path: Path, web: str) -> Any:
    path = tmp_path / "web.yml"
    path.write_text(web)
    return procs.start_exporter(f"--web.config.file={path}")


def test_basic_auth_guards_every_endpoint(procs: Processes, tmp_path: Path) -> None:
    ex = _start(procs, tmp_path, f"basic_auth_users:\n  prom: '{HASH}'\n"
                "http_server_config:\n  headers:\n    X-Frame-Options: deny\n")  # fmt: skip
    for path in PATHS:
        assert _get(ex.url + path) == 401, path
        assert _get(ex.url + path, ("prom", "wrong")) == 401, path
        assert _get(ex.url + path, ("nobody", "s3cret")) == 401, path
        assert _get(ex.url + path, ("prom", "s3cret")) == 200, path
    assert _get(ex.url + "/-/reload", method="POST") == 401
    assert _get(ex.url + "/-/reload", ("prom", "s3cret"), method="POST") == 200
    req = urllib.request.Request(ex.url + "/-/healthy")
    req.add_header("Authorization", "Basic " + base64.b64encode(b"prom:s3cret").decode())
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.headers["X-Frame-Options"] == "deny"


def _tls_config(certs: Certs, extra: str = "") -> str:
    return (f"tls_server_config:\n  cert_file: {certs.leaf_chain}\n"
            f"  key_file: {certs.leaf_key}\n{extra}")  # fmt: skip


def test_tls_with_a_test_ca(procs: Processes, tmp_path: Path) -> None:
    certs = make_certs(tmp_path / "certs")
    ex = _start(procs, tmp_path, _tls_config(certs))
    base = f"https://localhost:{ex.port}"
    trusting = ssl.create_default_context(cafile=str(certs.ca_cert))
    assert _get(base + "/metrics", context=trusting) == 200
    with pytest.raises(urllib.error.URLError):
        _get(base + "/metrics", context=ssl.create_default_context())  # unknown CA
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.load_verify_locations(str(certs.ca_cert))
    old.maximum_version = ssl.TLSVersion.TLSv1_1  # below the default min_version TLS12
    with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError)):
        _get(base + "/metrics", context=old)
    assert "level=warn" not in ex.stderr()  # e.g. Twisted's legacy context factory warning


def test_relative_file_names_are_relative_to_the_web_config(
    procs: Processes, tmp_path: Path
) -> None:
    """As in the exporter-toolkit: the process's working directory does not matter."""
    conf = tmp_path / "etc"
    certs = make_certs(conf / "certs")
    assert procs.workdir != conf
    web = conf / "web.yml"
    web.write_text(
        "tls_server_config:\n"
        f"  cert_file: {os.path.relpath(certs.leaf_chain, conf)}\n"
        f"  key_file: {os.path.relpath(certs.leaf_key, conf)}\n"
    )
    assert not (procs.workdir / "certs").exists()
    ex = procs.start_exporter(f"--web.config.file={web}")
    trusting = ssl.create_default_context(cafile=str(certs.ca_cert))
    assert _get(f"https://localhost:{ex.port}/-/healthy", context=trusting) == 200


def test_client_certificates_when_required(procs: Processes, tmp_path: Path) -> None:
    certs = make_certs(tmp_path / "certs")
    mtls = f"  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {certs.ca_cert}\n"
    ex = _start(procs, tmp_path, _tls_config(certs, mtls))
    base = f"https://localhost:{ex.port}"
    without = ssl.create_default_context(cafile=str(certs.ca_cert))
    with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError)):
        _get(base + "/metrics", context=without)
    with_cert = ssl.create_default_context(cafile=str(certs.ca_cert))
    with_cert.load_cert_chain(str(certs.leaf_cert), str(certs.leaf_key))  # signed by the CA
    wait_for(lambda: _get(base + "/-/ready", context=with_cert) == 200, 5, "ready over mTLS")
    assert _get(base + "/metrics", context=with_cert) == 200


def _auth(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _timed_status(ex: Any, user: str, password: str) -> tuple[float, int]:
    t0 = time.monotonic()
    status = ex.get("/-/healthy", headers={"Authorization": _auth(user, password)}).status
    return time.monotonic() - t0, status


def test_an_unknown_user_costs_what_a_wrong_password_costs(
    procs: Processes, tmp_path: Path
) -> None:
    """With a cost-12 user, an unknown user must not answer four times as fast (an oracle)."""
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(12)).decode()
    ex = _start(procs, tmp_path, f"basic_auth_users:\n  prom: '{hashed}'\n")
    wrong: list[float] = []
    unknown: list[float] = []
    for i in range(4):  # interleaved, so a burst of load elsewhere hits both alike
        took, status = _timed_status(ex, "prom", f"wrong{i}")
        assert status == 401
        wrong.append(took)
        took, status = _timed_status(ex, f"nobody{i}", "s3cret")
        assert status == 401
        unknown.append(took)
    w, u = statistics.median(wrong), statistics.median(unknown)
    assert u >= 0.6 * w, f"unknown user {u * 1000:.0f} ms, wrong password {w * 1000:.0f} ms"
    assert webconfig.hash_cost(webconfig.dummy_hash(12)) == 12


def _flood(port: int, stop: threading.Event, deadline: float, seen: Counter[int]) -> None:
    """Keep 200 wrong-password requests in flight (each on its own connection), at most ~300
    new ones a second, until ``stop`` or ``deadline``; count the status codes."""
    live: dict[socket.socket, bytes] = {}
    sent = 0
    while not stop.is_set() and time.monotonic() < deadline and sent < 20_000:
        while len(live) < 200:
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            auth = _auth("prom", f"guess{sent}")
            s.sendall(f"GET /-/healthy HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                      f"Authorization: {auth}\r\n\r\n".encode())  # fmt: skip
            s.setblocking(False)
            live[s] = b""
            sent += 1
        readable, _, _ = select.select(list(live), [], [], 0.1)
        for s in readable:
            try:
                chunk = s.recv(4096)
            except (BlockingIOError, ConnectionResetError):
                chunk = b""
            if chunk:
                live[s] += chunk
                continue
            head = live.pop(s)
            s.close()
            seen[int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/1.1 ") else 0] += 1
        time.sleep(len(readable) / 300)
    for s in live:
        s.close()


def _first_login_from(port: int, source: str, user: str, password: str, within: float) -> float:
    """Seconds until ``user`` (never logged in) gets a 200, retrying a 429 every 0.1 s."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < within:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5,
                                          source_address=(source, 0))  # fmt: skip
        try:
            conn.request("GET", "/-/healthy", headers={"Authorization": _auth(user, password)})
            status = conn.getresponse().status
        finally:
            conn.close()
        if status == 200:
            return time.monotonic() - t0
        assert status == 429, status
        time.sleep(0.1)
    pytest.fail(f"{user} refused for {within:g} s")


def test_a_wrong_password_flood_delays_neither_reloads_nor_known_logins(
    procs: Processes, tmp_path: Path
) -> None:
    prom = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(10)).decode()
    alice = bcrypt.hashpw(b"alice-pw", bcrypt.gensalt(10)).decode()
    web = tmp_path / "web.yml"
    web.write_text(f"basic_auth_users:\n  prom: '{prom}'\n  alice: '{alice}'\n")
    config = tmp_path / "c.yml"
    config.write_text("defaults: {interval: 1h}\ntargets: []\n")
    ex = procs.start_exporter(f"--config.file={config}", f"--web.config.file={web}")
    login = {"Authorization": _auth("prom", "s3cret")}
    # once ready (the probe workers are up), prom's login is remembered
    wait_for(lambda: ex.get("/-/ready", headers=login).status == 200, 10, "readiness")
    stop, seen = threading.Event(), Counter[int]()
    flood = threading.Thread(target=_flood, args=(ex.port, stop, time.monotonic() + 30, seen))
    flood.start()
    try:
        time.sleep(1.0)  # the flood is on: the bcrypt queue is full
        t0 = time.monotonic()
        try:
            reply = send(ex.url + "/-/reload", method="POST", headers=login, timeout=10)
        except TimeoutError:
            pytest.fail("POST /-/reload not answered within 10 s under the flood")
        reload_took = time.monotonic() - t0
        assert reply.status == 200, reply
        loaded = sum(1 for r in ex.log_records() if r.get("msg") == "config loaded")
        t0 = time.monotonic()
        ex.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: sum(1 for r in ex.log_records() if r.get("msg") == "config loaded")
                 > loaded, 10, "the SIGHUP reload")  # fmt: skip
        sighup_took = time.monotonic() - t0
        # still remembered after the SIGHUP re-read an unchanged web config
        assert ex.get("/-/healthy", headers=login).status == 200
        first_login = _first_login_from(ex.port, "127.0.0.2", "alice", "alice-pw", 5.0)
    finally:
        stop.set()
        flood.join(10)
    assert reload_took <= 2.0, f"POST /-/reload took {reload_took:.2f} s under the flood"
    assert sighup_took <= 2.0, f"a SIGHUP reload took {sighup_took:.2f} s under the flood"
    assert first_login <= 3.0, f"a first login took {first_login:.2f} s"
    assert set(seen) <= {401, 429} and seen[429] > 0, seen  # the excess refused at once


def test_sighup_rereads_the_web_config_and_keeps_it_when_bad(
    procs: Processes, tmp_path: Path
) -> None:
    path = tmp_path / "web.yml"
    path.write_text(f"basic_auth_users:\n  prom: '{HASH}'\n")
    ex = procs.start_exporter(f"--web.config.file={path}")
    assert _get(ex.url + "/metrics", ("prom", "s3cret")) == 200
    new_hash = bcrypt.hashpw(b"n3w", bcrypt.gensalt(4)).decode()
    path.write_text(f"basic_auth_users:\n  prom: '{new_hash}'\n")
    ex.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: _get(ex.url + "/metrics", ("prom", "n3w")) == 200, 5, "the new password")
    assert _get(ex.url + "/metrics", ("prom", "s3cret")) == 401
    path.write_text("basic_auth_users:\n  prom: not-a-bcrypt-hash\n")
    ex.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "web config rejected" in ex.stderr(), 5, "the rejection logged")
    assert _get(ex.url + "/metrics", ("prom", "n3w")) == 200  # the old one stays
    assert "basic_auth_users.prom" in ex.stderr()


def _https_metrics(port: int, certs: Certs) -> str:
    context = ssl.create_default_context(cafile=str(certs.ca_cert))
    url = f"https://localhost:{port}/metrics"
    with urllib.request.urlopen(url, timeout=10, context=context) as resp:
        return str(resp.read().decode())


def test_sighup_with_an_unusable_certificate_still_reloads_the_config(
    procs: Processes, tmp_path: Path
) -> None:
    certs = make_certs(tmp_path / "certs")
    web, config = tmp_path / "web.yml", tmp_path / "config.yml"
    web.write_text(_tls_config(certs))
    config.write_text("targets:\n  - address: 127.0.0.1:9\n    interval: 1h\n")
    ex = procs.start_exporter(f"--web.config.file={web}", f"--config.file={config}")
    samples = parse_samples(_https_metrics(ex.port, certs))
    assert value(samples, "netprobe_web_config_last_reload_successful") == 1
    not_pem = tmp_path / "not-a-cert.pem"
    not_pem.write_text("this is no certificate\n")
    web.write_text(_tls_config(certs).replace(str(certs.leaf_chain), str(not_pem)))
    config.write_text(config.read_text() + "  - address: 127.0.0.1:10\n    interval: 1h\n")
    ex.proc.send_signal(signal.SIGHUP)

    def reloaded() -> bool:
        text = _https_metrics(ex.port, certs)  # the old certificate still serves
        return 'netprobe_targets{module="tcp_connect"} 2' in text

    wait_for(reloaded, 10, "the main config reloaded")
    samples = parse_samples(_https_metrics(ex.port, certs))
    assert value(samples, "netprobe_config_last_reload_successful") == 1
    assert value(samples, "netprobe_web_config_last_reload_successful") == 0
    rejected = [
        r for r in ex.log_records() if r.get("msg") == "web config rejected, previous one kept"
    ]
    assert len(rejected) == 1, ex.stderr()
    assert "tls_server_config" in rejected[0]["error"]
    assert "Traceback" not in ex.stderr() and "Unhandled" not in ex.stderr()
    web.write_text(_tls_config(certs))  # usable again: the web config reloads on its own
    ex.proc.send_signal(signal.SIGHUP)
    wait_for(
        lambda: (
            value(
                parse_samples(_https_metrics(ex.port, certs)),
                "netprobe_web_config_last_reload_successful",
            )
            == 1
        ),
        10,
        "netprobe_web_config_last_reload_successful 1",
    )
