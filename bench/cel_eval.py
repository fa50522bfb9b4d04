"""CEL body checks (cel-python): CPU per JSON list element, the deadline hook's cost, and the
longest reactor stall while a check runs in the thread pool.

For each --sizes N, a body ``{"items": [0, 1, ..., N-1]}`` is checked against
``body.items.all(x, x >= 0)``: once bare (the program evaluated directly), once through
``check_body`` (JSON conversion and the deadline trace hook), and once through
``check_off_reactor`` while a 5 ms LoopingCall records how late the reactor gets to it.

    python bench/cel_eval.py --sizes 100,1000,5000
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import celpy
from common import table, write_json
from twisted.internet import defer, reactor, task

from netprobe_exporter.probes.httpcel import check_body, check_off_reactor, compile_cel

EXPRESSION = "body.items.all(x, x >= 0)"


def bare(program: Any, body: bytes) -> float:
    t0 = time.process_time()
    program.program.evaluate({"body": celpy.json_to_cel(json.loads(body))})
    return time.process_time() - t0


def hooked(program: Any, body: bytes) -> float:
    t0 = time.process_time()
    verdict = check_body(body, program, None, 600.0)
    assert not verdict.failed or "matched" in verdict.reason, verdict.reason
    return time.process_time() - t0


@defer.inlineCallbacks
def stall(program: Any, body: bytes) -> Any:
    """The worst lateness of a 5 ms timer while the check runs off the reactor."""
    worst = [0.0]
    last = [time.monotonic()]

    def tick() -> None:
        now = time.monotonic()
        worst[0] = max(worst[0], now - last[0] - 0.005)
        last[0] = now

    loop = task.LoopingCall(tick)
    loop.start(0.005)
    t0 = time.monotonic()
    yield check_off_reactor(reactor, body, program, None, 600.0)
    wall = time.monotonic() - t0
    loop.stop()
    return wall, worst[0]


@defer.inlineCallbacks
def main(sizes: list[int]) -> Any:
    program = compile_cel(EXPRESSION)
    rows: list[list[object]] = [["items", "bare s", "checked s", "us/item", "hook x",
                                 "off-reactor wall s", "worst stall ms"]]  # fmt: skip
    data = []
    for n in sizes:
        body = json.dumps({"items": list(range(n))}).encode()
        b, h = bare(program, body), hooked(program, body)
        wall, worst = yield stall(program, body)
        rows.append([n, f"{b:.3f}", f"{h:.3f}", f"{h / n * 1e6:.0f}", f"{h / b:.2f}",
                     f"{wall:.3f}", f"{worst * 1000:.1f}"])  # fmt: skip
        data.append({"items": n, "bare_s": b, "checked_s": h, "wall_s": wall, "stall_s": worst})
    print(table(rows))
    write_json("cel_eval", data)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="100,1000,5000")
    args = parser.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]
    d = main(sizes)
    d.addBoth(lambda _: reactor.stop())
    reactor.run()
