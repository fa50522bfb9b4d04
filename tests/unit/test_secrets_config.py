"""Secrets stay out of config errors and warnings, whatever kind of value holds them."""

from __future__ import annotations

import pytest

from netprobe_exporter.config import ConfigError, parse_config
from netprobe_exporter.webconfig import parse_web_config


def test_config_errors_and_warnings_withhold_secret_values() -> None:
    # a token file that cannot be read now: a warning, its name withheld
    config = parse_config(
        "modules:\n  m: {prober: http, http: {bearer_token_file: /no/such/tok-file-Jj3}}\n",
        "c.yml",
    )
    text = "\n".join(config.warnings)
    assert "c.yml:2: modules.m.http.bearer_token_file" in text
    assert "tok-file-Jj3" not in text and "<secret>" in text
    try:
        parse_config("modules:\n  m: {prober: http, http: {bearer_token: [tok-Jj3]}}\n", "c.yml")
    except ConfigError as exc:
        text = "\n".join(exc.errors)
    else:
        raise AssertionError("a list as a token is an error")
    assert "c.yml:2: modules.m.http.bearer_token" in text and "tok-Jj3" not in text


# A value of the wrong kind under a secret-holding key is, as often as not, the credential
# itself, typed where a mapping was wanted: errors there say what kind of value it was.


WRONG_KIND = "Wk-73-hunter2"


MODULE_ERRORS = {
    f'{{prober: http, http: {{basic_auth: "bob:{WRONG_KIND}"}}}}':
        "http.basic_auth: must be a mapping, not a string",
    f"{{prober: http, http: {{basic_auth: {{bob:{WRONG_KIND}}}}}}}":
        "http.basic_auth.<a key of 17 characters>: unknown key",
    f"{{prober: http, http: {{basic_auth: {{username: u, password: {{x: {WRONG_KIND}}}}}}}}}":
        "http.basic_auth.password: must be a string, not a mapping",
    f'{{prober: http, http: {{authorization: "Bearer {WRONG_KIND}"}}}}':
        "http.authorization: must be a mapping, not a string",
    f"{{prober: http, http: {{authorization: {{credentials: [{WRONG_KIND}]}}}}}}":
        "http.authorization.credentials: must be a string, not a list",
    f'{{prober: http, http: {{headers: "Authorization: Bearer {WRONG_KIND}"}}}}':
        "http.headers: must be a mapping of strings, not a string",
    f"{{prober: http, http: {{headers: {{X-Api-Key: [{WRONG_KIND}]}}}}}}":
        "http.headers.X-Api-Key: must be a string, not a list",
    f'{{prober: http, http: {{headers: {{"Token {WRONG_KIND}": [x]}}}}}}':
        "http.headers.<a key of 19 characters>: must be a string, not a list",
    f"{{prober: http, http: {{tls_config: {WRONG_KIND}}}}}":
        "http.tls_config: must be a mapping, not a string",
    f"{{prober: tcp, tcp: {{tls_config: {WRONG_KIND}}}}}":
        "tcp.tls_config: must be a mapping, not a string",
    f"{{prober: dns, dns: {{query_name: x., tls_config: [{WRONG_KIND}]}}}}":
        "dns.tls_config: must be a mapping, not a list",
    f"{{prober: http, http: {{tls_config: {{insecure_skip_verify: {WRONG_KIND}}}}}}}":
        "http.tls_config.insecure_skip_verify: must be true or false, not a string",
    f"{{prober: http, http: {{bearer_token: {{t: {WRONG_KIND}}}}}}}":
        "http.bearer_token: must be a string, not a mapping",
    f"{{prober: http, http: {{oauth2: {WRONG_KIND}}}}}":
        "http.oauth2: is not supported yet",
}  # fmt: skip


WEB_ERRORS = {
    f'basic_auth_users: "prom:{WRONG_KIND}"\n':
        "basic_auth_users: must be a mapping of strings, not a string",
    f"basic_auth_users: {{prom: [{WRONG_KIND}]}}\n":
        "basic_auth_users.prom: must be a string, not a list",
    f"basic_auth_users: {{prom:{WRONG_KIND}}}\n":
        "basic_auth_users.<a key of 18 characters>: must be a string, not empty",
    f'http_server_config: {{headers: "X-Token: {WRONG_KIND}"}}\n':
        "http_server_config.headers: must be a mapping of strings, not a string",
    f"http_server_config: {{headers: {{X-Token: [{WRONG_KIND}]}}}}\n":
        "http_server_config.headers.X-Token: must be a string, not a list",
    f"tls_server_config: {WRONG_KIND}\n":
        "tls_server_config: must be a mapping, not a string",
}  # fmt: skip


def _module_config() -> tuple[str, list[str]]:
    """A config with each bad module of MODULE_ERRORS, and the errors expected (by line)."""
    lines = ["modules:"]
    expected = []
    for i, (module, error) in enumerate(MODULE_ERRORS.items()):
        lines.append(f"  m{i}: {module}")
        expected.append(f":{i + 2}: modules.m{i}.{error}")
    return "\n".join(lines) + "\n", expected


def test_wrong_kinds_of_value_under_secret_keys_are_described_not_shown() -> None:
    text, expected = _module_config()
    with pytest.raises(ConfigError) as info:
        parse_config(text, "c.yml")
    got = info.value.errors
    assert len(got) == len(expected), got
    for line, tail in zip(got, expected, strict=True):
        assert line == f"c.yml{tail}"
    for web, error in WEB_ERRORS.items():
        with pytest.raises(ConfigError) as info:
            parse_web_config(web, "w.yml")
        assert info.value.errors == [f"w.yml:1: {error}"]
    # elsewhere a value is still quoted: it helps and is no secret
    with pytest.raises(ConfigError) as info:
        parse_config('targets: "127.0.0.1:1"\n', "c.yml")
    assert info.value.errors == ['c.yml:1: targets: must be a list, not "127.0.0.1:1"']
