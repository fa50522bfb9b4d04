"""The status page's endpoints and /logs, served by the wired app over loopback."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote

from twisted.internet import reactor, task
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, readBody

from netprobe_exporter.app import App


def sleep(seconds: float) -> Deferred[None]:
    return task.deferLater(reactor, seconds, lambda: None)


class StatusEndpointTests(TestCase):
    def setUp(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.addCleanup(self.listener.close)
        self.open_t = f"127.0.0.1:{self.listener.getsockname()[1]}"
        closed = socket.socket()
        closed.bind(("127.0.0.1", 0))
        self.closed_t = f"127.0.0.1:{closed.getsockname()[1]}"
        closed.close()  # bound then closed: nothing listens there
        self.config = Path(self.mktemp())
        self.config.write_text(
            "targets:\n"
            f"  - {{address: '{self.open_t}', interval: 100ms, labels: {{team: db}}}}\n"
            f"  - {{address: '{self.closed_t}', interval: 100ms}}\n"
        )
        self.app = App(reactor, config_file=str(self.config), process_metrics=False)
        self.addCleanup(self.app.stop)
        self.app.listen(["127.0.0.1:0"])
        self.app.apply(self.app.read_config())

    async def get(self, path: str, method: bytes = b"GET") -> tuple[int, str]:
        port = cast(IPv4Address, self.app.ports[0].getHost()).port
        response = await Agent(reactor).request(method, f"http://127.0.0.1:{port}{path}".encode())
        return response.code, (await readBody(response)).decode()

    async def json(self, path: str) -> Any:
        code, body = await self.get(path)
        self.assertEqual(code, 200, body)
        return json.loads(body)

    async def probed(self) -> Any:
        page: Any = None
        for _ in range(100):  # both probed: 100 ms each, however busy the machine
            page = await self.json("/status.json")
            if page["summary"]["up"] == 1 and page["summary"]["down"] == 1:
                return page
            await sleep(0.05)
        self.fail(f"targets not probed: {page}")

    async def test_the_list_is_filtered_paged_and_names_the_failure(self) -> None:
        page = await self.probed()
        down, up = page["rows"]
        self.assertEqual((down["target"], down["state"]), (self.closed_t, "down"))
        self.assertEqual(down["last_result"], "refused")
        self.assertEqual(down["history"]["result"][-1], "refused")
        self.assertEqual((up["target"], up["state"], up["labels"]), (self.open_t, "up", "team=db"))
        only = await self.json("/status.json?label=team%3Ddb")
        self.assertEqual([r["target"] for r in only["rows"]], [self.open_t])
        paged = await self.json("/status.json?per_page=1&page=2")
        self.assertEqual((paged["pages"], [r["target"] for r in paged["rows"]]), (2, [self.open_t]))
        code, body = await self.get("/status.json?state=sideways")
        self.assertEqual(code, 400)
        self.assertIn("state must be one of", body)
        one = await self.json(f"/target.json?id={up['id']}")
        self.assertEqual(one["target"], self.open_t)
        self.assertEqual(
            one["probe_link"], f"probe?target={quote(self.open_t)}&module=tcp_connect&debug=true"
        )
        for path in ("/", "/target"):
            code, body = await self.get(path)
            self.assertEqual(code, 200)
            self.assertIn("<script>", body)

    async def test_a_rejected_reload_shows_a_banner_with_its_error(self) -> None:
        await self.probed()
        self.config.write_text("targets:\n  - {address: '127.0.0.1:1', interval: soon}\n")
        code, body = await self.get("/-/reload", b"POST")
        self.assertEqual(code, 400, body)
        page = await self.json("/status.json")
        (banner,) = page["banners"]
        self.assertEqual(banner["kind"], "reload")
        self.assertTrue(any("interval" in e for e in banner["errors"]), banner)
        self.assertFalse(page["health"]["reload_successful"])
        self.config.write_text(f"targets:\n  - {{address: '{self.open_t}', interval: 100ms}}\n")
        code, body = await self.get("/-/reload", b"POST")
        self.assertEqual(code, 200, body)
        self.assertEqual((await self.json("/status.json"))["banners"], [])

    async def test_logs_by_id_and_target_as_blackbox(self) -> None:
        for target in (self.closed_t, self.open_t):
            code, _ = await self.get(f"/probe?module=tcp_connect&target={target}")
            self.assertEqual(code, 200)
        page = await self.json("/status.json")
        newest, oldest = page["probes"]
        self.assertEqual((newest["target"], newest["success"]), (self.open_t, True))
        self.assertEqual((oldest["target"], oldest["result"]), (self.closed_t, "refused"))
        code, log = await self.get(f"/logs?id={oldest['id']}")
        self.assertEqual(code, 200)
        self.assertTrue(log.startswith("Logs for the probe:\n"), log)
        self.assertIn(f"target={self.closed_t}", log)
        self.assertIn("Module configuration:", log)
        code, log = await self.get(f"/logs?target={self.open_t}&module=tcp_connect")
        self.assertEqual(code, 200)
        self.assertIn(f"target={self.open_t}", log)
        self.assertIn("probe_success 1", log)
        for path, want, wording in (
            ("/logs", 400, "Probe id or target must be defined as http query parameters"),
            (f"/logs?id=0&target={self.open_t}", 400, "can't be defined at the same time"),
            ("/logs?id=0&module=tcp_connect", 400, "only works in conjunction with target"),
            ("/logs?id=999", 404, "Probe id not found"),
            ("/logs?target=127.0.0.1:2", 404, "Probe target not found"),
            (f"/logs?target={self.open_t}&module=http_2xx", 404, "Probe target not found"),
        ):
            code, body = await self.get(path)
            self.assertEqual((code, wording in body), (want, True), (path, body))

    async def test_the_history_limit_keeps_failures_that_age_out(self) -> None:
        self.app.web.history.limit = 1
        await self.get(f"/probe?module=tcp_connect&target={self.closed_t}")  # id 0, a failure
        await self.get(f"/probe?module=tcp_connect&target={self.open_t}")  # id 1
        await self.get(f"/probe?module=tcp_connect&target={self.open_t}")  # id 2
        page = await self.json("/status.json")
        self.assertEqual([p["id"] for p in page["probes"]], [2, 0])
        self.assertEqual((await self.get("/logs?id=1"))[0], 404)
        self.assertEqual((await self.get("/logs?id=0"))[0], 200)


class TargetFileBannerTests(TestCase):
    async def test_a_refused_target_file_shows_a_banner_until_it_is_fixed(self) -> None:
        root = Path(self.mktemp()).resolve()
        root.mkdir()
        targets = root / "targets.yml"

        def write(text: str, ago: float) -> None:
            """Write the file as changed ``ago`` seconds back: settled, so read at the look."""
            targets.write_text(text)
            then = time.time() - ago
            os.utime(targets, (then, then))

        write("- targets: ['127.0.0.1:1']\n", 30)
        config = root.with_name("config.yml")  # not matched by the glob
        # the watcher's own timer never fires here: the test makes every look itself
        config.write_text(
            f"target_files:\n  - files: [{root}/*.yml]\n    interval: 1h\n"
            "    refresh_interval: 1h\n"
        )
        app = App(reactor, config_file=str(config), process_metrics=False)
        self.addCleanup(app.stop)
        app.listen(["127.0.0.1:0"])
        app.apply(app.read_config())
        port = cast(IPv4Address, app.ports[0].getHost()).port

        async def page() -> Any:
            response = await Agent(reactor).request(
                b"GET", f"http://127.0.0.1:{port}/status.json".encode()
            )
            return json.loads(await readBody(response))

        self.assertEqual((await page())["banners"], [])
        write("- targets: ['127.0.0.1:1']\n  labels: [not, a, map]\n", 20)
        await app.refresh_files()
        (banner,) = (await page())["banners"]
        self.assertEqual(banner["kind"], "target_files")
        self.assertTrue(any("targets.yml" in e for e in banner["errors"]), banner)
        write("- targets: ['127.0.0.1:2']\n", 10)
        await app.refresh_files()
        self.assertEqual((await page())["banners"], [])
