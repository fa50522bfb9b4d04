"""``/config`` shows the running config as a config: fed back to the parser, it gives the same."""

from __future__ import annotations

import dataclasses

from netprobe_exporter.config import parse_config
from netprobe_exporter.modules import Module
from netprobe_exporter.redact import config_yaml

RICH = """
defaults:
  interval: 1m30s
  module: tcp_connect
  labels: {team: net}
  buckets: [0.001, 0.01, 0.1, 1]
modules:
  web:
    prober: http
    timeout: 2500ms
    http:
      method: POST
      headers: {X-Trace: "1", Authorization: Bearer x}
      body: ping
      valid_status_codes: [200, 204]
      valid_http_versions: [HTTP/1.1]
      fail_if_not_ssl: true
      fail_if_body_matches_regexp: ["error \\\\d+"]
      fail_if_header_matches: [{header: Server, regexp: "^bad", allow_missing: true}]
      body_size_limit: 10MiB
      compression: gzip
      follow_redirects: false
      preferred_ip_protocol: ip4
      authorization: {type: Token, credentials: hunter2}
      tls_config: {server_name: example.test, insecure_skip_verify: true, min_version: TLS12}
  basic:
    prober: http
    http:
      basic_auth: {username: u, password: p}
  empty_auth:
    prober: http
    http:
      basic_auth: {}
  bearer:
    prober: http
    http:
      bearer_token: t0k3n
  talk:
    prober: tcp
    tcp:
      query_response:
        - expect: "^220 (\\\\S+)"
          labels: [{name: server, value: "${1}"}]
        - send: "EHLO x"
        - expect_bytes: "250"
        - starttls: true
      tls_config: {insecure_skip_verify: true}
  socket:
    prober: unix
    unix:
      query_response: [{expect: "^OK"}]
      tls: true
      tls_config: {server_name: app.internal}
  resolve:
    prober: dns
    dns:
      query_name: example.test
      query_type: A
      transport_protocol: tcp
      valid_rcodes: [NOERROR, NXDOMAIN]
      validate_answer_rrs: {fail_if_not_matches_regexp: ["IN\\\\tA"]}
  quick:
    prober: tcp
    timeout: 1500us
  ping:
    prober: icmp
    icmp: {preferred_ip_protocol: ip4, payload_size: 56}
targets:
  - address: 127.0.0.1:22
  - {address: 127.0.0.1:80, module: web, interval: 250ms, labels: {tier: "1"}}
probe_policy:
  allow: [127.0.0.0/8, "*.example.test", "::1"]
  deny: [127.0.0.3]
  max_timeout: 30s
  max_concurrent: 10
  max_per_source: 2
limits:
  max_targets: 5000
  max_concurrent_probes: 100
  max_body_bytes: 1MiB
  web_request_timeout: 5s
  web_idle_timeout: 1m
  max_web_connections: 64
  label_limit: 12
  label_name_length_limit: 40
  label_value_length_limit: 300
  sample_limit: 50000
"""


def test_config_output_parses_back_to_the_same_config() -> None:
    shown = config_yaml(parse_config(RICH, "rich.yml"))
    again = config_yaml(parse_config(shown, "shown.yml"))
    assert again == shown


def test_config_shows_every_limit() -> None:
    shown = config_yaml(parse_config(RICH, "rich.yml"))
    for line in ("label_limit: 12", "label_name_length_limit: 40",
                 "label_value_length_limit: 300", "sample_limit: 50000"):  # fmt: skip
        assert f"\n  {line}\n" in shown, shown
    defaults = config_yaml(parse_config("targets: []\n"))
    assert "\n  label_limit: 30\n" in defaults and "\n  sample_limit: 10000000\n" in defaults


def test_secrets_stay_hidden_in_the_output() -> None:
    shown = config_yaml(parse_config(RICH, "rich.yml"))
    for secret in ("hunter2", "t0k3n", "Bearer x", "password: p"):
        assert secret not in shown


def test_what_is_read_back_is_the_running_config_but_for_secrets() -> None:
    running = parse_config(RICH, "rich.yml")
    back = parse_config(config_yaml(running), "shown.yml")
    assert back.defaults == running.defaults
    assert back.targets == running.targets
    assert back.probe_policy == running.probe_policy
    assert back.limits == running.limits
    assert back.modules.keys() == running.modules.keys()
    with_secrets = {"web", "basic", "bearer"}
    assert back.modules["empty_auth"] == running.modules["empty_auth"]
    for name in running.modules.keys() - with_secrets:
        assert back.modules[name] == running.modules[name], name

    def blind(module: Module) -> Module:
        opts = dataclasses.replace(module.options, credentials=None, basic_auth=None, headers=())
        return dataclasses.replace(module, options=opts)

    for name in with_secrets:
        assert blind(back.modules[name]) == blind(running.modules[name]), name
    assert back.modules["web"].options.auth_type == "Token"
