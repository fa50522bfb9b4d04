"""CPU per resolve: a CachingResolver hit against an uncached lookup, same loopback server.

The test DNS zone (tests/support/dns_zone_server.py) runs in a process of its own on 127.0.0.1,
so the CPU counted here is the client's alone. Each round does --lookups sequential resolves
of one name (not in the hosts file) with each candidate in turn; the table gives CPU µs per
resolve, median over the rounds. ``--plain-only`` measures the uncached Resolver alone (to
compare a tree without the cache).

    python bench/dns_cache.py --lookups 5000 --rounds 5
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

from netprobe_exporter.resolver import Resolver

NAME = "www.example.test"


def candidates(
    reactor: IReactorTime, server: tuple[str, int], hosts: str, plain_only: bool
) -> dict[str, Callable[[], defer.Deferred[Any]]]:
    plain = Resolver(reactor, servers=[server], hosts_path=hosts)
    found: dict[str, Callable[[], defer.Deferred[Any]]] = {
        "Resolver.resolve (uncached, one A query)": lambda: plain.resolve(NAME, "ip4", False, 2.0),
    }
    if plain_only:  # a tree without the cache may have no resolve_all either
        return found
    found["Resolver.resolve_all (uncached, A + AAAA)"] = lambda: plain.resolve_all(
        NAME, (4, 6), 2.0
    )
    from netprobe_exporter.dnscache import CachingResolver

    cache = CachingResolver(reactor, servers=[server], hosts_path=hosts)
    found["CachingResolver.resolve (hit)"] = lambda: cache.resolve(NAME, "ip4", False, 2.0)
    found["CachingResolver.resolve_all (hit, A + AAAA)"] = lambda: cache.resolve_all(
        NAME, (4, 6), 2.0
    )
    return found


async def run(
    reactor: IReactorTime, server: tuple[str, int], lookups: int, rounds: int, plain_only: bool
) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("w", suffix=".hosts") as hosts:
        return await cpu_rounds(
            candidates(reactor, server, hosts.name, plain_only), lookups, rounds
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lookups", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--plain-only", action="store_true")
    args = parser.parse_args()
    proc, server = start_zone()
    try:
        result: dict[str, Any] = {}

        def main_task(reactor: IReactorTime) -> defer.Deferred[None]:
            async def body() -> None:
                figures = await run(reactor, server, args.lookups, args.rounds, args.plain_only)
                result.update(figures)

            return defer.Deferred.fromCoroutine(body())

        with contextlib.suppress(SystemExit):  # react() exits when main_task is done
            task.react(main_task)
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(10)
    rows: list[list[object]] = [["lookup", "CPU µs / resolve (median)", "rounds"]]
    for label, fig in result.items():
        rounds = " ".join(f"{x:.1f}" for x in fig["rounds_us"])
        rows.append([label, f"{fig['median_us']:.1f}", rounds])
    print(table(rows))
    write_json("dns_cache", {"lookups": args.lookups, "rounds": args.rounds, **result})


if __name__ == "__main__":
    main()
