"""every_address results that come back from a probe worker: each address's series is shown.

The pool replays a worker's rows into the target's series itself (not through
``MetricsStore.observe``), so this drives a real ``WorkerPool`` with fake worker processes.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock

from netprobe_exporter import exposition
from netprobe_exporter.config import Config
from netprobe_exporter.configmanager import ConfigChange
from netprobe_exporter.frames import MAIN_FRAME_LIMIT, FrameDecoder, encode
from netprobe_exporter.metrics import MetricsStore
from netprobe_exporter.model import ProbeResult, Target
from netprobe_exporter.workerpool import WorkerLink, WorkerPool
from netprobe_exporter.workerproto import encode_result
from tests.support.metrics import find, parse_samples, value

TARGET = Target("svc.example.test:80", "tcp_connect", 1.0)


class _Process:
    def __init__(self) -> None:
        self.pid = 4242
        self.decoder = FrameDecoder(MAIN_FRAME_LIMIT)
        self.received: list[list[Any]] = []

    def write(self, data: bytes) -> None:
        self.received.extend(self.decoder.feed(data))

    def signalProcess(self, name: str) -> None:
        pass

    def closeStdin(self) -> None:
        pass


def _result() -> ProbeResult:
    whole = ProbeResult(False, "timeout", 1.0, detail="1 of 2 addresses failed")
    whole.addresses = [
        ("192.0.2.1", ProbeResult(True, "success", 0.001, connect_duration=0.0005, ip="192.0.2.1")),
        ("2001:db8::1", ProbeResult(False, "timeout", 1.0, ip="2001:db8::1")),
    ]
    return whole


def test_addresses_series_of_a_worker_result_are_rendered() -> None:
    links: list[tuple[WorkerLink, _Process]] = []

    def spawn(link: WorkerLink) -> Any:
        links.append((link, _Process()))
        return links[-1][1]

    store = MetricsStore()
    pool = WorkerPool(Clock(), spawn, store, lambda: 1_700_000_000.0, 1)
    pool.startService()
    pool.prepare(ConfigChange(Config(), [TARGET])).commit()
    link, process = links[0]
    link.childDataReceived(1, encode(["h", 0]))
    [rows] = [m[1] for m in process.received if m[0] == "targets"]
    [(target_id, *_)] = rows
    link.childDataReceived(1, encode(["b", [encode_result(target_id, _result(), {}, {})],
                                      [0.001], 1, 0]))  # fmt: skip
    samples = parse_samples("".join(exposition.render(store, exposition.TEXT, None)))
    t = TARGET.address
    assert value(samples, "netprobe_target_addresses", target=t, family="ip4") == 1.0
    assert value(samples, "netprobe_up", target=t, ip="192.0.2.1") == 1.0
    assert value(samples, "netprobe_up", target=t, ip="2001:db8::1") == 0.0
    assert len(find(samples, "netprobe_up", target=t)) == 3
    pool.stopService()
