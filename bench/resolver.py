"""CPU per name lookup: our Resolver against twisted.names' client.Resolver, same server.

The test DNS zone (tests/support/dns_zone_server.py) runs in a process of its own on 127.0.0.1, so
the CPU counted here is the client's alone. Each round does --lookups sequential A lookups
of one name (not in the hosts file) with each resolver in turn; the table gives CPU µs per
lookup, median over the rounds.

    python bench/resolver.py --lookups 2000 --rounds 5
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
from collections.abc import Callable
from typing import Any

from common import cpu_rounds, start_zone, table, write_json
from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime
from twisted.names import client

from netprobe_exporter.resolver import Resolver

NAME = "www.example.test"


async def run(
    reactor: IReactorTime, server: tuple[str, int], lookups: int, rounds: int
) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("w", suffix=".hosts") as hosts:
        ours = Resolver(reactor, servers=[server], hosts_path=hosts.name)
        theirs = client.Resolver(servers=[server], reactor=reactor)
        candidates: dict[str, Callable[[], defer.Deferred[Any]]] = {
            "netprobe Resolver.resolve": lambda: ours.resolve(NAME, "ip4", False, 2.0),
            "twisted.names client.Resolver.lookupAddress": lambda: theirs.lookupAddress(
                NAME, timeout=(2.0,)
            ),
        }
        return await cpu_rounds(candidates, lookups, rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lookups", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    proc, server = start_zone()
    try:
        result: dict[str, Any] = {}

        def main_task(reactor: IReactorTime) -> defer.Deferred[None]:
            async def body() -> None:
                result.update(await run(reactor, server, args.lookups, args.rounds))

            return defer.Deferred.fromCoroutine(body())

        with contextlib.suppress(SystemExit):  # react() exits when main_task is done
            task.react(main_task)
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(10)
    rows: list[list[object]] = [["resolver", "CPU µs / lookup (median)", "rounds"]]
    for label, fig in result.items():
        rows.append(
            [label, f"{fig['median_us']:.0f}", " ".join(f"{x:.0f}" for x in fig["rounds_us"])]
        )
    print(table(rows))
    write_json("resolver", {"lookups": args.lookups, "rounds": args.rounds, **result})


if __name__ == "__main__":
    main()
