"""Values that need escaping, wherever the exporter writes them: label values and logfmt."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families as parse_text
from twisted.logger import LogLevel

from netprobe_exporter import logs
from netprobe_exporter.logs import logfmt_value
from tests.support.procutil import Processes, closed_port, require_binary, wait_for
from tests.support.servers import Conn, tcp_server

WEIRD_MODULE = 'we"ird\\mod'


def test_a_module_name_with_quote_and_backslash_keeps_metrics_parseable(
    procs: Processes, tmp_path: Path
) -> None:
    """``netprobe_targets{module}`` is escaped like every other label value: the scrape parses,
    promtool accepts it, and the name reads back as written."""
    config = tmp_path / "config.yml"
    config.write_text(
        "modules:\n"
        "  'we\"ird\\mod':\n"
        "    prober: tcp\n"
        "targets:\n"
        f"  - address: 127.0.0.1:{closed_port()}\n"
        "    module: 'we\"ird\\mod'\n"
        "    interval: 1h\n"
    )
    exporter = procs.start_exporter(f"--config.file={config}")

    # the first probe's series (it runs once the probe workers are up)
    def probed() -> str | None:
        text = exporter.get("/metrics").text
        return text if "netprobe_up{" in text else None

    text = wait_for(probed, 10, "the first probe")
    families = {f.name: f for f in parse_text(text)}
    targets = {s.labels["module"]: s.value for s in families["netprobe_targets"].samples}
    assert targets == {WEIRD_MODULE: 1.0}
    up = [s for s in families["netprobe_up"].samples if s.labels["module"] == WEIRD_MODULE]
    assert len(up) == 1
    out = subprocess.run(
        [require_binary("promtool"), "check", "metrics"],
        input=text, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr


# logfmt: the exporter's log lines and /probe's debug page share one escaper

TRICKY = 'say "hi" a=b C:\\dir\ttab\rcr\x1b[0m\u2028end'

_PAIR = re.compile(
    r'([^\s="]+)=(?:"((?:[^"\\\x00-\x1f\x7f]|\\.)*)"|([^\s="\\\x00-\x1f\x7f]*))(?: |$)'
)
_UNESCAPE = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "\\": "\\"}


def strict_logfmt(line: str) -> dict[str, str]:
    """One logfmt line, refusing raw control characters and unknown escapes."""
    out: dict[str, str] = {}
    pos = 0
    while pos < len(line):
        m = _PAIR.match(line, pos)
        assert m is not None, f"not strict logfmt at {pos}: {line!r}"
        key, quoted, bare = m.groups()
        if quoted is None:
            out[key] = bare
        else:
            out[key] = re.sub(
                r"\\(u[0-9a-f]{4}|.)",
                lambda e: chr(int(e[1][1:], 16)) if len(e[1]) == 5 else _UNESCAPE[e[1]],
                quoted,
            )
        pos = m.end()
    return out


@pytest.mark.parametrize(
    ("value", "written"),
    [
        ("plain", "plain"),
        ("127.0.0.1:80", "127.0.0.1:80"),
        (42, "42"),
        ("", '""'),
        ("two words", '"two words"'),
        ("a=b", '"a=b"'),
        ('say "hi"', '"say \\"hi\\""'),
        ("C:\\dir", '"C:\\\\dir"'),
        ("line\nbreak", '"line\\nbreak"'),
        ("tab\tcr\r", '"tab\\tcr\\r"'),
        ("\x1b[0m\x00\x7f", '"\\u001b[0m\\u0000\\u007f"'),
        ("sep\u2028", '"sep\\u2028"'),
        ("été", "été"),
    ],
)
def test_logfmt_value_edge_cases(value: object, written: str) -> None:
    assert logfmt_value(value) == written
    assert strict_logfmt(f"k={written}") == {"k": str(value)}


def test_exporter_log_line_keeps_a_tricky_value_on_one_line() -> None:
    event = {
        "log_namespace": "netprobe_exporter.test",
        "log_level": LogLevel.info,
        "log_format": "probe failed",
        "log_time": 1e9,
        "detail": TRICKY,
    }
    line = logs.format_logfmt(event)
    assert line.endswith("\n")
    assert len(line.splitlines()) == 1, line
    assert strict_logfmt(line.rstrip("\n"))["detail"] == TRICKY


def test_probe_debug_page_keeps_a_tricky_line_on_one_line(procs: Processes, tmp_path: Path) -> None:
    """A peer's line with quotes, ``=``, a backslash, a tab, a CR and an escape sequence, read by
    a ``query_response`` probe: its "Read line" entry on /probe's debug page is one line that
    reads back as sent."""

    def handle(conn: Conn) -> None:
        conn.send(TRICKY.encode() + b"\n")
        conn.drain(timeout=10.0)

    with tcp_server(handle) as peer:
        config = tmp_path / "config.yml"
        config.write_text(
            "modules:\n"
            "  lines:\n"
            "    prober: tcp\n"
            "    timeout: 2s\n"
            "    tcp: {query_response: [{expect: '^never'}]}\n"
        )
        exporter = procs.start_exporter(f"--config.file={config}")
        page = exporter.get(f"/probe?module=lines&target={peer.address}&debug=true").text
    log = page.split("\n\n\nMetrics that would have been returned:")[0].splitlines()[1:]
    entries = [strict_logfmt(line) for line in log]
    read = [e for e in entries if e.get("msg") == "Read line"]
    assert [e["line"] for e in read] == [TRICKY], log
    assert all(e["module"] == "lines" for e in entries)
