"""The wired application in-process: real reactor, real loopback sockets, real config files."""

from __future__ import annotations

import importlib
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from twisted.internet import reactor, task
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.logger import ILogObserver, LogLevel, globalLogPublisher
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, readBody

from netprobe_exporter.app import App
from netprobe_exporter.config import ConfigError, Target
from netprobe_exporter.metrics import TargetSeries
from netprobe_exporter.scheduler import stable_hash
from tests.support.procutil import parse_samples, value


def sleep(seconds: float) -> Deferred[None]:
    return task.deferLater(reactor, seconds, lambda: None)


class AppTests(TestCase):
    def setUp(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.addCleanup(self.listener.close)
        self.open_port = self.listener.getsockname()[1]
        closed = socket.socket()
        closed.bind(("127.0.0.1", 0))
        self.closed_port = closed.getsockname()[1]
        closed.close()  # bound then closed: nothing listens there
        self.config = Path(self.mktemp())
        self.app = App(reactor, config_file=str(self.config), process_metrics=False)
        self.addCleanup(self.app.stop)

    def write(self, *addresses: str, interval: str = "100ms") -> None:
        lines = ["targets:"] + [f"  - address: {a}\n    interval: {interval}" for a in addresses]
        self.config.write_text("\n".join(lines) + "\n")

    def series(self, address: str) -> TargetSeries:
        for key, s in self.app.store.series.items():
            if key[0] == address:
                return s
        raise KeyError(address)

    async def test_reload_adds_removes_and_keeps_counters(self) -> None:
        open_t = f"127.0.0.1:{self.open_port}"
        closed_t = f"127.0.0.1:{self.closed_port}"
        self.write(open_t, closed_t)
        self.app.apply(self.app.read_config())
        for _ in range(100):  # three probes of each at 100 ms, however busy the machine
            await sleep(0.05)
            if (
                self.series(open_t).results["success"] >= 3
                and self.series(closed_t).results["refused"] >= 3
            ):
                break
        kept = self.series(open_t)
        before = kept.results["success"]
        self.assertGreaterEqual(before, 3)
        self.assertGreaterEqual(self.series(closed_t).results["refused"], 3)
        self.assertEqual(self.app.store.stats.reload_successful, 1.0)

        self.write(open_t, "localhost:1")
        await self.app.reload()
        self.assertIs(self.series(open_t), kept)
        self.assertGreaterEqual(kept.results["success"], before)
        with self.assertRaises(KeyError):
            self.series(closed_t)
        await sleep(0.25)
        self.assertGreaterEqual(self.series("localhost:1").results["refused"], 1)

    async def test_invalid_reload_keeps_the_running_config(self) -> None:
        open_t = f"127.0.0.1:{self.open_port}"
        self.write(open_t)
        self.app.apply(self.app.read_config())
        running = self.app.config
        for bad, fragment in [
            ("targets: [\n", "invalid YAML"),
            ("targets:\n  - address: a:1\n    colour: red\n", "targets[0].colour: unknown key"),
            ("targets:\n  - address: a:1\n    interval: 5x\n", '"5x" is not a duration'),
            ("targets:\n  - address: a:1\n  - address: a:1\n", "duplicate target"),
        ]:
            self.config.write_text(bad)
            with self.assertRaises(ConfigError) as info:
                await self.app.reload()
            self.assertIn(fragment, str(info.exception))
            self.assertIn(str(self.config), str(info.exception))
            self.assertIs(self.app.config, running)
            self.assertEqual(self.app.store.stats.reload_successful, 0.0)
        count = self.series(open_t).results["success"]
        await sleep(0.3)
        self.assertGreater(self.series(open_t).results["success"], count)
        self.assertEqual([t.address for t in self.app.scheduler.targets], [open_t])
        self.write(open_t)
        await self.app.reload()
        self.assertEqual(self.app.store.stats.reload_successful, 1.0)

    async def test_ready_only_once_config_applied(self) -> None:
        self.write(f"127.0.0.1:{self.open_port}")
        self.assertFalse(self.app.is_ready())
        self.app.apply(self.app.read_config())
        self.assertTrue(self.app.is_ready())
        await self.app.stop()
        self.assertFalse(self.app.is_ready())


class FailedReloadTests(TestCase):
    """A reload that fails after validation, whatever the cause, changes nothing running."""

    def setUp(self) -> None:
        self.config = Path(self.mktemp())
        self.app = App(reactor, config_file=str(self.config), process_metrics=False)
        self.addCleanup(self.app.stop)
        self.events: list[dict[str, Any]] = []
        observer = cast(ILogObserver, self.events.append)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)

    async def request(self, method: bytes, path: str) -> tuple[int, str]:
        port = cast(IPv4Address, self.app.ports[0].getHost()).port
        url = f"http://127.0.0.1:{port}{path}".encode()
        response = await Agent(reactor).request(method, url)
        return response.code, (await readBody(response)).decode()

    async def check_fault(self, patch_target: str, fault: Callable[..., Any]) -> None:
        denied = "127.0.0.1:9"
        self.config.write_text(
            "targets:\n  - address: 127.0.0.1:9\n    interval: 1h\n"
            "probe_policy:\n  deny: [127.0.0.0/8]\n"
        )
        self.app.listen(["127.0.0.1:0"])
        self.app.apply(self.app.read_config())
        running = self.app.config
        code, body = await self.request(b"GET", f"/probe?module=tcp_connect&target={denied}")
        self.assertEqual(code, 403, body)
        # the new config drops probe_policy and adds a target whose setup fails
        self.config.write_text(
            "targets:\n  - address: 127.0.0.1:9\n    interval: 1h\n"
            "  - address: 127.0.0.1:10\n    interval: 1h\n"
        )
        module, name = patch_target.split(":")
        self.patch(importlib.import_module(module), name, fault)
        code, body = await self.request(b"POST", "/-/reload")
        self.assertEqual(code, 500, body)
        self.assertIn("MemoryError", body)
        self.assertTrue(self.app.config is running, "part of the new config was swapped in")
        self.assertEqual([t.address for t in self.app.scheduler.targets], [denied])
        self.assertEqual([k[0] for k in self.app.store.series], [denied])
        code, body = await self.request(b"GET", f"/probe?module=tcp_connect&target={denied}")
        self.assertEqual(code, 403, body)  # the old probe_policy is still whole
        code, body = await self.request(b"GET", "/metrics")
        self.assertEqual(value(parse_samples(body), "netprobe_config_last_reload_successful"), 0)
        logged = [e for e in self.events if e.get("log_level") == LogLevel.error]
        self.assertTrue(
            any("MemoryError" in str(e.get("error")) for e in logged),
            [e.get("log_format") for e in self.events],
        )

    async def test_series_setup_failure(self) -> None:
        real = TargetSeries

        def series(target: Target) -> TargetSeries:
            if target.address == "127.0.0.1:10":
                raise MemoryError
            return real(target)

        await self.check_fault("netprobe_exporter.metrics:TargetSeries", series)

    async def test_schedule_setup_failure(self) -> None:
        real = stable_hash

        def failing(target: Target) -> int:
            if target.address == "127.0.0.1:10":
                raise MemoryError("cannot allocate the schedule")
            return real(target)

        await self.check_fault("netprobe_exporter.scheduler:stable_hash", failing)
