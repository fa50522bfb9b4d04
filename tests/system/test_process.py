"""End-to-end tests of the exporter as a process: flags, exit codes, signals, HTTP, reload."""

from __future__ import annotations

import gzip
import signal
import socket
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from tests.support import procutil
from tests.support.procutil import Exporter, Processes, find, value, wait_for

INTERVAL = "200ms"
PROBE_COUNTER = "netprobe_probes_total"


@pytest.fixture
def listener2() -> Iterator[int]:
    with procutil.loopback_listener() as port:
        yield port


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exporter]:
    """One exporter (embedded default config) for the read-only HTTP tests."""
    p = Processes(tmp_path_factory.mktemp("shared"))
    try:
        exporter = p.start_exporter()
        wait_for(lambda: exporter.get("/-/ready").status == 200, 5, "readiness")
        yield exporter
    finally:
        p.close()


def config_text(*addresses: str, interval: str = INTERVAL) -> str:
    lines = ["defaults:", f"  interval: {interval}", "targets:"]
    lines += [f"  - address: {a}" for a in addresses]
    return "\n".join(lines) + "\n"


def counter(exporter: Exporter, target: str, result: str) -> float:
    v = value(exporter.metrics(), PROBE_COUNTER, target=target, result=result)
    return -1.0 if v is None else v


def wait_counter_above(
    exporter: Exporter, target: str, result: str, above: float, timeout: float = 5
) -> float:
    return wait_for(
        lambda: (v := counter(exporter, target, result)) > above and v,
        timeout,
        f'{PROBE_COUNTER}{{target="{target}",result="{result}"}} > {above:g}',
    )


# startup


# In one process the first probe goes out at once; probe workers first import the probers in
# a fresh interpreter (0.7 s on an idle machine here), hence the longer bound for them.
@pytest.mark.parametrize(("flags", "first_within"), [((), 3.0), (("--probe.workers=0",), 1.0)],
                         ids=["workers", "one-process"])  # fmt: skip
def test_embedded_default_probes_its_own_address(
    procs: Processes, flags: tuple[str, ...], first_within: float
) -> None:
    exporter = procs.start_exporter(*flags)
    me = f"127.0.0.1:{exporter.port}"

    def live() -> bool:
        samples = exporter.metrics()
        up = value(samples, "netprobe_up", target=me, module="tcp_connect")
        count = value(
            samples, "netprobe_connect_duration_seconds_count", target=me, module="tcp_connect"
        )
        return up == 1 and count is not None and count >= 1

    wait_for(live, 10.0, f"netprobe_up{{target={me!r}}} 1")
    # timed by the exporter's own clock (its log line and the probe's timestamp), so a slow
    # test process does not count against it
    samples = exporter.metrics()
    listening = next(r for r in exporter.log_records() if r.get("msg") == "listening")
    started = datetime.fromisoformat(listening["ts"].replace("Z", "+00:00")).timestamp()
    probed = value(samples, "netprobe_last_probe_timestamp_seconds", target=me)
    assert probed is not None and 0 <= probed - started <= first_within, (started, probed)
    assert value(samples, PROBE_COUNTER, target=me, module="tcp_connect", result="success") >= 1  # type: ignore[operator]
    assert value(samples, "netprobe_config_last_reload_successful") == 1
    assert value(samples, "netprobe_targets", module="tcp_connect") == 1


def test_version_prints_version_and_exits_0() -> None:
    from netprobe_exporter import __version__

    done = procutil.run_exporter("--version")
    assert done.returncode == 0, done
    assert done.stdout.startswith("netprobe-exporter, version "), done.stdout
    assert __version__ in done.stdout


def test_bad_flag_exits_1() -> None:
    done = procutil.run_exporter("--nope")
    assert done.returncode == 1, done
    assert "--nope" in done.stderr


def test_invalid_config_at_start_exits_1_naming_file_and_line(
    procs: Processes, tmp_path: Path
) -> None:
    path = tmp_path / "bad.yml"
    path.write_text("targets:\n  - address: 127.0.0.1:1\n    interval: 5x\n")
    exporter = procs.spawn_exporter("--web.listen-address=127.0.0.1:0", f"--config.file={path}")
    assert exporter.wait_exit(10) == 1
    err = exporter.stderr()
    assert f"{path}:3: targets[0].interval:" in err, err
    errors = [r["error"] for r in exporter.log_records() if r.get("level") == "error"]
    assert f'{path}:3: targets[0].interval: "5x" is not a duration' in errors, err
    assert "msg=listening" not in err


def test_config_check_valid_exits_0(tmp_path: Path) -> None:
    path = tmp_path / "ok.yml"
    path.write_text(config_text("127.0.0.1:1", "127.0.0.1:2"))
    done = procutil.run_exporter("--config.check", f"--config.file={path}")
    assert done.returncode == 0, done
    assert str(path) in done.stdout
    assert "2 targets" in done.stdout


def test_config_check_invalid_prints_one_line_per_error_and_a_verdict(tmp_path: Path) -> None:
    path = tmp_path / "bad.yml"
    path.write_text(
        "targets:\n"
        "  - address: 127.0.0.1:1\n"
        "    interval: 5x\n"
        "  - address: 127.0.0.1:2\n"
        "    colour: red\n"
    )
    done = procutil.run_exporter("--config.check", f"--config.file={path}")
    assert done.returncode == 1, done
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert lines == [
        f'{path}:3: targets[0].interval: "5x" is not a duration',
        f"{path}:5: targets[1].colour: unknown key",
        f"check failed: errors in {path}",
    ]


def test_config_check_also_checks_the_other_flags_a_start_would(tmp_path: Path) -> None:
    path = tmp_path / "ok.yml"
    path.write_text(config_text("127.0.0.1:1"))
    ok = ["--config.check", f"--config.file={path}"]
    bad_shard = procutil.run_exporter(*ok, "--shard=3/2")
    assert bad_shard.returncode == 1 and "--shard" in bad_shard.stderr, bad_shard
    missing = tmp_path / "nowhere" / "web.yml"
    no_web = procutil.run_exporter(*ok, f"--web.config.file={missing}")
    assert no_web.returncode == 1 and str(missing) in no_web.stderr, no_web
    web = tmp_path / "web.yml"
    web.write_text("basic_auth_users:\n  u: plain\n")
    bad_web = procutil.run_exporter(*ok, f"--web.config.file={web}")
    assert bad_web.returncode == 1, bad_web
    assert f"{web}:2: basic_auth_users.u: must be a bcrypt hash" in bad_web.stderr
    # a certificate that is no certificate fails the check as it fails a start
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    web.write_text(f"tls_server_config:\n  cert_file: {junk}\n  key_file: {junk}\n")
    bad_tls = procutil.run_exporter(*ok, f"--web.config.file={web}")
    assert bad_tls.returncode == 1 and f"{web}: tls_server_config:" in bad_tls.stderr, bad_tls
    # both files' errors in one run
    broken = tmp_path / "broken.yml"
    broken.write_text("targets:\n  - address: 127.0.0.1:1\n    interval: 5x\n")
    both = procutil.run_exporter("--config.check", f"--config.file={broken}",
                                 f"--web.config.file={web}")  # fmt: skip
    assert both.returncode == 1 and "tls_server_config" in both.stderr, both
    assert '"5x" is not a duration' in both.stderr, both
    web.write_text("http_server_config:\n  headers: {X-Frame-Options: deny}\n")
    good_web = procutil.run_exporter(*ok, f"--web.config.file={web}")
    assert good_web.returncode == 0, good_web
    assert f"{web}: OK" in good_web.stdout and "1 targets" in good_web.stdout


def test_listen_failure_exits_2(procs: Processes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        exporter = procs.spawn_exporter(f"--web.listen-address=127.0.0.1:{port}")
        assert exporter.wait_exit(10) == 2
    assert "cannot listen" in exporter.stderr()


# shutdown


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_cleanly(procs: Processes, listener: int, signum: signal.Signals) -> None:
    closed = procutil.closed_port()
    exporter = procs.start_exporter(
        f"--target=127.0.0.1:{listener}", f"--target=127.0.0.1:{closed}"
    )
    wait_for(lambda: exporter.get("/-/ready").status == 200, 5, "readiness")
    wait_counter_above(exporter, f"127.0.0.1:{closed}", "refused", 0, timeout=20)
    port = exporter.port
    assert procutil.port_is_open(port)
    exporter.proc.send_signal(signum)
    assert exporter.wait_exit(10) == 0, exporter.stderr()
    assert not procutil.port_is_open(port)
    assert "msg=stopped" in exporter.stderr()


# HTTP surface


@pytest.mark.parametrize(
    ("method", "path", "status", "allow"),
    [
        ("GET", "/-/healthy", 200, None),
        ("GET", "/-/ready", 200, None),
        ("GET", "/metrics", 200, None),
        ("GET", "/nope", 404, None),
        ("GET", "/metrics/", 404, None),
        ("GET", "/-/nope", 404, None),
        ("POST", "/metrics", 405, "GET"),
        ("GET", "/-/reload", 405, "POST"),
        ("POST", "/-/reload", 200, None),
    ],
)
def test_endpoint_status(
    shared: Exporter, method: str, path: str, status: int, allow: str | None
) -> None:
    resp = procutil.http(shared.url + path, method=method)
    assert resp.status == status, resp
    if allow is not None:
        assert allow in [m.strip() for m in resp.headers["allow"].split(",")], resp.headers


def test_metrics_default_is_text_format(shared: Exporter) -> None:
    resp = shared.get("/metrics")
    ctype = resp.headers["content-type"]
    assert ctype.startswith("text/plain"), ctype
    assert "version=0.0.4" in ctype
    assert "content-encoding" not in resp.headers
    assert "# EOF" not in resp.text
    assert "# TYPE netprobe_probes_total counter" in resp.text


@pytest.mark.parametrize(
    "accept",
    [
        "application/openmetrics-text; version=1.0.0",
        # what Prometheus 2.x sends
        "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
        "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
    ],
)
def test_metrics_openmetrics_when_asked(shared: Exporter, accept: str) -> None:
    resp = shared.get("/metrics", headers={"Accept": accept})
    assert resp.status == 200
    assert resp.headers["content-type"].startswith("application/openmetrics-text")
    assert resp.text.endswith("# EOF\n")
    assert resp.text.count("# EOF") == 1
    assert "# TYPE netprobe_probes counter" in resp.text


def test_metrics_q_values_prefer_text(shared: Exporter) -> None:
    accept = "application/openmetrics-text;version=1.0.0;q=0.3,text/plain;version=0.0.4;q=0.9"
    resp = shared.get("/metrics", headers={"Accept": accept})
    assert resp.headers["content-type"].startswith("text/plain")
    assert "# EOF" not in resp.text


def test_metrics_gzip(shared: Exporter) -> None:
    plain = shared.get("/metrics")
    zipped = shared.get("/metrics", headers={"Accept-Encoding": "gzip"})
    assert zipped.headers.get("content-encoding") == "gzip"
    assert zipped.body[:2] == b"\x1f\x8b"
    text = gzip.decompress(zipped.body).decode("utf-8")
    assert procutil.type_lines(text) == procutil.type_lines(plain.text)
    assert len(procutil.type_lines(text)) > 10
    names = {s.name for s in procutil.parse_samples(text)}
    assert names == {s.name for s in procutil.parse_samples(plain.text)}


def test_metrics_gzip_q0_is_not_gzipped(shared: Exporter) -> None:
    resp = shared.get("/metrics", headers={"Accept-Encoding": "gzip;q=0, identity"})
    assert "content-encoding" not in resp.headers
    assert resp.text.startswith("# HELP ")


# reload


def _reload(exporter: Exporter, how: str) -> procutil.Response | None:
    if how == "sighup":
        exporter.proc.send_signal(signal.SIGHUP)
        return None
    return exporter.post("/-/reload")


@pytest.mark.parametrize("how", ["sighup", "post"])
def test_reload_valid_change(
    procs: Processes, tmp_path: Path, listener: int, listener2: int, how: str
) -> None:
    kept, added = f"127.0.0.1:{listener}", f"127.0.0.1:{listener2}"
    removed = f"127.0.0.1:{procutil.closed_port()}"
    path = tmp_path / "netprobe.yml"
    path.write_text(config_text(kept, removed))
    exporter = procs.start_exporter(f"--config.file={path}")
    # a few probes in, so that a reset counter (back to 0 or 1) would show below
    wait_counter_above(exporter, kept, "success", 3)
    wait_counter_above(exporter, removed, "refused", 0)
    assert find(exporter.metrics(), "netprobe_up", target=added) == []

    path.write_text(config_text(kept, added))
    before = counter(exporter, kept, "success")
    resp = _reload(exporter, how)
    if resp is not None:
        assert resp.status == 200, resp

    def switched() -> bool:
        samples = exporter.metrics()
        return not find(samples, "netprobe_up", target=removed) and bool(
            value(samples, "netprobe_up", target=added) == 1
        )

    wait_for(switched, 5, f"{removed} gone and {added} up")
    samples = exporter.metrics()
    assert [s for s in samples if s.labels.get("target") == removed] == []
    assert value(samples, PROBE_COUNTER, target=kept, result="success") >= before  # type: ignore[operator]
    assert value(samples, "netprobe_config_last_reload_successful") == 1
    assert value(samples, "netprobe_targets", module="tcp_connect") == 2
    wait_counter_above(exporter, added, "success", 0)
    wait_counter_above(exporter, kept, "success", before)


def _bad_yaml(good: str) -> tuple[str, str]:
    return good + "    interval: 200ms: x\n", ":{line}: invalid YAML"


def _unknown_key(good: str) -> tuple[str, str]:
    return good + "    colour: red\n", ":{line}: targets[1].colour: unknown key"


def _bad_duration(good: str) -> tuple[str, str]:
    return good + "    interval: 5x\n", ':{line}: targets[1].interval: "5x" is not a duration'


def _duplicate(good: str) -> tuple[str, str]:
    first = good.splitlines()[3]  # "  - address: <kept>"
    return good + first + "\n", ":{line}: targets[2].address: duplicate target"


BAD_CONFIGS = {
    "bad_yaml": _bad_yaml,
    "unknown_key": _unknown_key,
    "bad_duration": _bad_duration,
    "duplicate_target": _duplicate,
}


@pytest.mark.parametrize(
    ("case", "how"),
    [(name, "post") for name in BAD_CONFIGS] + [("bad_duration", "sighup")],
)
def test_reload_invalid_config_keeps_running_config(
    procs: Processes, tmp_path: Path, listener: int, case: str, how: str
) -> None:
    kept = f"127.0.0.1:{listener}"
    refused = f"127.0.0.1:{procutil.closed_port()}"
    path = tmp_path / "netprobe.yml"
    good = config_text(kept, refused)
    path.write_text(good)
    exporter = procs.start_exporter(f"--config.file={path}")
    wait_counter_above(exporter, kept, "success", 0)
    wait_counter_above(exporter, refused, "refused", 0)
    assert value(exporter.metrics(), "netprobe_config_last_reload_successful") == 1

    bad, where = BAD_CONFIGS[case](good)
    path.write_text(bad)
    expected = f"{path}" + where.format(line=len(bad.splitlines()))
    success_before = counter(exporter, kept, "success")
    refused_before = counter(exporter, refused, "refused")

    resp = _reload(exporter, how)
    if resp is not None:
        assert resp.status == 400, resp
        assert expected in resp.text, resp.text
    wait_for(
        lambda: value(exporter.metrics(), "netprobe_config_last_reload_successful") == 0,
        5,
        "netprobe_config_last_reload_successful 0",
    )
    wait_for(
        lambda: [
            r
            for r in exporter.log_records()
            if r.get("level") == "error"
            and "config reload rejected" in r.get("msg", "")
            and expected in r.get("error", "")
        ],
        5,
        f"an error log line naming {expected!r}",
    )
    # the running config stays: same targets, probed on, no series reset
    wait_counter_above(exporter, kept, "success", success_before)
    wait_counter_above(exporter, refused, "refused", refused_before)

    def settled() -> list | None:  # type: ignore[type-arg]
        """The last results are the expected ones (one can time out on a loaded machine)."""
        samples = exporter.metrics()
        kept_up = value(samples, "netprobe_up", target=kept)
        refused_up = value(samples, "netprobe_up", target=refused)
        return samples if (kept_up, refused_up) == (1, 0) else None

    samples = wait_for(settled, 5, "the kept targets' last results")
    assert value(samples, "netprobe_targets", module="tcp_connect") == 2
    assert value(samples, "netprobe_config_last_reload_successful") == 0
    assert exporter.get("/-/ready").status == 200

    # and a fixed config is accepted again
    path.write_text(good)
    ok = exporter.post("/-/reload")
    assert ok.status == 200, ok
    assert value(exporter.metrics(), "netprobe_config_last_reload_successful") == 1


def test_bad_shard_exits_1() -> None:
    done = procutil.run_exporter("--shard=2/2")
    assert done.returncode == 1, done
    assert "--shard" in done.stderr


def test_two_shards_probe_each_target_once(procs: Processes, tmp_path: Path) -> None:
    config = tmp_path / "config.yml"
    config.write_text(
        "defaults:\n  interval: 60s\ntargets:\n"
        + "".join(f"  - address: 127.0.0.1:{20000 + i}\n" for i in range(40))
    )
    replicas = [procs.start_exporter(f"--config.file={config}", f"--shard={i}/2") for i in range(2)]
    seen: list[str] = []
    for replica in replicas:
        wait_for(lambda r=replica: r.get("/-/ready").status == 200, 5, "readiness")
        samples = [s for s in replica.metrics() if s.name == "netprobe_probes_total"]
        targets = {s.labels["target"] for s in samples}
        assert 5 <= len(targets) <= 35, len(targets)  # both replicas got a real share
        seen.extend(targets)
    assert sorted(seen) == sorted(f"127.0.0.1:{20000 + i}" for i in range(40))


def test_config_page_shows_the_running_config_without_secrets(
    procs: Processes, tmp_path: Path
) -> None:
    config = tmp_path / "config.yml"
    config.write_text(
        "modules:\n  web:\n    prober: http\n    http:\n"
        "      basic_auth: {username: u, password: hunter2}\n"
        "  tok:\n    prober: http\n    http: {bearer_token: t0ken}\n"
        "targets:\n  - address: 127.0.0.1:1\n    interval: 2s\n    labels: {team: a}\n"
        "probe_policy:\n  allow: [10.0.0.0/8, '*.example.org']\n"
    )
    ex = procs.start_exporter(f"--config.file={config}")
    page = ex.get("/config")
    assert page.status == 200
    text = page.text
    assert "hunter2" not in text and "t0ken" not in text
    assert text.count("<secret>") == 2
    doc = yaml.safe_load(text)
    assert doc["targets"] == [
        {"address": "127.0.0.1:1", "module": "tcp_connect", "interval": "2s",
         "labels": {"team": "a"}, "buckets": doc["defaults"]["buckets"],
         "native_histogram_bucket_factor": 1.1, "native_histogram_max_buckets": 160,
         "native_histogram_zero_threshold": 2.0**-128}
    ]  # fmt: skip
    assert doc["modules"]["web"]["http"]["basic_auth"] == {"username": "u", "password": "<secret>"}
    assert doc["probe_policy"]["allow"] == ["10.0.0.0/8", "*.example.org"]
    assert doc["modules"]["tok"]["http"]["authorization"] == {
        "type": "Bearer",
        "credentials": "<secret>",
    }
    # what the page shows is a config: saved, it passes the check
    saved = tmp_path / "saved.yml"
    saved.write_text(text)
    check = procutil.run_exporter("--config.check", f"--config.file={saved}")
    assert check.returncode == 0, check
    assert doc["limits"]["max_targets"] == 100_000
    assert doc["limits"]["web_request_timeout"] == "10s"
