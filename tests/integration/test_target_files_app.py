"""target_files in the wired application: real reactor, real loopback sockets."""

from __future__ import annotations

import socket
from pathlib import Path

from twisted.internet import reactor, task
from twisted.trial.unittest import TestCase

from netprobe_exporter.app import App
from netprobe_exporter.metrics import TargetSeries


def _truncate(path: Path) -> None:
    with path.open("w"):
        pass  # what `> file` or open(O_TRUNC) does before the new content is written


class RewrittenInPlaceTests(TestCase):
    """The running exporter, looking at a target file while it is rewritten in place."""

    def setUp(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.addCleanup(self.listener.close)
        self.target = f"127.0.0.1:{self.listener.getsockname()[1]}"
        root = Path(self.mktemp()).resolve()
        root.mkdir()
        self.file = root / "targets.yml"
        self.config = root / "config.yml"
        # the watcher's own timer never fires here: the test makes every look itself
        self.config.write_text(
            f"target_files:\n  - files: [{root}/*.yml]\n    interval: 100ms\n"
            "    refresh_interval: 1h\n"
        )
        self.app = App(reactor, config_file=str(self.config), process_metrics=False)
        self.addCleanup(self.app.stop)

    def probes(self, target: str) -> tuple[TargetSeries, int] | None:
        for key, s in self.app.store.series.items():
            if key[0] == target:
                return s, sum(s.results.values())
        return None

    async def look(self) -> None:
        d = self.app.refresh_files()
        assert d is not None, "the watcher could not look"
        await d

    async def test_series_survive_a_truncate_and_rewrite(self) -> None:
        self.file.write_text(f"- targets: ['{self.target}']\n")
        self.app.apply(self.app.read_config())
        for _ in range(100):  # two probes at 100 ms, however busy the machine
            await task.deferLater(reactor, 0.05, lambda: None)
            seen = self.probes(self.target)
            if seen is not None and seen[1] >= 2:
                break
        before = self.probes(self.target)
        assert before is not None and before[1] >= 2, before
        series, count = before

        closed = socket.socket()
        closed.bind(("127.0.0.1", 0))
        added = f"127.0.0.1:{closed.getsockname()[1]}"
        closed.close()
        _truncate(self.file)
        for look in range(4):
            if look == 1:  # the first look saw the file empty; now the new content is in
                self.file.write_text(f"- targets: ['{self.target}', '{added}']\n")
            await self.look()
            now = self.probes(self.target)
            assert now is not None, f"the file's target was dropped at look {look}"
            assert now[0] is series and now[1] >= count, f"its series was reset at look {look}"
            count = now[1]
        assert self.probes(added) is not None, "the rewritten file was never read"
