"""The wired application in-process: real reactor, real loopback sockets, real config files."""

from __future__ import annotations

import socket
from pathlib import Path

from twisted.internet import reactor, task
from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from netprobe_exporter.app import App, self_probe_address, split_listen_address
from netprobe_exporter.config import ConfigError
from netprobe_exporter.metrics import TargetSeries


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


def test_listen_address_forms() -> None:
    assert split_listen_address(":9716") == ("", 9716)
    assert split_listen_address("127.0.0.1:0") == ("127.0.0.1", 0)
    assert split_listen_address("[::]:9716") == ("::", 9716)
    assert split_listen_address("[::1]:80") == ("::1", 80)
    assert self_probe_address("", 9716) == "127.0.0.1:9716"
    assert self_probe_address("::", 9716) == "[::1]:9716"
    assert self_probe_address("::1", 1) == "[::1]:1"
    assert self_probe_address("10.1.2.3", 1) == "10.1.2.3:1"
