"""The status page at ``/``: every target, its state, last latency and recent history."""

from __future__ import annotations

from netprobe_exporter import status
from netprobe_exporter.config import Target
from netprobe_exporter.metrics import HISTORY, MetricsStore
from netprobe_exporter.probes import ProbeResult


def _store() -> tuple[MetricsStore, list[Target]]:
    targets = [
        Target("b.example:80", "tcp_connect", 1.0, (("team", "<script>x</script>"),)),
        Target("a.example:80", "tcp_connect", 1.0),
        Target("c.example:80", "tcp_connect", 1.0),
    ]
    store = MetricsStore()
    store.sync(targets)
    return store, targets


def test_rows_are_ordered_down_first_escaped_and_carry_recent_history() -> None:
    store, (b, a, _c) = _store()
    for i in range(HISTORY + 5):
        store.observe(b, ProbeResult(True, "success", 0.002, connect_duration=0.0015), 100.0 + i)
    store.observe(a, ProbeResult(True, "success", 0.001, connect_duration=0.001), 100.0)
    store.observe(a, ProbeResult(False, "refused", 0.0004, detail="connection refused"), 101.0)
    page = "".join(status.render(store, "c.yml", now=141.0))
    rows = [line for line in page.splitlines() if line.startswith("<tr><td")]
    assert [r.split("</td>", 1)[0].rsplit(">", 1)[1] for r in rows] == [
        "a.example:80", "c.example:80", "b.example:80",
    ]  # fmt: skip
    down, pending, up = rows
    assert 'class="down">down' in down and "refused<br><small>connection refused" in down
    assert "0.40 ms" in down and "50%" in down and "40.0 s ago" in down
    assert 'class="pending">pending' in pending and "never" in pending
    assert f'<span class="s">{"▮" * HISTORY}</span>' in up and "1.50 ms" in up and "100%" in up
    assert 'title="probe time min 2.00 / avg 2.00 / max 2.00 ms"' in up
    assert '<span class="s">▮</span><span class="f">▮</span></td>' in down
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "3 targets: 1 up, 1 down, 1 pending" in page
    only_down = "".join(status.render(store, "c.yml", "down", now=141.0))
    assert "a.example:80" in only_down and "b.example:80" not in only_down
