"""The status page served by the running exporter."""

from __future__ import annotations

from pathlib import Path

from tests.support.procutil import Processes, closed_port, wait_for


def test_the_page_is_served_and_filtered(procs: Processes, tmp_path: Path, listener: int) -> None:
    closed = closed_port()
    config = tmp_path / "c.yml"
    config.write_text(
        "targets:\n"
        f"  - {{address: '127.0.0.1:{listener}', interval: 200ms}}\n"
        f"  - {{address: '127.0.0.1:{closed}', interval: 200ms}}\n"
    )
    ex = procs.start_exporter(f"--config.file={config}")

    def page() -> str | None:
        reply = ex.get("/")
        assert reply.status == 200
        return reply.text if "1 up, 1 down" in reply.text else None

    text = wait_for(page, 10, "both targets probed")
    assert text.index(f"127.0.0.1:{closed}") < text.index(f"127.0.0.1:{listener}")
    assert "connection refused" in text.lower() or "refused" in text
    down = ex.get("/?state=down").text
    assert f"127.0.0.1:{closed}" in down and f"127.0.0.1:{listener}" not in down
    bad = ex.get("/?state=sideways")
    assert bad.status == 400 and "state must be one of" in bad.text
