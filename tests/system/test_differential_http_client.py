"""The http prober's proxy_url and oauth2 compared with the real blackbox_exporter 0.23's.

Both exporters probe the same loopback peers (``tests/support/http_peers.py``: a forward and
CONNECT proxy, one that refuses CONNECT, an OAuth2 token endpoint and a site that wants its
token; an https site of ``servers``) with one config file in 0.23 syntax. Every family, label
set and non-timing value must agree (``compare()``), and ``probe_success`` must be the table's;
what the peers were asked is checked too (both went through the proxy, both fetched a token).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support import blackbox, http_peers
from tests.support.blackbox import compare, parse_metrics, probe_response
from tests.support.http_peers import CLIENT_ID, CLIENT_SECRET, SCOPE
from tests.support.procutil import Exporter
from tests.support.servers import Certs, closed_port, http_server, make_certs

#: (id, module, target with {placeholders}, blackbox's probe_success, pinned values)
CASES: list[tuple[str, str, str, int, dict[str, float]]] = [
    ("proxy_http", "proxy", "http://127.0.0.1:{site}/echo", 1, {"probe_http_status_code": 200}),
    ("proxy_http_localhost", "proxy", "http://localhost:{site}/json", 1, {}),
    ("proxy_https", "proxy_ca", "https://127.0.0.1:{https}/ok", 1, {"probe_http_ssl": 1}),
    ("proxy_https_localhost", "proxy_ca", "https://localhost:{https}/ok", 1, {}),
    ("proxy_https_unknown_ca", "proxy", "https://127.0.0.1:{https}/ok", 0, {}),
    ("proxy_refuses_connect", "proxy_refusing", "https://127.0.0.1:{https}/ok", 0,
     {"probe_http_status_code": 0}),
    ("proxy_down", "proxy_closed", "http://127.0.0.1:{site}/echo", 0,
     {"probe_http_status_code": 0}),
    ("proxy_skip_resolve", "proxy_skip_resolve", "http://localhost:{site}/echo", 1, {}),
    ("proxy_404", "proxy", "http://127.0.0.1:{site}/missing-is-echo", 1, {}),
    ("oauth2_ok", "oauth2", "http://127.0.0.1:{site}/protected", 1,
     {"probe_http_status_code": 200}),
    ("oauth2_wrong_secret", "oauth2_wrong", "http://127.0.0.1:{site}/protected", 0,
     {"probe_http_status_code": 0}),
    ("oauth2_token_url_down", "oauth2_down", "http://127.0.0.1:{site}/protected", 0,
     {"probe_http_status_code": 0}),
    ("no_oauth2_no_token", "plain", "http://127.0.0.1:{site}/protected", 0,
     {"probe_http_status_code": 401}),
]  # fmt: skip


@dataclass
class Peers:
    certs: Certs
    site: http_peers.Peer
    https: int
    proxy: http_peers.Peer
    refusing: http_peers.Peer
    closed: int
    tokens: http_peers.Peer

    def placeholders(self) -> dict[str, str]:
        return {"site": str(self.site.port), "https": str(self.https)}


@pytest.fixture(scope="module")
def peers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Peers]:
    certs = make_certs(tmp_path_factory.mktemp("client-certs"))
    with contextlib.ExitStack() as stack:
        enter = stack.enter_context
        yield Peers(
            certs=certs,
            site=enter(http_peers.site()),
            https=enter(http_server(certs.server_context("valid"))).port,
            proxy=enter(http_peers.proxy()),
            refusing=enter(http_peers.proxy(refuse=True)),
            closed=enter(closed_port()),
            tokens=enter(http_peers.token_endpoint(3600)),
        )


def modules(p: Peers) -> dict[str, Any]:
    proxy = f"http://127.0.0.1:{p.proxy.port}"
    ca = {"ca_file": str(p.certs.ca_cert)}

    def oauth2(secret: str, token_url: str) -> dict[str, Any]:
        return {"prober": "http", "http": {"oauth2": {
            "client_id": CLIENT_ID, "client_secret": secret, "scopes": [SCOPE],
            "token_url": token_url}}}  # fmt: skip

    return {
        "plain": {"prober": "http"},
        "proxy": {"prober": "http", "http": {"proxy_url": proxy}},
        "proxy_ca": {"prober": "http", "http": {"proxy_url": proxy, "tls_config": ca}},
        "proxy_refusing": {"prober": "http", "http": {
            "proxy_url": f"http://127.0.0.1:{p.refusing.port}", "tls_config": ca}},
        "proxy_closed": {"prober": "http", "http": {"proxy_url": f"http://127.0.0.1:{p.closed}"}},
        "proxy_skip_resolve": {"prober": "http", "http": {
            "proxy_url": proxy, "skip_resolve_phase_with_proxy": True}},
        "oauth2": oauth2(CLIENT_SECRET, p.tokens.url("/token")),
        "oauth2_wrong": oauth2("wrong-secret", p.tokens.url("/token")),
        "oauth2_down": oauth2(CLIENT_SECRET, f"http://127.0.0.1:{p.closed}/token"),
    }  # fmt: skip


@pytest.fixture(scope="module")
def config_file(tmp_path_factory: pytest.TempPathFactory, peers: Peers) -> Path:
    path = tmp_path_factory.mktemp("client") / "blackbox.yml"
    return blackbox.write_config(path, modules(peers))


@pytest.mark.parametrize(("module", "target", "success", "pins"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])  # fmt: skip
def test_http_client_keys_match_blackbox(
    module: str, target: str, success: int, pins: dict[str, float], peers: Peers,
    bb: blackbox.Blackbox, ours: Exporter,
) -> None:  # fmt: skip
    address = target.format(**peers.placeholders())
    answers = {}
    for who, url in (("blackbox", bb.url), ("ours", ours.url)):
        before = len(peers.proxy.seen.requests), len(peers.tokens.seen.requests)
        resp = probe_response(url, address, module)
        assert resp.status == 200, (who, resp.status, resp.body)
        answers[who] = parse_metrics(resp.body.decode())
        asked = (
            len(peers.proxy.seen.requests) - before[0],
            len(peers.tokens.seen.requests) - before[1],
        )
        if module in ("proxy", "proxy_ca", "proxy_skip_resolve"):
            assert asked[0] == 1, f"{who} did not go through the proxy"
        if module in ("oauth2", "oauth2_wrong") and who == "blackbox":
            assert asked[1] >= 1, "blackbox did not ask for a token"
    ref, got = answers["blackbox"], answers["ours"]
    assert next(iter(ref["probe_success"].samples.values())) == success, "the table is wrong"
    for name, value in pins.items():
        assert next(iter(ref[name].samples.values())) == value, f"the table is wrong: {name}"
    problems = compare(ref, got)
    assert not problems, f"{module} {address}: " + "; ".join(problems)


def test_both_asked_the_proxy_for_the_same_thing(peers: Peers, bb: blackbox.Blackbox,
                                                  ours: Exporter) -> None:  # fmt: skip
    """The request line and the CONNECT authority ours sends are blackbox's (the resolved
    address; the name with skip_resolve_phase_with_proxy)."""
    cases = [("proxy", f"http://localhost:{peers.site.port}/echo"),
             ("proxy_ca", f"https://localhost:{peers.https}/ok"),
             ("proxy_skip_resolve", f"http://localhost:{peers.site.port}/echo")]  # fmt: skip
    for module, target in cases:
        seen = []
        for url in (bb.url, ours.url):
            before = len(peers.proxy.seen.requests)
            probe_response(url, target, module)
            [asked] = peers.proxy.seen.requests[before:]
            seen.append((asked["method"], asked["target"]))
        assert seen[0] == seen[1], (module, seen)
