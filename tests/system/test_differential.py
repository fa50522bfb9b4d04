"""Differential tests of ``/probe``: our exporter against the real blackbox_exporter 0.23.

Both exporters run once per module with ONE config file (``blackbox.module_matrix()``) and
probe the same local servers (``servers.all_targets()``). For every case of ``CASES`` the test
asserts that blackbox's ``probe_success`` is the one in the table (which validates the harness
and pins the semantics), that ours is the same, and that our exposition is compatible with
blackbox's (see ``compare()``).

Needs ``/usr/bin/prometheus-blackbox-exporter`` (Debian ``prometheus-blackbox-exporter``): with
CI set a missing binary is a failure, otherwise a skip. The blackhole cases need root and
iproute2 (a network namespace, see ``tests/support/netns.py``): skipped without, failed under CI.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support import blackbox, netns, procutil
from tests.support.blackbox import Family, compare, parse_metrics, probe_response
from tests.support.procutil import Exporter
from tests.support.servers import LAST_MODIFIED_UNIX, Targets, all_targets

# the matrix


@dataclass(frozen=True)
class Case:
    """One probe. ``target`` is formatted with ``placeholders()``; ``success`` is blackbox's
    (and so the required) ``probe_success``; ``pins`` are more blackbox values the case is
    about (a str value names a placeholder). Everything else is compared, not pinned."""

    id: str
    module: str
    target: str
    success: int
    pins: Mapping[str, float | str] = field(default_factory=dict)
    #: X-Prometheus-Scrape-Timeout-Seconds (the probe gets this minus 0.5 s)
    scrape_timeout: float = 5
    #: "netns": needs the blackhole / unreachable addresses of a network namespace
    needs: str | None = None


REGEX_0: Mapping[str, float | str] = {"probe_failed_due_to_regex": 0}
REGEX_1: Mapping[str, float | str] = {"probe_failed_due_to_regex": 1}
H = "http://127.0.0.1:{http}"
S = "https://127.0.0.1:{https}"

# fmt: off
CASES: list[Case] = [
    # ---- tcp: connect
    Case("tcp_open",            "tcp_connect",      "127.0.0.1:{hold}",      1, {"probe_ip_protocol": 4}),  # noqa: E501
    Case("tcp_open_v6",         "tcp_connect",      "[::1]:{hold6}",         1, {"probe_ip_protocol": 6}),  # noqa: E501
    Case("tcp_open_localhost",  "tcp_connect",      "localhost:{hold}",      1, {"probe_ip_protocol": 4}),  # noqa: E501
    Case("tcp_closed",          "tcp_connect",      "127.0.0.1:{closed}",    0, {"probe_ip_protocol": 4}),  # noqa: E501
    Case("tcp_closed_v6",       "tcp_connect",      "[::1]:{closed6}",       0, {"probe_ip_protocol": 6}),  # noqa: E501
    Case("tcp_blackhole",       "tcp_connect",      "{blackhole}:9",         0, scrape_timeout=1.5, needs="netns"),  # noqa: E501
    Case("tcp_unreachable",     "tcp_connect",      "{unreachable}:9",       0, scrape_timeout=1.5, needs="netns"),  # noqa: E501
    # ---- tcp: query_response
    Case("tcp_filtered_app",    "tcp_expect_never", "127.0.0.1:{hold}",      0, REGEX_0),  # read times out: not a regex failure  # noqa: E501
    Case("tcp_expect_eof",      "tcp_expect_never", "127.0.0.1:{talker}",    0, REGEX_1),  # EOF before a match  # noqa: E501
    Case("ssh_banner",          "ssh_banner",       "127.0.0.1:{banner}",    1, REGEX_0),
    Case("ssh_banner_wrong",    "ssh_banner",       "127.0.0.1:{talker}",    0, REGEX_1),
    Case("irc_banner",          "irc_banner",       "127.0.0.1:{irc}",       1, REGEX_0),  # needs PONG ${1}  # noqa: E501
    Case("irc_banner_not_irc",  "irc_banner",       "127.0.0.1:{talker}",    0, REGEX_1),
    Case("starttls",            "smtp_starttls",    "127.0.0.1:{starttls}",  1, {"probe_ssl_earliest_cert_expiry": "leaf_not_after"}),  # noqa: E501
    Case("starttls_localhost",  "smtp_starttls",    "localhost:{starttls}",  1),
    Case("starttls_expired",    "smtp_starttls",    "127.0.0.1:{starttls_expired}", 0),
    # ---- tcp: tls
    Case("tls_valid",           "tls_connect",      "127.0.0.1:{tls_valid}", 1, {"probe_ssl_earliest_cert_expiry": "leaf_not_after", "probe_ssl_last_chain_expiry_timestamp_seconds": "leaf_not_after"}),  # noqa: E501
    Case("tls_valid_localhost", "tls_connect",      "localhost:{tls_valid}", 1),
    Case("tls_expired",         "tls_connect",      "127.0.0.1:{tls_expired}", 0),
    Case("tls_selfsigned",      "tls_connect",      "127.0.0.1:{tls_selfsigned}", 0),
    Case("tls_selfsigned_insecure", "tls_insecure", "127.0.0.1:{tls_selfsigned}", 1, {"probe_ssl_earliest_cert_expiry": "selfsigned_not_after", "probe_ssl_last_chain_expiry_timestamp_seconds": -62135596800}),  # noqa: E501
    Case("tls_expired_insecure", "tls_insecure",    "127.0.0.1:{tls_expired}", 1, {"probe_ssl_earliest_cert_expiry": "expired_not_after"}),  # noqa: E501
    Case("tls_on_plaintext",    "tls_connect",      "127.0.0.1:{talker}",    0),
    Case("tls_closed",          "tls_connect",      "127.0.0.1:{closed}",    0),
    # ---- http
    Case("http_ok",             "http_2xx",         H + "/ok",               1, {"probe_http_status_code": 200, "probe_http_content_length": 15, "probe_http_version": 1.1, "probe_http_last_modified_timestamp_seconds": LAST_MODIFIED_UNIX}),  # noqa: E501
    Case("http_no_scheme",      "http_2xx",         "127.0.0.1:{http}",      1),
    Case("http_localhost",      "http_2xx",         "http://localhost:{http}/ok", 1, {"probe_ip_protocol": 4}),  # noqa: E501
    Case("http_v6",             "http_2xx",         "http://[::1]:{http6}/ok", 1, {"probe_ip_protocol": 6}),  # noqa: E501
    Case("http_chunked",        "http_2xx",         H + "/chunked",          1, {"probe_http_content_length": -1, "probe_http_uncompressed_body_length": 7}),  # noqa: E501
    Case("http_redirect",       "http_2xx",         H + "/redirect",         1, {"probe_http_redirects": 1, "probe_http_status_code": 200}),  # noqa: E501
    Case("http_redirect_nofollow", "http_no_redirect", H + "/redirect",      0, {"probe_http_redirects": 1, "probe_http_status_code": 301}),  # noqa: E501
    Case("http_404",            "http_2xx",         H + "/missing",          0, {"probe_http_status_code": 404}),  # noqa: E501
    Case("http_404_valid",      "http_404",         H + "/missing",          1),
    Case("http_500",            "http_2xx",         H + "/error",            0, {"probe_http_status_code": 500}),  # noqa: E501
    Case("http_closed",         "http_2xx",         "http://127.0.0.1:{closed}/", 0, {"probe_http_status_code": 0}),  # noqa: E501
    Case("http_slow_timeout",   "http_timeout_1s",  H + "/slow",             0, {"probe_http_status_code": 0}),  # noqa: E501
    Case("http_blackhole",      "http_2xx",         "http://{blackhole}:80/", 0, scrape_timeout=1.5, needs="netns"),  # noqa: E501
    Case("http_header_ok",      "http_header_match", H + "/header",          1, REGEX_0),
    Case("http_header_bad",     "http_header_match", H + "/header-bad",      0, REGEX_1),
    Case("http_header_required_ok", "http_header_not_match", H + "/header",  1, REGEX_0),
    Case("http_header_required_missing", "http_header_not_match", H + "/ok", 0, REGEX_1),
    Case("http_body_ok",        "http_body_match",  H + "/ok",               1, REGEX_0),
    Case("http_body_forbidden", "http_body_match",  H + "/forbidden-body",   0, REGEX_1),
    Case("http_body_required_ok", "http_body_not_match", H + "/ok",          1, REGEX_0),
    Case("http_body_required_missing", "http_body_not_match", H + "/other",  0, REGEX_1),
    Case("http_post",           "http_post",        H + "/post",             1),
    Case("http_get_on_post_only", "http_2xx",       H + "/post",             0, {"probe_http_status_code": 405}),  # noqa: E501
    Case("http_basic_auth",     "http_basic_auth",  H + "/auth",             1),
    Case("http_auth_missing",   "http_2xx",         H + "/auth",             0, {"probe_http_status_code": 401}),  # noqa: E501
    # ---- https
    Case("https_valid",         "http_ca",          S + "/ok",               1, {"probe_http_ssl": 1, "probe_ssl_earliest_cert_expiry": "leaf_not_after"}),  # noqa: E501
    Case("https_valid_localhost", "http_ca",        "https://localhost:{https}/ok", 1),
    Case("https_unknown_ca",    "http_2xx",         S + "/ok",               0, {"probe_http_ssl": 0}),  # noqa: E501
    Case("https_expired",       "http_ca",          "https://127.0.0.1:{https_expired}/ok", 0),
    Case("https_expired_insecure", "http_insecure", "https://127.0.0.1:{https_expired}/ok", 1, {"probe_ssl_earliest_cert_expiry": "expired_not_after"}),  # noqa: E501
    Case("https_selfsigned_insecure", "http_insecure", "https://127.0.0.1:{https_selfsigned}/ok", 1),  # noqa: E501
    Case("http_ssl_required_plain", "http_ssl_required", H + "/ok",          0, {"probe_http_ssl": 0}),  # noqa: E501
    Case("http_ssl_required_tls", "http_ssl_required", S + "/ok",            1, {"probe_http_ssl": 1}),  # noqa: E501
]
# fmt: on


def placeholders(t: Targets) -> dict[str, str]:
    return {
        "hold": str(t.hold.port),
        "hold6": str(t.hold6.port),
        "closed": str(t.closed_port),
        "closed6": str(t.closed_port6),
        "talker": str(t.talker.port),
        "banner": str(t.banner.port),
        "irc": str(t.irc.port),
        "starttls": str(t.starttls.port),
        "starttls_expired": str(t.starttls_expired.port),
        "tls_valid": str(t.tls_valid.port),
        "tls_expired": str(t.tls_expired.port),
        "tls_selfsigned": str(t.tls_selfsigned.port),
        "http": str(t.http.port),
        "http6": str(t.http6.port),
        "https": str(t.https.port),
        "https_expired": str(t.https_expired.port),
        "https_selfsigned": str(t.https_selfsigned.port),
        "leaf_not_after": str(t.certs.leaf_not_after),
        "expired_not_after": str(t.certs.expired_not_after),
        "selfsigned_not_after": str(t.certs.selfsigned_not_after),
    }


# fixtures: everything once per module


@pytest.fixture(scope="module")
def targets(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Targets]:
    with all_targets(tmp_path_factory.mktemp("certs")) as t:
        yield t


@pytest.fixture(scope="module")
def config_file(targets: Targets, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("config") / "blackbox.yml"
    return blackbox.write_config(path, blackbox.module_matrix(targets.certs))


@pytest.fixture(scope="module")
def namespace() -> Iterator[netns.RoutedNamespace]:
    ns = netns.routed_namespace_or_skip()
    try:
        yield ns
    finally:
        ns.destroy()


# comparison


def _body(resp: procutil.Response) -> str:
    return resp.body.decode("utf-8", errors="replace")


def _metrics_only(text: str, limit: int = 4000) -> str:
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    return "\n".join(lines)[:limit]


def _debug(base_url: str, target: str, case: Case) -> str:
    """The debug output of the same probe, to explain a failure."""
    try:
        resp = probe_response(base_url, target, case.module, case.scrape_timeout, debug=True)
    except OSError as exc:
        return f"(debug probe failed: {exc})"
    return _body(resp)[:6000]


def _probe(who: str, base_url: str, target: str, case: Case) -> dict[str, Family]:
    resp = probe_response(base_url, target, case.module, case.scrape_timeout)
    where = f"[{case.id}] module={case.module} target={target}: {who}"
    assert resp.status == 200, f"{where}: /probe answered {resp.status}: {_body(resp)[:2000]}"
    ctype = resp.headers.get("content-type", "")
    assert ctype.startswith("text/plain"), f"{where}: content-type {ctype!r}"
    try:
        return parse_metrics(_body(resp))
    except Exception as exc:
        raise AssertionError(f"{where}: unparsable exposition ({exc}):\n{_body(resp)}") from exc


def _success(families: dict[str, Family]) -> float | None:
    fam = families.get("probe_success")
    if fam is None or len(fam.samples) != 1:
        return None
    return next(iter(fam.samples.values()))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_probe_matches_blackbox(
    case: Case, targets: Targets, bb: blackbox.Blackbox, request: pytest.FixtureRequest
) -> None:
    values = placeholders(targets)
    if case.needs == "netns":
        ns: netns.RoutedNamespace = request.getfixturevalue("namespace")
        values |= {"blackhole": ns.blackhole_ip, "unreachable": ns.unreachable_ip}
    target = case.target.format(**values)
    where = f"[{case.id}] module={case.module} target={target}"

    # the reference first: blackbox must do what the table says (validates the harness)
    ref = _probe("blackbox", bb.url, target, case)
    pins: dict[str, float] = {"probe_success": case.success}
    for name, pin in case.pins.items():
        pins[name] = float(values[pin]) if isinstance(pin, str) else float(pin)
    for name, want in pins.items():
        fam = ref.get(name)
        value = None if fam is None or len(fam.samples) != 1 else next(iter(fam.samples.values()))
        assert value == want, (
            f"{where}: blackbox {name} = {value}, the table says {want}\n"
            f"{_debug(bb.url, target, case)}"
        )
    assert not any(s.errors for s in targets.tcp_servers()), "a test server handler crashed"

    # then ours, compared with blackbox
    exporter: Exporter = request.getfixturevalue("ours")
    got = _probe("ours", exporter.url, target, case)
    problems = []
    if _success(got) != case.success:
        problems.append(f"probe_success: ours {_success(got)}, expected {case.success}")
    problems += compare(ref, got)
    if problems:
        pytest.fail(
            f"{where}: ours differs from blackbox:\n  "
            + "\n  ".join(problems)
            + f"\n--- blackbox:\n{_metrics_only(blackbox_text(bb.url, target, case))}"
            + f"\n--- ours (debug):\n{_debug(exporter.url, target, case)}",
            pytrace=False,
        )


def blackbox_text(base_url: str, target: str, case: Case) -> str:
    return _body(probe_response(base_url, target, case.module, case.scrape_timeout))


# the /probe handler itself


def _both(bb: blackbox.Blackbox, request: pytest.FixtureRequest) -> list[tuple[str, str]]:
    exporter: Exporter = request.getfixturevalue("ours")
    return [("blackbox", bb.url), ("ours", exporter.url)]


@pytest.mark.parametrize(
    ("what", "target", "module"),
    [
        ("unknown module", "127.0.0.1:9", "nosuch"),
        ("missing target", None, "tcp_connect"),
        ("empty target", "", "tcp_connect"),
    ],
    ids=["unknown_module", "missing_target", "empty_target"],
)
def test_bad_request_is_400(
    what: str,
    target: str | None,
    module: str,
    bb: blackbox.Blackbox,
    request: pytest.FixtureRequest,
) -> None:
    answers = {}
    for who, url in _both(bb, request):
        resp = probe_response(url, target, module)
        answers[who] = (resp.status, _body(resp))
    assert answers["blackbox"][0] == 400, answers
    assert answers["ours"][0] == 400, f"{what}: {answers}"


@pytest.mark.parametrize(
    ("target", "module", "reason"),
    [
        ("127.0.0.1", "tcp_connect", "'127.0.0.1': missing port"),
        ("http://[::1", "http_2xx", "not a valid URL"),
    ],
    ids=["tcp_no_port", "http_bad_url"],
)
def test_unprobeable_target_is_400_where_blackbox_fails_the_probe(
    target: str, module: str, reason: str, bb: blackbox.Blackbox, request: pytest.FixtureRequest
) -> None:
    """The one documented difference (README): a target the module cannot probe at all is a
    scrape-config mistake, answered 400 with the reason; blackbox answers 200, success 0."""
    answers = {who: probe_response(url, target, module) for who, url in _both(bb, request)}
    assert answers["blackbox"].status == 200
    assert "probe_success 0" in _body(answers["blackbox"])
    assert answers["ours"].status == 400
    assert reason in _body(answers["ours"])


@pytest.mark.parametrize(
    ("target", "module"),
    [("127.0.0.1:{hold}", "tcp_connect"), (H + "/ok", "http_2xx")],
    ids=["tcp", "http"],
)
def test_debug_output(
    target: str,
    module: str,
    targets: Targets,
    bb: blackbox.Blackbox,
    request: pytest.FixtureRequest,
) -> None:
    target = target.format(**placeholders(targets))
    for who, url in _both(bb, request):
        resp = probe_response(url, target, module, debug=True)
        text = _body(resp)
        assert resp.status == 200, (who, resp.status, text)
        ctype = resp.headers.get("content-type", "")
        assert ctype.split(";")[0].strip() == "text/plain", (who, ctype)
        for marker in (
            "Logs for the probe:",
            "Metrics that would have been returned:",
            "Module configuration:",
        ):
            assert marker in text, f"{who}: no {marker!r} in the debug output:\n{text}"
        # the metrics section is the exposition of the same probe
        metrics = text.split("Metrics that would have been returned:\n", 1)[1]
        metrics = metrics.split("\n\n\nModule configuration:", 1)[0]
        assert _success(parse_metrics(metrics)) == 1, f"{who}:\n{text}"
