"""The reference: the real blackbox_exporter 0.23 (Debian `prometheus-blackbox-exporter`).

``start_blackbox()`` runs the binary on a free 127.0.0.1 port with a config written by
``write_config()``; ``probe()`` asks any blackbox-compatible exporter for one probe and
``parse_metrics()`` reads the answer with tests.support.metrics (prometheus_client's parser).
``module_matrix()`` is the module set of the differential tests, one config for both exporters
(blackbox syntax: only a top-level ``modules:``). ``compare()`` lists every way our answer is not
compatible with blackbox's.
"""

from __future__ import annotations

import contextlib
import math
import subprocess
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import procutil
from tests.support.metrics import families
from tests.support.servers import AUTH_PASSWORD, AUTH_USER, HEADER_NAME, POST_BODY, Certs

BLACKBOX = "prometheus-blackbox-exporter"
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0


def require_blackbox() -> str:
    return procutil.require_binary(BLACKBOX, "prometheus-blackbox-exporter")


# the module matrix


def module_matrix(certs: Certs) -> dict[str, Any]:
    """Every module of the differential tests (blackbox 0.23 syntax, accepted by both)."""
    ca = str(certs.ca_cert)
    return {
        # tcp
        "tcp_connect": {"prober": "tcp"},
        "ssh_banner": {  # as in /etc/prometheus/blackbox.yml
            "prober": "tcp",
            "tcp": {
                "query_response": [
                    {"expect": "^SSH-2.0-"},
                    {"send": "SSH-2.0-blackbox-ssh-check"},
                ]
            },
        },
        "irc_banner": {  # as in /etc/prometheus/blackbox.yml: ${1} is the PING token
            "prober": "tcp",
            "tcp": {
                "query_response": [
                    {"send": "NICK prober"},
                    {"send": "USER prober prober prober :prober"},
                    {"expect": "PING :([^ ]+)", "send": "PONG ${1}"},
                    {"expect": "^:[^ ]+ 001"},
                ]
            },
        },
        "smtp_starttls": {
            "prober": "tcp",
            "tcp": {
                "query_response": [
                    {"expect": "^220 "},
                    {"send": "STARTTLS"},
                    {"expect": "^220 "},
                    {"starttls": True},
                    {"expect": "^250 "},
                ],
                "tls_config": {"ca_file": ca},
            },
        },
        "tls_connect": {"prober": "tcp", "tcp": {"tls": True, "tls_config": {"ca_file": ca}}},
        "tls_insecure": {
            "prober": "tcp",
            "tcp": {"tls": True, "tls_config": {"insecure_skip_verify": True}},
        },
        "tcp_expect_never": {
            "prober": "tcp",
            "timeout": "1s",
            "tcp": {"query_response": [{"expect": "^NEVER"}]},
        },
        # http
        "http_2xx": {"prober": "http"},
        "http_404": {"prober": "http", "http": {"valid_status_codes": [404]}},
        "http_no_redirect": {"prober": "http", "http": {"follow_redirects": False}},
        "http_body_match": {
            "prober": "http",
            "http": {"fail_if_body_matches_regexp": ["forbidden"]},
        },
        "http_body_not_match": {
            "prober": "http",
            "http": {"fail_if_body_not_matches_regexp": ["^hello"]},
        },
        "http_header_match": {
            "prober": "http",
            "http": {"fail_if_header_matches": [{"header": HEADER_NAME, "regexp": "bad"}]},
        },
        "http_header_not_match": {
            "prober": "http",
            "http": {"fail_if_header_not_matches": [{"header": HEADER_NAME, "regexp": "^good"}]},
        },
        "http_ca": {"prober": "http", "http": {"tls_config": {"ca_file": ca}}},
        "http_insecure": {"prober": "http", "http": {"tls_config": {"insecure_skip_verify": True}}},
        "http_ssl_required": {
            "prober": "http",
            "http": {"fail_if_not_ssl": True, "tls_config": {"ca_file": ca}},
        },
        "http_post": {
            "prober": "http",
            "http": {
                "method": "POST",
                "headers": {"Content-Type": "application/json"},
                "body": POST_BODY,
            },
        },
        "http_basic_auth": {
            "prober": "http",
            "http": {"basic_auth": {"username": AUTH_USER, "password": AUTH_PASSWORD}},
        },
        "http_timeout_1s": {"prober": "http", "timeout": "1s"},
    }


def write_config(path: Path, modules: Mapping[str, Any]) -> Path:
    path.write_text(yaml.safe_dump({"modules": dict(modules)}, sort_keys=False))
    return path


# the process


@dataclass
class Blackbox:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")


def _healthy(url: str) -> bool:
    try:
        return procutil.http(url + "/-/healthy", timeout=1).status == 200
    except OSError:
        return False


@contextlib.contextmanager
def start_blackbox(config: Path, workdir: Path) -> Iterator[Blackbox]:
    """Run the real blackbox exporter with ``config`` on a free 127.0.0.1 port until exit."""
    binary = require_blackbox()
    workdir.mkdir(parents=True, exist_ok=True)
    for attempt in range(3):  # the free port may be taken between the check and the bind
        port = procutil.free_port()
        log = workdir / f"blackbox{attempt}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [
                    binary,
                    f"--config.file={config}",
                    f"--web.listen-address=127.0.0.1:{port}",
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=workdir,
            )
        bb = Blackbox(proc, port, log)
        try:
            deadline = time.monotonic() + START_TIMEOUT
            while proc.poll() is None and not _healthy(bb.url):
                if time.monotonic() >= deadline:
                    pytest.fail(f"blackbox not healthy after {START_TIMEOUT:g}s:\n{bb.output()}")
                time.sleep(0.05)
            if proc.poll() is not None:
                if "address already in use" in bb.output() and attempt < 2:
                    continue
                pytest.fail(f"blackbox exited {proc.returncode}:\n{bb.output()}")
            yield bb
            return
        finally:
            _stop(proc)
    pytest.fail("blackbox could not get a port")  # unreachable: the loop yields or fails


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=STOP_TIMEOUT)


# probing


def probe_response(
    base_url: str,
    target: str | None,
    module: str | None,
    timeout_header: float | None = 5,
    debug: bool = False,
) -> procutil.Response:
    """``GET /probe`` (parameters left out when None), the scrape-timeout header as Prometheus
    sends it. The HTTP wait is bounded by the header plus a margin."""
    params: dict[str, str] = {}
    if target is not None:
        params["target"] = target
    if module is not None:
        params["module"] = module
    if debug:
        params["debug"] = "true"
    headers = {}
    if timeout_header is not None:
        headers["X-Prometheus-Scrape-Timeout-Seconds"] = f"{timeout_header:g}"
    url = f"{base_url}/probe?{urllib.parse.urlencode(params)}"
    return procutil.http(url, headers=headers, timeout=(timeout_header or 5) + 10)


def probe(base_url: str, target: str, module: str, timeout_header: float = 5) -> tuple[int, str]:
    """One probe: (HTTP status, body text)."""
    resp = probe_response(base_url, target, module, timeout_header)
    return resp.status, resp.body.decode("utf-8", errors="replace")


LabelSet = frozenset[tuple[str, str]]


@dataclass(frozen=True)
class Family:
    name: str
    type: str
    samples: dict[LabelSet, float]


def parse_metrics(text: str) -> dict[str, Family]:
    """A text exposition as {family name: Family}; raises on anything unparsable.

    Samples are keyed by their own name (for the gauges of /probe it is the family name).
    """
    out: dict[str, Family] = {}
    for fam in families(text):
        for s in fam.samples:
            labels: LabelSet = frozenset(s.labels.items())
            family = out.setdefault(s.name, Family(s.name, fam.type, {}))
            if labels in family.samples:
                raise AssertionError(f"duplicate sample {s.name}{dict(labels)}")
            family.samples[labels] = float(s.value)
    return out


def same_value(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


# what is compared, per metric family (c)

#: value-exact (integral and categorical values; label sets included)
EXACT = frozenset(
    {
        "probe_success",
        "probe_failed_due_to_regex",
        "probe_ip_protocol",
        "probe_ip_addr_hash",
        "probe_http_status_code",
        "probe_http_content_length",
        "probe_http_uncompressed_body_length",
        "probe_http_redirects",
        "probe_http_ssl",
        "probe_http_version",
        "probe_ssl_earliest_cert_expiry",
        "probe_ssl_last_chain_expiry_timestamp_seconds",
        "probe_tls_version_info",
        "probe_ssl_last_chain_info",
        "probe_http_last_modified_timestamp_seconds",
    }
)
#: timings: the same label sets (e.g. every ``phase``), every value finite and >= 0
DURATIONS = frozenset(
    {"probe_duration_seconds", "probe_dns_lookup_time_seconds", "probe_http_duration_seconds"}
)
# any other family: the same label sets

#: families blackbox 0.24-0.28 write that the 0.23 reference does not: ours may have them
#: (their values are checked against blackbox's current documentation in their own tests)
NEWER_FAMILIES = frozenset(
    {
        "probe_failed_due_to_bytes",
        "probe_expect_info",
        "probe_tls_cipher_info",
        "probe_timeout_seconds",
    }
)
#: labels blackbox 0.26 added to a family: left out of ours where the reference lacks them
NEWER_LABELS = {"probe_ssl_last_chain_info": frozenset({"serialnumber"})}


def _as_of_reference(name: str, have: Family, want: Family) -> Family:
    """``have`` without the labels blackbox added to ``name`` after the reference's version."""
    newer = NEWER_LABELS.get(name, frozenset())
    if not newer or any(k in newer for labels in want.samples for k, _ in labels):
        return have
    samples = {
        frozenset((k, v) for k, v in labels if k not in newer): value
        for labels, value in have.samples.items()
    }
    return Family(have.name, have.type, samples)


def _fmt(labels: frozenset[tuple[str, str]]) -> str:
    return "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels)) + "}" if labels else ""


def _samples(f: Family) -> str:
    return ", ".join(f"{_fmt(k)} {v!r}" for k, v in sorted(f.samples.items(), key=str))


def compare(ref: dict[str, Family], got: dict[str, Family]) -> list[str]:
    """Every way ``got`` (ours) is not compatible with ``ref`` (blackbox), as lines."""
    problems: list[str] = []
    for name, want in sorted(ref.items()):
        have = got.get(name)
        if have is None:
            problems.append(f"{name}: missing (blackbox: {_samples(want)})")
            continue
        have = _as_of_reference(name, have, want)
        if have.type != want.type:
            problems.append(f"{name}: type {have.type!r}, blackbox {want.type!r}")
        if set(have.samples) != set(want.samples):
            problems.append(
                f"{name}: label sets differ: ours {_samples(have)} / blackbox {_samples(want)}"
            )
            continue
        if name in EXACT:
            for labels, v in want.samples.items():
                if not same_value(have.samples[labels], v):
                    problems.append(
                        f"{name}{_fmt(labels)}: ours {have.samples[labels]!r}, blackbox {v!r}"
                    )
        elif name in DURATIONS:
            for labels, v in have.samples.items():
                if not (math.isfinite(v) and v >= 0):
                    problems.append(f"{name}{_fmt(labels)}: ours {v!r} is not a duration")
    # stricter than "blackbox's families are present": a drop-in emits no probe_* family that
    # blackbox would not (e.g. TLS metrics after a failed handshake)
    for name in sorted(set(got) - set(ref) - NEWER_FAMILIES):
        problems.append(f"{name}: ours only ({_samples(got[name])})")
    return problems
