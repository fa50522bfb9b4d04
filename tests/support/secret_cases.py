"""Values of the wrong kind under secret-holding keys, and the errors they must give.

Such a value is, as often as not, the credential itself, typed where a mapping was wanted:
errors there say what kind of value it was, never the value (unit and system tests share these).
"""

from __future__ import annotations

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
        "http.oauth2: must be a mapping, not a string",
    f'{{prober: websocket, websocket: {{headers: "Authorization: Bearer {WRONG_KIND}"}}}}':
        "websocket.headers: must be a mapping of header names, not a string",
    f'{{prober: websocket, websocket: {{headers: {{"Token {WRONG_KIND}": {{values: [x]}}}}}}}}':
        "websocket.headers.<a key of 19 characters>: is not a header name (an HTTP token)",
    f"{{prober: websocket, websocket: {{headers: {{X-Key: {{secrets: {{x: {WRONG_KIND}}}}}}}}}}}":
        "websocket.headers.X-Key.secrets: must be a list, not a mapping",
    f"{{prober: websocket, websocket: {{http_config: {{bearer_token: [{WRONG_KIND}]}}}}}}":
        "websocket.http_config.bearer_token: must be a string, not a list",
    f"{{prober: websocket, websocket: {{http_config: {{basic_auth: {WRONG_KIND}}}}}}}":
        "websocket.http_config.basic_auth: must be a mapping, not a string",
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


def module_config() -> tuple[str, list[str]]:
    """A config with each bad module of MODULE_ERRORS, and the errors expected (by line)."""
    lines = ["modules:"]
    expected = []
    for i, (module, error) in enumerate(MODULE_ERRORS.items()):
        lines.append(f"  m{i}: {module}")
        expected.append(f":{i + 2}: modules.m{i}.{error}")
    return "\n".join(lines) + "\n", expected
