"""The status page of a running exporter, in a real headless Chromium.

Real loopback targets: one that answers (closed mid-test, so it turns red without a reload),
one refused, one that never answers HTTP (a timeout), and a /probe request for the
"recent /probe" table.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from tests.support.browser import chromium, console_errors
from tests.support.procutil import Exporter, Processes, closed_port, loopback_listener, wait_for

#: set to a directory to keep the screenshots (the README's are made this way)
SCREENSHOTS = os.environ.get("NETPROBE_SCREENSHOTS")


def _config(path: Path, up: int, closed: int, silent: int) -> Path:
    path.write_text(
        "modules:\n"
        "  http_quick: {prober: http, timeout: 500ms}\n"
        "targets:\n"
        f"  - {{address: '127.0.0.1:{up}', interval: 200ms, labels: {{team: db}}}}\n"
        f"  - {{address: '127.0.0.1:{closed}', interval: 200ms, labels: {{team: web}}}}\n"
        f"  - {{address: 'http://127.0.0.1:{silent}/health', module: http_quick,"
        " interval: 1s, labels: {team: web}}\n"
    )
    return path


def _status(ex: Exporter, query: str = "") -> Any:
    reply = ex.get("/status.json" + query)
    assert reply.status == 200, reply
    return json.loads(reply.text)


def _rows(driver: Any) -> list[tuple[str, str]]:
    """(target, state) of every row the page shows now."""
    found: list[tuple[str, str]] = driver.execute_script(
        "return Array.from(document.querySelectorAll('#rows tr[data-id]')).map("
        "(r) => [r.cells[0].textContent, r.dataset.state]);"
    )
    return [tuple(r) for r in found]  # type: ignore[misc]


def _refreshes(driver: Any) -> int:
    return int(driver.execute_script("return Number(document.body.dataset.refreshes || 0);"))


def _keep(driver: Any, name: str, tmp_path: Path) -> None:
    path = tmp_path / name
    driver.save_screenshot(str(path))
    assert path.stat().st_size > 10_000  # a drawn page, not a blank one
    if SCREENSHOTS:
        shutil.copy(path, Path(SCREENSHOTS) / name)


def test_the_json_is_filtered_and_bad_queries_are_named(
    procs: Processes, tmp_path: Path, listener: int
) -> None:
    closed = closed_port()
    config = tmp_path / "c.yml"
    config.write_text(
        "targets:\n"
        f"  - {{address: '127.0.0.1:{listener}', interval: 200ms}}\n"
        f"  - {{address: '127.0.0.1:{closed}', interval: 200ms}}\n"
    )
    ex = procs.start_exporter(f"--config.file={config}")

    def both() -> Any:
        page = _status(ex)
        return page if page["summary"]["up"] == 1 and page["summary"]["down"] == 1 else None

    page = wait_for(both, 10, "both targets probed")
    assert [r["target"] for r in page["rows"]] == [f"127.0.0.1:{closed}", f"127.0.0.1:{listener}"]
    assert page["rows"][0]["last_result"] == "refused"
    down = _status(ex, "?state=down")
    assert [r["target"] for r in down["rows"]] == [f"127.0.0.1:{closed}"]
    bad = ex.get("/status.json?state=sideways")
    assert bad.status == 400 and "state must be one of" in bad.text


def test_the_page_in_chromium(procs: Processes, tmp_path: Path, listener: int) -> None:
    closed, stack = closed_port(), contextlib.ExitStack()
    up = stack.enter_context(loopback_listener())
    _config(tmp_path / "c.yml", up, closed, listener)  # the exporter runs in tmp_path
    ex = procs.start_exporter("--config.file=c.yml", "--history.limit=10")
    probe = ex.get(f"/probe?module=tcp_connect&target=127.0.0.1:{closed}")
    assert probe.status == 200
    wait_for(
        lambda: _status(ex)["summary"] == {"targets": 3, "down": 2, "flapping": 0, "pending": 0,
                                           "up": 1},
        15, "the three targets probed",
    )  # fmt: skip
    up_t = f"127.0.0.1:{up}"
    with stack, chromium() as driver:
        driver.get(ex.url + "/?refresh=1")
        wait_for(lambda: len(_rows(driver)) == 3, 15, "the list drawn")
        assert _rows(driver)[-1] == (up_t, "up")  # down ones first
        kinds = driver.execute_script(
            "return Array.from(document.querySelectorAll('#rows tr')).map("
            "(r) => r.cells[5].textContent);"
        )
        assert sorted(kinds) == ["refused", "success", "timeout"]  # each kind named
        tip = driver.execute_script("return document.querySelector('#rows .cell').title;")
        assert " · " in tip and "ms" in tip  # time · result · latency
        assert driver.execute_script("return document.querySelectorAll('svg.spark').length;") == 3
        probes = driver.find_element("id", "probes").text
        assert f"127.0.0.1:{closed}" in probes and "refused" in probes
        _keep(driver, "status-list.png", tmp_path)

        # a filter survives the auto-refresh, in the field and in the rows
        field = driver.find_element("id", "q")
        field.send_keys(str(up))
        wait_for(lambda: _rows(driver) == [(up_t, "up")], 10, "the list filtered")
        driver.set_window_size(1500, 300)  # short enough to scroll
        driver.execute_script("window.notReloaded = true; window.scrollTo(0, 120);")
        scrolled = driver.execute_script("return window.scrollY;")
        seen = _refreshes(driver)
        wait_for(lambda: _refreshes(driver) >= seen + 2, 15, "two refreshes")
        assert field.get_attribute("value") == str(up)
        assert _rows(driver) == [(up_t, "up")]
        assert f"q={up}" in driver.current_url
        assert scrolled > 0 and driver.execute_script("return window.scrollY;") == scrolled
        driver.set_window_size(1500, 900)

        # the target goes away: its row turns red with no reload of the page
        stack.close()
        wait_for(lambda: _rows(driver) == [(up_t, "down")], 15, "the closed target down")
        assert driver.execute_script("return window.notReloaded === true;")
        colour = driver.execute_script(
            "return getComputedStyle(document.querySelector('#rows .st')).backgroundColor;"
        )
        assert colour == "rgb(198, 40, 40)"  # the page's red
        assert console_errors(driver) == []

        # its own page: the latency chart is drawn from its kept history
        driver.find_element("css selector", "#rows a").click()
        wait_for(
            lambda: driver.execute_script("return document.querySelectorAll('#chart circle.pt')"
                                          ".length;") >= 5,
            15, "the chart's points",
        )  # fmt: skip
        points = driver.execute_script(
            "return document.querySelector('#chart polyline').getAttribute('points');"
        )
        assert len(points.split()) >= 5
        kinds = set(driver.execute_script(
            "return Array.from(document.querySelectorAll('#chart circle.pt')).map("
            "(c) => c.getAttribute('class'));"
        ))  # fmt: skip
        assert {"pt k-success", "pt k-refused"} <= kinds
        link = driver.find_element("id", "probelink").get_attribute("href")
        assert link.endswith(f"probe?target=127.0.0.1%3A{up}&module=tcp_connect&debug=true")
        time.sleep(1.5)  # one refresh of the target page too
        _keep(driver, "status-target.png", tmp_path)
        assert console_errors(driver) == []
