"""Secrets (passwords, tokens, key and password file paths) never show: not in logs at debug
level, not in /config, not in /probe's debug output, not in the errors of a rejected reload."""

from __future__ import annotations

import base64
import shutil
import signal
from pathlib import Path

from tests.support.procutil import Processes, run_exporter, wait_for
from tests.support.secret_cases import WEB_ERRORS, WRONG_KIND, module_config
from tests.support.servers import AUTH_PASSWORD, AUTH_USER, http_server, make_certs

TOKEN = "tok-Zq81-bearer"


KEY_NAME = "client-key-Wm42.pem"


PW_FILE_NAME = "pw-file-Hk77.txt"


WRONG_PASSWORD = "wrong-Pq93-password"


HEADER_TOKEN = "hdr-Tk55-token"


TOKEN_FILE_NAME = "token-file-Rb19.txt"


def test_secrets_never_show(procs: Processes, tmp_path: Path) -> None:
    certs = make_certs(tmp_path / "certs")
    key = tmp_path / KEY_NAME
    shutil.copy(certs.leaf_key, key)
    pw_file = tmp_path / PW_FILE_NAME
    pw_file.write_text(AUTH_PASSWORD)
    secrets = [AUTH_PASSWORD, TOKEN, KEY_NAME, PW_FILE_NAME, WRONG_PASSWORD, HEADER_TOKEN,
               TOKEN_FILE_NAME,
               base64.b64encode(f"{AUTH_USER}:{AUTH_PASSWORD}".encode()).decode()]  # fmt: skip
    with http_server() as site:
        config = tmp_path / "config.yml"
        good = (
            "modules:\n"
            f"  auth: {{prober: http, http: {{basic_auth: {{username: {AUTH_USER}, "
            f"password: {AUTH_PASSWORD}}}}}}}\n"
            f"  wrong: {{prober: http, http: {{basic_auth: {{username: {AUTH_USER}, "
            f"password: {WRONG_PASSWORD}}}}}}}\n"
            f"  pwfile: {{prober: http, http: {{basic_auth: {{username: {AUTH_USER}, "
            f"password_file: {pw_file}}}}}}}\n"
            f"  token: {{prober: http, http: {{bearer_token: {TOKEN}}}}}\n"
            f"  hdr: {{prober: http, http: {{headers: {{Authorization: 'Bearer {HEADER_TOKEN}', "
            "X-Plain: visible}}}\n"
            f"  mtls: {{prober: http, http: {{tls_config: {{cert_file: {certs.leaf_cert}, "
            f"key_file: {key}}}}}}}\n"
            "targets:\n"
            + "".join(
                f"  - {{address: '{site.url('/auth')}', module: {m}, interval: 500ms}}\n"
                for m in ("auth", "wrong", "pwfile", "token", "mtls", "hdr")
            )
        )
        config.write_text(good)
        ex = procs.start_exporter(f"--config.file={config}", "--log.level=debug")
        wait_for(lambda: ex.get("/-/ready").status == 200, 10, "readiness")
        wait_for(lambda: "probe failed" in ex.stderr(), 10, "a failed probe logged at debug")
        pages = [ex.get("/config").text, ex.get("/").text]
        for module in ("auth", "wrong", "pwfile", "token", "mtls", "hdr"):
            reply = ex.get(f"/probe?module={module}&debug=true&target={site.url('/auth')}")
            assert reply.status == 200
            pages.append(reply.text)
        assert "probe_success 1" in pages[2 + 0]  # the right password did get through
        assert "X-Plain: visible" in pages[0]  # only the credential headers are withheld
        targets = {"c": f"127.0.0.1:{site.port}", "d": site.url("/auth"), "f": site.url("/auth")}
        # a reload whose errors would quote the secrets if they were echoed
        config.write_text(
            "modules:\n"
            f"  a: {{prober: http, http: {{bearer_token: [{TOKEN}]}}}}\n"
            f"  b: {{prober: http, http: {{basic_auth: {{username: u, "
            f"password: [{WRONG_PASSWORD}]}}}}}}\n"
            f"  c: {{prober: http, http: {{tls_config: {{cert_file: {certs.leaf_cert}, "
            f"key_file: /nonexistent/{KEY_NAME}}}}}}}\n"
            f"  d: {{prober: http, http: {{basic_auth: {{username: u, password_file: "
            f"/nonexistent/{PW_FILE_NAME}}}}}}}\n"
            f"  e: {{prober: http, http: {{headers: {{Authorization: [{HEADER_TOKEN}]}}}}}}\n"
        )
        reload = ex.post("/-/reload")
        assert reload.status == 400
        pages.append(reload.text)
        wait_for(lambda: "config reload rejected" in ex.stderr(), 5, "the rejection logged")
        # files that cannot be read now are warnings (the probes fail until they can): the
        # warnings withhold their names just the same
        config.write_text(
            "modules:\n"
            f"  c: {{prober: tcp, tcp: {{tls: true, tls_config: {{cert_file: {certs.leaf_cert}, "
            f"key_file: /nonexistent/{KEY_NAME}}}}}}}\n"
            f"  d: {{prober: http, http: {{basic_auth: {{username: u, password_file: "
            f"/nonexistent/{PW_FILE_NAME}}}}}}}\n"
            f"  f: {{prober: http, http: {{bearer_token_file: /nonexistent/{TOKEN_FILE_NAME}}}}}\n"
            "targets:\n"
            + "".join(
                f"  - {{address: '{targets[m]}', module: {m}, interval: 200ms}}\n"
                for m in ("c", "d", "f")
            )
        )
        assert ex.post("/-/reload").status == 200
        wait_for(lambda: ex.stderr().count("config warning") >= 3, 5, "the warnings logged")
        # ... and so do the probes that fail for want of them (debug page, status page, log)
        for module, why in (
            ("c", "key_file: cannot read <secret>"),
            ("d", "basic_auth.password_file: cannot read <secret>"),
            ("f", "credentials_file: cannot read <secret>"),
        ):
            reply = ex.get(f"/probe?module={module}&debug=true&target={targets[module]}")
            assert "probe_success 0" in reply.text and why in reply.text, reply.text
            pages.append(reply.text)
        wait_for(lambda: ex.stderr().count("probe failed") >= 6, 5, "failed probes logged")
        pages.append(ex.get("/").text)
        log = ex.stderr()
    for secret in secrets:
        assert secret not in log, f"{secret!r} in the log"
        for page in pages:
            assert secret not in page, f"{secret!r} in a page:\n{page[:2000]}"
    assert "modules.a.http.bearer_token" in reload.text
    warnings = [line for line in log.splitlines() if "config warning" in line]
    assert all("<secret>" in line for line in warnings[-3:]), warnings


def test_wrong_kinds_under_secret_keys_stay_out_of_check_reload_and_log(
    procs: Processes, tmp_path: Path
) -> None:
    config, web = tmp_path / "config.yml", tmp_path / "web.yml"
    config.write_text("modules:\n  ok: {prober: tcp}\n")
    web.write_text("basic_auth_users: {}\n")
    ex = procs.start_exporter(f"--config.file={config}", f"--web.config.file={web}")
    wait_for(lambda: ex.get("/-/ready").status == 200, 10, "readiness")
    bad, expected = module_config()
    config.write_text(bad)
    check = run_exporter(f"--config.file={config}", "--config.check")
    assert check.returncode == 1
    reload = ex.post("/-/reload")
    assert reload.status == 400
    wait_for(lambda: ex.stderr().count("config reload rejected") >= len(expected), 5, "the log")
    for tail in expected:
        assert f"{config}{tail}" in check.stderr, check.stderr
        assert f"{config}{tail}" in reload.text, reload.text
        assert f"{config}{tail}" in ex.stderr()
    outputs = [check.stdout + check.stderr, reload.text]
    for i, text in enumerate(WEB_ERRORS):
        web.write_text(text)
        checked = run_exporter(f"--web.config.file={web}", "--config.check")
        assert checked.returncode == 1 and checked.stderr.startswith(f"{web}:1: "), checked
        outputs.append(checked.stdout + checked.stderr)
        ex.proc.send_signal(signal.SIGHUP)
        wait_for(lambda n=i + 1: ex.stderr().count("web config rejected") >= n, 5, "the log")
    assert ex.get("/-/healthy").status == 200  # the previous web config is kept
    outputs.append(ex.stderr())
    for text in outputs:
        assert WRONG_KIND not in text, text
