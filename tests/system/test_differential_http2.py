"""HTTP/2 in the http prober's /probe answers, compared with the real blackbox_exporter 0.23's.

Both exporters probe Twisted's own HTTPS site (a subprocess), once offering ``h2`` over ALPN
and once only ``http/1.1``, with modules of the default ``enable_http2`` (true in 0.23, from
prometheus/common) and with it off. Families, label sets and non-timing values must agree
(``compare``), ``probe_http_version`` must be the table's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import blackbox
from tests.support.blackbox import compare, parse_metrics, probe_response
from tests.support.procutil import Exporter
from tests.support.servers import Certs, make_certs
from tests.support.web_peers import h2_site_process

MODULES = {
    "h2_default": {"prober": "http", "http": {"tls_config": {"ca_file": "CA"}}},
    "h2_off": {"prober": "http", "http": {"enable_http2": False, "tls_config": {"ca_file": "CA"}}},
    "h2_only": {"prober": "http", "http": {"valid_http_versions": ["HTTP/2.0"],
                                           "tls_config": {"ca_file": "CA"}}},
    "h11_only": {"prober": "http", "http": {"valid_http_versions": ["HTTP/1.1"],
                                            "tls_config": {"ca_file": "CA"}}},
}  # fmt: skip
#: (id, module, site: "h2" offers h2, "h1" does not, path, blackbox's probe_success and
#: probe_http_version)
CASES = [
    ("h2_negotiated", "h2_default", "h2", "/ok", 1, 2.0),
    ("h2_redirect", "h2_default", "h2", "/redirect", 1, 2.0),
    ("h2_500", "h2_default", "h2", "/error", 0, 2.0),
    ("h2_disabled", "h2_off", "h2", "/ok", 1, 1.1),
    ("server_without_h2", "h2_default", "h1", "/ok", 1, 1.1),
    ("valid_versions_h2", "h2_only", "h2", "/ok", 1, 2.0),
    ("valid_versions_h11_got_h2", "h11_only", "h2", "/ok", 0, 2.0),
]


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("h2-certs"))


@pytest.fixture(scope="module")
def ports(certs: Certs) -> Iterator[dict[str, int]]:
    with contextlib.ExitStack() as stack:
        yield {
            "h2": stack.enter_context(h2_site_process(certs, h2=True)),
            "h1": stack.enter_context(h2_site_process(certs, h2=False)),
        }


@pytest.fixture(scope="module")
def config_file(tmp_path_factory: pytest.TempPathFactory, certs: Certs) -> Path:
    modules = {
        name: {**m, "http": {**m["http"], "tls_config": {"ca_file": str(certs.ca_cert)}}}
        for name, m in MODULES.items()
    }
    return blackbox.write_config(tmp_path_factory.mktemp("h2") / "blackbox.yml", modules)


def _value(families: dict[str, blackbox.Family], name: str) -> float | None:
    fam = families.get(name)
    return None if fam is None or len(fam.samples) != 1 else next(iter(fam.samples.values()))


@pytest.mark.parametrize(("module", "site", "path", "success", "version"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])  # fmt: skip
def test_http2_probe_matches_blackbox(
    module: str, site: str, path: str, success: int, version: float, ports: dict[str, int],
    bb: blackbox.Blackbox, ours: Exporter,
) -> None:  # fmt: skip
    address = f"https://localhost:{ports[site]}{path}"
    answers = {}
    for who, url in (("blackbox", bb.url), ("ours", ours.url)):
        resp = probe_response(url, address, module)
        assert resp.status == 200, (who, resp.status, resp.body)
        answers[who] = parse_metrics(resp.body.decode())
    ref, got = answers["blackbox"], answers["ours"]
    table = (success, version)
    assert (_value(ref, "probe_success"), _value(ref, "probe_http_version")) == table, (
        "the table is wrong"
    )
    assert (_value(got, "probe_success"), _value(got, "probe_http_version")) == table
    problems = compare(ref, got)
    assert not problems, f"{module} {address}: " + "; ".join(problems)
