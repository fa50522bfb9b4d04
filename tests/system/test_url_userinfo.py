"""A URL's userinfo is sent as Basic auth (as blackbox, through Go's http.Client) and never shown.

A real exporter probes a real loopback HTTP server that records each request's Host and
Authorization headers, through ``/probe`` and as a continuous target; ``/metrics``,
``/config``, ``/``, ``/probe?debug=true``, error answers and the debug log must not show the
password, in clear or percent-encoded.
"""

from __future__ import annotations

import base64
import json
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.procutil import Exporter, Processes, find, wait_for
from tests.support.servers import AUTH_PASSWORD, AUTH_USER, HTTPServer, http_server

BASIC = "Basic " + base64.b64encode(f"{AUTH_USER}:{AUTH_PASSWORD}".encode()).decode()


@pytest.fixture
def site() -> Iterator[HTTPServer]:
    with http_server() as server:
        yield server


@pytest.fixture
def exporter(site: HTTPServer, tmp_path: Path) -> Iterator[Exporter]:
    hp = f"127.0.0.1:{site.port}"
    config = tmp_path / "c.yml"
    config.write_text(
        "modules:\n"
        "  ba:\n"
        "    prober: http\n"
        "    http: {basic_auth: {username: someone, password: wrong}}\n"
        "  hdr:\n"
        "    prober: http\n"
        "    http: {headers: {Authorization: Bearer from-the-module}}\n"
        "targets:\n"
        f"  - {{address: 'http://{AUTH_USER}:{AUTH_PASSWORD}@{hp}/auth', module: http_2xx,"
        " interval: 100ms}\n"
        f"  - {{address: 'http://{AUTH_USER}:{AUTH_PASSWORD}@{hp}/error', module: http_2xx,"
        " interval: 100ms}\n"
    )
    procs = Processes(tmp_path)
    try:
        yield procs.start_exporter(f"--config.file={config}", "--log.level=debug")
    finally:
        procs.close()


def _probe(ex: Exporter, module: str, target: str, debug: bool = False) -> str:
    query = {"module": module, "target": target, **({"debug": "true"} if debug else {})}
    resp = ex.get("/probe?" + urllib.parse.urlencode(query))
    assert resp.status == 200, resp
    return resp.text


def _auth_requests(site: HTTPServer) -> list[dict[str, str]]:
    return [headers for _, path, headers in list(site.requests) if path == "/auth"]


def _assert_no_password(text: str, where: str) -> None:
    for form in (AUTH_PASSWORD, urllib.parse.quote(f":{AUTH_PASSWORD}@", safe="")):
        assert form not in text, f"{where} shows the password"


def test_userinfo_is_basic_auth_not_part_of_the_host(site: HTTPServer, exporter: Exporter) -> None:
    target = f"http://{AUTH_USER}:{AUTH_PASSWORD}@127.0.0.1:{site.port}/auth"
    site.requests.clear()
    assert "probe_success 1" in _probe(exporter, "http_2xx", target)
    sent = _auth_requests(site)[-1]
    assert sent["Host"] == f"127.0.0.1:{site.port}"
    assert sent["Authorization"] == BASIC
    # as in Go's http.Client: the URL's userinfo takes the place of the module's basic_auth...
    assert "probe_success 1" in _probe(exporter, "ba", target)
    assert _auth_requests(site)[-1]["Authorization"] == BASIC
    # ...and gives way to an Authorization header the module sets itself
    _probe(exporter, "hdr", target)
    assert _auth_requests(site)[-1]["Authorization"] == "Bearer from-the-module"
    # a relative redirect keeps the userinfo (Go's ResolveReference): sent again
    redirect = f"http://{AUTH_USER}:{AUTH_PASSWORD}@127.0.0.1:{site.port}/redirect"
    site.requests.clear()
    _probe(exporter, "http_2xx", redirect)
    hops = [h.get("Authorization") for _, p, h in list(site.requests) if p in ("/redirect", "/ok")]
    assert hops == [BASIC, BASIC]


def test_continuous_target_authenticates_and_never_shows_the_password(
    site: HTTPServer, exporter: Exporter
) -> None:
    shown = f"http://{AUTH_USER}:xxxxx@127.0.0.1:{site.port}/auth"

    def up() -> bool:
        samples = find(exporter.metrics(), "netprobe_up", target=shown)
        return bool(samples) and samples[0].value == 1

    wait_for(up, 10, "the continuous target with userinfo to be up")
    sent = _auth_requests(site)[-1]
    assert sent["Host"] == f"127.0.0.1:{site.port}"
    assert sent["Authorization"] == BASIC

    paths = ("/metrics", "/config", "/", "/status.json")
    pages = {path: exporter.get(path) for path in paths}
    for path, resp in pages.items():
        assert resp.status == 200, path
        _assert_no_password(resp.text, path)
    assert shown in pages["/metrics"].text
    assert f"address: {shown}" in pages["/config"].text
    assert json.dumps(shown) in pages["/status.json"].text  # the status page's rows

    target = f"http://{AUTH_USER}:{AUTH_PASSWORD}@127.0.0.1:{site.port}/error"
    debug = _probe(exporter, "http_2xx", target, debug=True)
    _assert_no_password(debug, "/probe?debug=true")
    assert "probe_success 0" in debug and "xxxxx@" in debug
    bad = exporter.get("/probe?" + urllib.parse.urlencode(
        {"module": "http_2xx", "target": f"http://u:{AUTH_PASSWORD}@127.0.0.1:99999/"}
    ))  # fmt: skip
    assert bad.status == 400 and "xxxxx" in bad.text, bad
    _assert_no_password(bad.text, "a 400 for a bad target")

    # the failing /error target and the /probe requests above are in the debug log by now
    wait_for(lambda: "/error" in exporter.stderr(), 5, "the failing target in the log")
    _assert_no_password(exporter.stderr(), "the log")
