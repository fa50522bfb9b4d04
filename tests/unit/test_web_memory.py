"""The web resources in memory: DummyRequest through the site's resource tree, no socket."""

from __future__ import annotations

import gzip
from typing import Any

from twisted.internet import defer, task
from twisted.web.resource import Resource, getChildForRequest
from twisted.web.server import NOT_DONE_YET
from twisted.web.test.requesthelper import DummyRequest

from netprobe_exporter import web
from netprobe_exporter.config import ConfigError, parse_config
from netprobe_exporter.metrics import MetricsStore
from tests.support.metrics import parse_samples, value

CONFIG = parse_config("targets:\n  - address: 127.0.0.1:9\n", "c.yml")


class Site:
    def __init__(self, ready: bool = True, reload_error: Exception | None = None) -> None:
        self.store = MetricsStore()
        self.reloads = 0
        self._ready, self._error = ready, reload_error
        probe = Resource()
        self.clock = task.Clock()
        self.site = web.build_site(
            self.store, None, lambda: self._ready, self._reload, probe, lambda: CONFIG,
            clock=self.clock,
        )  # fmt: skip

    def _reload(self) -> defer.Deferred[None]:
        self.reloads += 1
        return defer.fail(self._error) if self._error else defer.succeed(None)

    def request(self, method: bytes, path: str, **headers: str) -> DummyRequest:
        path_part, _, query = path.partition("?")
        req = DummyRequest(path_part.encode().split(b"/")[1:])
        req.method = method
        for k, v in headers.items():
            req.requestHeaders.setRawHeaders(k.replace("_", "-").encode(), [v.encode()])
        if query:
            key, _, val = query.partition("=")
            req.args = {key.encode(): [val.encode()]}
        resource = getChildForRequest(self.site.resource, req)
        out: Any = resource.render(req)
        if out is not NOT_DONE_YET:
            req.write(out)
            req.finish()
        return req


def body(req: DummyRequest) -> bytes:
    return b"".join(req.written)


def header(req: DummyRequest, name: str) -> str | None:
    values = req.responseHeaders.getRawHeaders(name.encode())
    return values[0].decode() if values else None


def test_health_and_readiness() -> None:
    s = Site(ready=False)
    healthy = s.request(b"GET", "/-/healthy")
    assert (healthy.responseCode or 200, body(healthy)) == (200, b"Healthy\n")
    assert s.request(b"GET", "/-/ready").responseCode == 503
    s._ready = True
    assert body(s.request(b"GET", "/-/ready")) == b"Ready\n"


def test_unknown_paths_are_404_and_wrong_methods_405_with_allow() -> None:
    s = Site()
    for path in ("/nope", "/metrics/", "/-/nope", "/metrics/x"):
        assert s.request(b"GET", path).responseCode == 404, path
    post = s.request(b"POST", "/metrics")
    assert post.responseCode == 405 and header(post, "allow") == "GET, HEAD"
    get = s.request(b"GET", "/-/reload")
    assert get.responseCode == 405 and header(get, "allow") == "POST, PUT"


def test_metrics_are_text_by_default_openmetrics_when_asked_and_gzip_when_accepted() -> None:
    s = Site()
    plain = s.request(b"GET", "/metrics")
    assert str(header(plain, "content-type")).startswith("text/plain")
    assert value(parse_samples(body(plain).decode()), "netprobe_config_last_reload_successful") == 0
    om = s.request(b"GET", "/metrics", accept="application/openmetrics-text; version=1.0.0")
    assert str(header(om, "content-type")).startswith("application/openmetrics-text")
    assert body(om).endswith(b"# EOF\n")
    zipped = s.request(b"GET", "/metrics", accept_encoding="gzip")
    assert header(zipped, "content-encoding") == "gzip"
    assert gzip.decompress(body(zipped)) == body(plain)
    head = s.request(b"HEAD", "/metrics")
    assert body(head) == b""


def test_reload_answers_200_400_or_500() -> None:
    assert body(Site().request(b"POST", "/-/reload")) == b"config reloaded\n"
    bad = Site(reload_error=ConfigError(["c.yml:1: bogus: unknown key"]))
    rejected = bad.request(b"POST", "/-/reload")
    assert rejected.responseCode == 400 and b"c.yml:1: bogus: unknown key" in body(rejected)
    broken = Site(reload_error=MemoryError("no room")).request(b"PUT", "/-/reload")
    assert broken.responseCode == 500 and b"no room" in body(broken)


def test_config_page_and_status_page() -> None:
    s = Site()
    config = s.request(b"GET", "/config")
    assert b"127.0.0.1:9" in body(config)
    page = s.request(b"GET", "/")
    assert header(page, "content-type") == "text/html; charset=utf-8"
    assert b"<html" in body(page).lower()
    assert s.request(b"GET", "/status.json?state=sideways").responseCode == 400
    missing = s.request(b"GET", "/target.json?id=nope")
    s.clock.pump([0.0] * 10)  # the view's steps, one per reactor turn
    assert missing.responseCode == 404
    listing = s.request(b"GET", "/status.json")
    s.clock.pump([0.0] * 10)
    assert header(listing, "content-type") == "application/json"
    assert b'"summary":{"targets":0' in body(listing)
