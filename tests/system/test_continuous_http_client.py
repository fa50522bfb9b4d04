"""The http client keys in continuous mode: targets probed on their interval through a proxy,
with an OAuth2 token (fetched once and reused), a CEL rule, a brotli body, a body file and a
source address, each target up and its token endpoint asked once."""

from __future__ import annotations

from pathlib import Path

from tests.support import http_peers
from tests.support.http_peers import CLIENT_ID, CLIENT_SECRET, SCOPE
from tests.support.procutil import Processes, Sample, wait_for
from tests.support.servers import http_server, make_certs


def test_client_keys_work_in_continuous_mode(tmp_path: Path) -> None:
    procs = Processes(tmp_path)
    certs = make_certs(tmp_path / "certs")
    body = tmp_path / "body.json"
    body.write_text('{"hello": 1}')
    with (
        http_peers.site() as site,
        http_peers.token_endpoint(3600) as tokens,
        http_peers.proxy() as proxy,
        http_server(certs.server_context("valid")) as https,
    ):
        config = tmp_path / "config.yml"
        config.write_text(f"""
defaults:
  interval: 500ms
modules:
  oauth:
    prober: http
    http:
      oauth2: {{client_id: {CLIENT_ID}, client_secret: {CLIENT_SECRET}, scopes: [{SCOPE}],
               token_url: "{tokens.url("/token")}"}}
  tunnel:
    prober: http
    http:
      proxy_url: http://127.0.0.1:{proxy.port}
      tls_config: {{ca_file: {certs.ca_cert}}}
  cel:
    prober: http
    http:
      fail_if_body_json_not_matches_cel: "body.status == 'up'"
  br:
    prober: http
    http: {{compression: br}}
  post_file:
    prober: http
    http: {{method: POST, body_file: {body}, source_ip_address: 127.0.0.2,
            preferred_ip_protocol: ip4}}
targets:
  - {{address: "{site.url("/protected")}", module: oauth}}
  - {{address: "https://localhost:{https.port}/ok", module: tunnel}}
  - {{address: "{site.url("/json")}", module: cel}}
  - {{address: "{site.url("/br")}", module: br}}
  - {{address: "{site.url("/echo")}", module: post_file}}
""")
        try:
            exporter = procs.start_exporter(f"--config.file={config}")

            def settled() -> list[Sample] | None:
                samples = exporter.metrics()
                up = {s.labels["module"]: s.value for s in samples if s.name == "netprobe_up"}
                totals: dict[str, float] = {}
                for s in samples:
                    if s.name == "netprobe_probes_total" and s.labels.get("result") == "success":
                        totals[s.labels["module"]] = totals.get(s.labels["module"], 0) + s.value
                done = len(totals) == 5 and min(totals.values()) >= 3
                return samples if done and set(up.values()) == {1} else None

            wait_for(settled, 30, "every target probed three times, successfully")
        finally:
            procs.close()
        token_requests = len(tokens.seen.requests)
        connects = [r for r in proxy.seen.requests if r["method"] == "CONNECT"]
        posts = [r for r in site.seen.requests if r["method"] == "POST"]
    assert token_requests == 1, "the token was not reused between probes"
    assert len(connects) >= 3
    assert posts and all(r["body"] == b'{"hello": 1}' for r in posts)
    assert {r["client"] for r in posts} == {"127.0.0.2"}
