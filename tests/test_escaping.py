"""Values that need escaping, wherever the exporter writes them: label values and logfmt."""

from __future__ import annotations

import subprocess
from pathlib import Path

from procutil import Processes, closed_port, require_binary
from prometheus_client.parser import text_string_to_metric_families as parse_text

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
    text = exporter.get("/metrics").text
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
