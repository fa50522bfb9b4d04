"""A peer that floods a ``query_response`` probe with lines, asked for with ``debug=true``.

The debug log must stay bounded (lines and bytes, then a "… N more lines" marker), the answer
must come within the probe's timeout, and the exporter must keep answering and probing.
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

from netprobe_exporter.probes import MAX_LOG_LINES
from tests.support.procutil import Exporter, Processes, http, value, wait_for
from tests.support.servers import Conn, tcp_server

FLOOD_BYTES = 10 << 20


PROBE_TIMEOUT = 3.0
#: a loaded two-core machine may add a few seconds; the unbounded log took about a minute


MARGIN = 4.0


def _flood(conn: Conn) -> None:
    """10 MiB of empty lines, then silence until the prober hangs up."""
    chunk = b"\n" * 65536
    try:
        for _ in range(FLOOD_BYTES // len(chunk)):
            conn.send(chunk)
        conn.drain(timeout=30.0)
    except OSError:
        pass  # the prober hung up at its timeout: that is the test


def _rss_kib(ex: Exporter) -> int:
    for line in Path(f"/proc/{ex.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM in /proc status")


def _watch_health(ex: Exporter, stop: threading.Event, worst: list[float]) -> None:
    while not stop.is_set():
        t0 = time.monotonic()
        try:
            ok = http(ex.url + "/-/healthy", timeout=MARGIN + PROBE_TIMEOUT).status == 200
        except OSError:
            ok = False
        worst.append(time.monotonic() - t0 if ok else float("inf"))
        stop.wait(0.1)


def test_debug_probe_of_a_line_flood_is_bounded_and_on_time(tmp_path: Path) -> None:
    with tcp_server(_flood) as peer, tcp_server(lambda c: c.drain(timeout=30.0)) as steady:
        config = tmp_path / "c.yml"
        config.write_text(
            "modules:\n"
            "  flood:\n"
            "    prober: tcp\n"
            f"    timeout: {PROBE_TIMEOUT}s\n"
            "    tcp: {query_response: [{expect: '^never'}]}\n"
            "targets:\n"
            f"  - {{address: '{steady.address}', module: tcp_connect, interval: 100ms}}\n"
        )
        procs = Processes(tmp_path)
        try:
            ex = procs.start_exporter(f"--config.file={config}")
            wait_for(lambda: ex.get("/-/ready").status == 200, 5, "readiness")
            rss_before = _rss_kib(ex)
            stop, worst = threading.Event(), []
            watcher = threading.Thread(target=_watch_health, args=(ex, stop, worst))
            watcher.start()
            try:
                t0 = time.monotonic()
                try:
                    resp = http(
                        f"{ex.url}/probe?module=flood&target={peer.address}&debug=true",
                        timeout=PROBE_TIMEOUT + MARGIN,
                    )
                except TimeoutError:
                    resp = None
                took = time.monotonic() - t0
            finally:
                stop.set()
                watcher.join(PROBE_TIMEOUT + MARGIN + 1)
            skipped = value(ex.metrics(), "netprobe_scheduler_skipped_probes_total")
            grown_mib = (_rss_kib(ex) - rss_before) / 1024
        finally:
            procs.close()
    assert resp is not None, f"no answer within {PROBE_TIMEOUT + MARGIN:g}s"
    assert resp.status == 200
    assert took < PROBE_TIMEOUT + MARGIN, f"answer took {took:.1f}s"
    text = resp.text
    assert "probe_success 0" in text
    log = text.split("\n\n\nMetrics that would have been returned:")[0].splitlines()
    marker = [line for line in log if re.fullmatch(r"… [1-9][0-9]* more lines", line)]
    assert len(marker) == 1, log[-5:]
    assert len(log) <= MAX_LOG_LINES + 10, f"{len(log)} log lines"
    assert 'msg="Probe failed"' in log[-1], log[-5:]
    assert len(resp.body) < 2 << 20, f"debug answer of {len(resp.body)} bytes"
    assert grown_mib < 100, f"peak RSS grew {grown_mib:.0f} MiB"
    assert worst and max(worst) < 2.0, f"/-/healthy took up to {max(worst):.1f}s"
    assert skipped == 0, f"{skipped} continuous probes skipped"
