"""A module file of today's blackbox_exporter kinds and keys passes ``--config.check`` clean.

One module per kind of blackbox's current example config (http, http/3, tcp banners with
labels and expect_bytes, grpc, icmp, dns, unix, websocket), plus every key blackbox added after
0.23 and the ones of ours (source_ip_address, dns_server, dns_over_https): the real command
line checks it, exits 0 and prints no warning, and each module is runnable.
"""

from __future__ import annotations

from pathlib import Path

from netprobe_exporter.config import load_config
from tests.support import procutil

MODULES = """\
modules:
  http_2xx:
    prober: http
    http:
      enable_http2: true
      compression: br
      source_ip_address: 127.0.0.1
      dns_server: 127.0.0.1:53
      dns_timeout: 2s
      http_headers:
        X-Team:
          values: [sre]
        X-Token:
          secrets: [not-a-real-token]
  http_3xx:
    prober: http
    http:
      enable_http2: false
      enable_http3: true
      valid_http_versions: [HTTP/3.0]
  http_post_body_file:
    prober: http
    timeout: 5s
    http:
      method: POST
      body_file: {body}
      fail_if_body_json_matches_cel: "body.status == 'down'"
      fail_if_body_json_not_matches_cel: "body.ok == true"
  http_oauth2_proxy:
    prober: http
    http:
      oauth2:
        client_id: exporter
        client_secret_file: {secret}
        token_url: http://127.0.0.1:9/token
        scopes: [probe]
        endpoint_params: {{audience: probes}}
      proxy_url: http://127.0.0.1:3128
      no_proxy: 10.0.0.0/8,.internal
      proxy_connect_header:
        Proxy-Authorization: [Basic not-a-real-secret]
  http_env_proxy:
    prober: http
    http:
      proxy_from_environment: true
  tcp_connect:
    prober: tcp
  ssh_banner_extract:
    prober: tcp
    timeout: 5s
    tcp:
      query_response:
        - expect: "^SSH-2.0-([^ -]+)(?: (.*))?$"
          labels:
            - name: ssh_version
              value: "${{1}}"
            - name: ssh_comments
              value: "${{2}}"
  tcp_magic_bytes:
    prober: tcp
    tcp:
      query_response:
        - send: "HELLO\\n"
        - expect_bytes: "OK"
  grpc_plain:
    prober: grpc
    grpc:
      service: health
      tls: false
      preferred_ip_protocol: ip4
      ip_protocol_fallback: false
      source_ip_address: 127.0.0.1
      metadata:
        x-request-source: [netprobe]
  grpc_tls:
    prober: grpc
    grpc:
      tls: true
      tls_config:
        ca_file: {ca}
  icmp_ttl5:
    prober: icmp
    timeout: 5s
    icmp:
      ttl: 5
  dns_soa:
    prober: dns
    dns:
      query_name: example.test
      query_type: SOA
  dns_over_https:
    prober: dns
    dns:
      query_name: example.test
      dns_over_https: true
      dns_over_https_method: GET
  unix_socket:
    prober: unix
    unix:
      query_response:
        - send: "PING"
        - expect: "PONG"
  websocket_echo:
    prober: websocket
    websocket:
      query_response:
        - send: "hello"
        - expect: "hello"
"""


def test_a_module_file_of_todays_kinds_and_keys_checks_clean(tmp_path: Path) -> None:
    body, secret, ca = tmp_path / "body.json", tmp_path / "secret", tmp_path / "ca.pem"
    body.write_text('{"probe": true}\n')
    secret.write_text("not-a-real-secret\n")
    from tests.support.servers import make_certs

    ca.write_bytes(make_certs(tmp_path / "certs").ca_cert.read_bytes())
    path = tmp_path / "blackbox.yml"
    path.write_text(MODULES.format(body=body, secret=secret, ca=ca))
    done = procutil.run_exporter("--config.check", f"--config.file={path}")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "warning" not in (done.stdout + done.stderr).lower(), done.stderr
    assert done.stdout.startswith(f"{path}: OK ("), done.stdout
    config = load_config(str(path))
    kinds = {m.prober for m in config.modules.values()}
    assert {"http", "tcp", "grpc", "icmp", "dns", "unix", "websocket"} <= kinds
    assert all(m.runnable for m in config.modules.values())
