"""The worker pool's bookkeeping on a Clock with fake worker processes: no process is started."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet import defer, error
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from netprobe_exporter.config import Config
from netprobe_exporter.configmanager import ConfigChange
from netprobe_exporter.frames import MAIN_FRAME_LIMIT, FrameDecoder, FrameError, encode
from netprobe_exporter.metrics import MetricsStore, series_key
from netprobe_exporter.model import Target
from netprobe_exporter.probe_endpoint import Outcome, ProbeRequest, WorkerUnavailable
from netprobe_exporter.workerpool import (
    HANG_TIMEOUT,
    START_TIMEOUT,
    WorkerLink,
    WorkerPool,
    worker_of,
)
from netprobe_exporter.workerproto import decode_outcome, encode_outcome

WALL = 1_700_000_000.0


class FakeProcess:
    """What the pool uses of an ``IProcessTransport``: writes, signals, stdin closing."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.decoder = FrameDecoder(MAIN_FRAME_LIMIT)
        self.received: list[list[Any]] = []
        self.signals: list[str] = []
        self.stdin_closed = False

    def write(self, data: bytes) -> None:
        self.received.extend(self.decoder.feed(data))

    def signalProcess(self, name: str) -> None:
        self.signals.append(name)

    def closeStdin(self) -> None:
        self.stdin_closed = True


class Spawner:
    def __init__(self) -> None:
        self.started: list[tuple[WorkerLink, FakeProcess]] = []

    def __call__(self, link: WorkerLink) -> Any:
        process = FakeProcess(1000 + len(self.started))
        self.started.append((link, process))
        return process

    def live(self, index: int) -> tuple[WorkerLink, FakeProcess]:
        return [s for s in self.started if s[0].index == index and not s[0].ended][-1]


def died(link: WorkerLink, signal: int = 9) -> None:
    link.processEnded(Failure(error.ProcessTerminated(signal=signal)))


TARGETS = [Target(f"127.0.0.1:{p}", "tcp_connect", 1.0) for p in range(1000, 1020)]


@pytest.fixture
def pool() -> tuple[WorkerPool, Spawner, Clock, MetricsStore]:
    clock, spawner, store = Clock(), Spawner(), MetricsStore()
    p = WorkerPool(clock, spawner, store, lambda: WALL, 2)
    p.startService()
    p.prepare(ConfigChange(Config(), TARGETS)).commit()
    assert not p.probing, "not ready before every worker has answered"
    spawner.started[0][0].childDataReceived(1, encode(["h", 0]))
    assert not p.probing
    spawner.started[1][0].childDataReceived(1, encode(["h", 0]))
    assert p.probing
    return p, spawner, clock, store


def targets_sent(process: FakeProcess) -> list[list[Any]]:
    return [m[1] for m in process.received if m[0] == "targets"][-1]


def test_each_worker_gets_its_share_of_the_targets(pool: Any) -> None:
    _p, spawner, _, _ = pool
    shares = [targets_sent(spawner.live(i)[1]) for i in range(2)]
    assert sorted(a for rows in shares for _, a, _, _ in rows) == sorted(t.address for t in TARGETS)
    for i, rows in enumerate(shares):
        assert rows, "both workers have targets"
        assert all(worker_of(Target(a, m, iv), 2) == i for _, a, m, iv in rows)
    assert spawner.live(0)[1].received[0][0] == "config"


def batch_for(process: FakeProcess, success: bool = True) -> bytes:
    rows = [[tid, int(success), 0 if success else 2, 0.001, 0.0005, "127.0.0.1", "", 0]
            for tid, _, _, _ in targets_sent(process)]  # fmt: skip
    return encode(["b", rows, [0.002] * len(rows), 1, 0])


def probes(store: MetricsStore) -> int:
    return sum(sum(s.results.values()) for s in store.series.values())


def test_a_dead_worker_is_restarted_with_its_targets_and_keeps_its_series(pool: Any) -> None:
    p, spawner, clock, store = pool
    link, process = spawner.live(0)
    link.childDataReceived(1, batch_for(process))
    before = probes(store)
    assert before == len(targets_sent(process))
    died(link)
    assert store.stats.worker_restarts == 1
    assert p.probing, "the exporter stays ready while a worker restarts"
    clock.advance(0.1)
    new_link, new_process = spawner.live(0)
    assert new_link is not link
    assert [m[0] for m in new_process.received] == ["config", "targets"]
    assert targets_sent(new_process) == targets_sent(process)
    new_link.childDataReceived(1, batch_for(new_process))
    assert probes(store) == 2 * before, "the counters go on from where they were"


def test_restarts_back_off_but_stay_under_two_seconds(pool: Any) -> None:
    _p, spawner, clock, store = pool
    for n in range(10):
        died(spawner.live(1)[0])
        clock.advance(1.0)
        assert spawner.live(1)[0].ended is False, f"restart {n + 1} waited over a second"
    assert store.stats.worker_restarts == 10


def test_a_hung_worker_is_killed_and_replaced(pool: Any) -> None:
    _p, spawner, clock, store = pool
    link0, process0 = spawner.live(0)
    link1, process1 = spawner.live(1)
    link0.childDataReceived(1, encode(["h", 0]))  # both up
    for _ in range(int(HANG_TIMEOUT * 2) + 4):
        clock.advance(0.5)
        link1.childDataReceived(1, encode(["h", 0]))  # worker 1 heartbeats, worker 0 is silent
    assert process0.signals == ["KILL"]
    assert process1.signals == []
    died(link0)
    clock.advance(0.1)
    assert spawner.live(0)[0] is not link0
    assert store.stats.worker_restarts == 1


def test_a_starting_worker_has_longer_than_the_hang_timeout(pool: Any) -> None:
    _p, spawner, clock, _ = pool
    died(spawner.live(0)[0])
    clock.advance(0.1)
    (_, fresh), (link1, _) = spawner.live(0), spawner.live(1)
    for _ in range(int(HANG_TIMEOUT * 2) + 4):
        clock.advance(0.5)
        link1.childDataReceived(1, encode(["h", 0]))
    assert fresh.signals == [], "slow imports are not a hang"
    clock.advance(START_TIMEOUT)
    assert fresh.signals == ["KILL"], "but a worker that never answers is"


@pytest.mark.parametrize(
    "frame",
    [
        b"\x00\x00\x00\x05hello",
        b"\xff\xff\xff\xff",
        encode(["b", [["x"]], [], 0, 0]),
        encode(["b", [[10**6, 1, 0, "slow", None, None, "", 0]], [], 0, 0]),
        encode(["zz"]),
        encode(["l", "loud", "m", {}]),
        encode(["h", 0, [1, 2]]),
        encode(["h", 0, [1, -2, 3]]),
        encode(["h", 0, "many"]),
    ],
)
def test_a_bad_frame_replaces_the_worker_not_the_main_process(pool: Any, frame: bytes) -> None:
    _p, spawner, clock, store = pool
    link, process = spawner.live(0)
    link.childDataReceived(1, frame)
    assert process.signals == ["KILL"]
    link.childDataReceived(1, batch_for(process))  # nothing more is read from it
    assert probes(store) == 0
    died(link)
    clock.advance(0.1)
    assert spawner.live(0)[0] is not link


def test_a_reload_reaches_running_workers_and_keeps_ids(pool: Any) -> None:
    p, spawner, _clock, store = pool
    link, process = spawner.live(0)
    link.childDataReceived(1, batch_for(process))
    first = {a: tid for tid, a, _, _ in targets_sent(process)}
    kept, gone = TARGETS[:15], TARGETS[15:]
    added = [Target(f"127.0.0.1:{p}", "tcp_connect", 1.0) for p in range(2000, 2005)]
    p.prepare(ConfigChange(Config(), kept + added)).commit()
    assert len(spawner.started) == 2, "no worker was restarted"
    now = {a: tid for tid, a, _, _ in targets_sent(process)}
    assert all(now[a] == tid for a, tid in first.items() if a in now)
    assert not any(t.address in now for t in gone)
    for t in kept:
        series = store.series[series_key(t)]
        assert series.observed == (1 if t.address in first else 0)


def test_stop_closes_stdin_then_kills_what_is_left(pool: Any) -> None:
    p, spawner, clock, _ = pool
    stopped = p.stopService()
    done: list[object] = []
    stopped.addCallback(done.append)
    (link0, process0), (link1, process1) = spawner.live(0), spawner.live(1)
    assert process0.stdin_closed and process0.signals == ["TERM"]
    died(link0, signal=15)
    clock.advance(1.0)
    assert process1.signals == ["TERM", "KILL"]
    assert not done
    died(link1)
    assert done == [None]
    clock.advance(5)
    assert len(spawner.started) == 2, "nothing is restarted once stopping"


def test_worker_logs_and_stderr_are_logged_with_the_worker(pool: Any) -> None:
    from twisted.logger import globalLogPublisher

    seen: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(seen.append)  # type: ignore[arg-type]
    try:
        _p, spawner, _, _ = pool
        link, _ = spawner.live(1)
        link.childDataReceived(1, encode(["l", "warn", "probe failed", {"target": "x"}]))
        link.childDataReceived(2, b"Traceback (most\nrecent call")
    finally:
        globalLogPublisher.removeObserver(seen.append)  # type: ignore[arg-type]
    ours = [(e["log_format"], e.get("target"), e.get("line")) for e in seen if e.get("worker") == 1]
    assert ("probe failed", "x", None) in ours
    assert ("worker output", None, "Traceback (most") in ours


def probe_request() -> ProbeRequest:
    return ProbeRequest("tcp_connect", "127.0.0.1:9", "", 5.0, False, WALL)


def test_a_probe_request_goes_to_the_least_busy_worker_and_back(pool: Any) -> None:
    p, spawner, _, _ = pool
    first = p.probe(probe_request())
    second = p.probe(probe_request())
    sent = [(i, m) for i in range(2) for m in spawner.live(i)[1].received if m[0] == "probe"]
    assert sorted(i for i, _ in sent) == [0, 1], "one request each"
    got: list[Outcome] = []
    first.addCallback(got.append)
    second.addCallback(got.append)
    note = (1.0, "info", "m", {"k": 1})
    for i, m in sent:
        answer = Outcome("metrics", f"body {i}\n", True, "success", 0.25, "", (note,))
        spawner.live(i)[0].childDataReceived(1, encode(encode_outcome(m[1], answer)))
    assert sorted((o.kind, o.body) for o in got) == [
        ("metrics", "body 0\n"),
        ("metrics", "body 1\n"),
    ]
    assert all(o.success and o.duration == 0.25 and o.log == (note,) for o in got)


def test_a_probe_answer_with_a_bad_value_is_a_bad_frame() -> None:
    good = ["p", 7, "metrics", "body\n", 1, "success", 0.1, "", [[1.0, "info", "m", {}]], 0, 0, 3]
    assert decode_outcome(good)[1].log == ((1.0, "info", "m", {}),)
    for index, bad in ((6, -1.0), (4, 2), (8, [["x"]]), (8, [[1.0, "info", "m", {"k": [1]}]]),
                       (11, -3)):  # fmt: skip
        frame = list(good)
        frame[index] = bad
        with pytest.raises(FrameError):
            decode_outcome(frame)
    with pytest.raises(FrameError):
        decode_outcome(good[:5])


def test_a_probe_whose_worker_exits_or_cannot_is_unavailable(pool: Any) -> None:
    p, spawner, _, _ = pool
    failures: list[Failure] = []
    for _ in range(2):
        p.probe(probe_request()).addErrback(failures.append)
    link0, process0 = spawner.live(0)
    (request,) = [m for m in process0.received if m[0] == "probe"]
    link0.childDataReceived(1, encode(["p", request[1], "unavailable", ""]))
    died(spawner.live(1)[0])
    assert [f.check(WorkerUnavailable) for f in failures] == [WorkerUnavailable] * 2


def test_a_cancelled_probe_is_cancelled_in_the_worker(pool: Any) -> None:
    p, spawner, _, _ = pool
    d = p.probe(probe_request())
    d.addErrback(lambda f: f.trap(defer.CancelledError))
    d.cancel()
    sent = [m for i in range(2) for m in spawner.live(i)[1].received if m[0] in ("probe", "cancel")]
    assert [m[0] for m in sent] == ["probe", "cancel"] and sent[0][1] == sent[1][1]


def test_no_worker_up_means_probing_in_the_main_process(pool: Any) -> None:
    p, spawner, _, _ = pool
    died(spawner.live(0)[0])
    died(spawner.live(1)[0])
    assert p.probe(probe_request()) is None


def test_heartbeats_add_up_the_workers_dns_cache_counts(pool: Any) -> None:
    from netprobe_exporter import exposition
    from tests.support.metrics import parse_samples, value

    _p, spawner, _, store = pool
    spawner.live(0)[0].childDataReceived(1, encode(["h", 0, [10, 2, 2]]))
    spawner.live(1)[0].childDataReceived(1, encode(["h", 0, [5, 1, 2]]))
    spawner.live(0)[0].childDataReceived(1, encode(["h", 0, [3, 0, 0]]))
    assert store.stats.dns() == (18, 3, 4)
    samples = parse_samples("".join(exposition.render(store, exposition.TEXT, None)))
    assert value(samples, "netprobe_dns_cache_lookups_total", result="hit") == 18.0
    assert value(samples, "netprobe_dns_cache_lookups_total", result="miss") == 3.0
    assert value(samples, "netprobe_dns_queries_total") == 4.0
