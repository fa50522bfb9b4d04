"""Run the test DNS zone (test_dns_probe._ZoneServer) in a process of its own.

Prints the ``127.0.0.1:PORT`` it serves on, then serves until stdin closes or the time limit:
the differential tests need a DNS server that both exporters can query while no reactor runs
in the test process.
"""

from __future__ import annotations

import sys

from twisted.internet import reactor, stdio
from twisted.internet.protocol import Protocol


class _StopOnEOF(Protocol):
    def connectionLost(self, reason: object = None) -> None:
        if reactor.running:  # type: ignore[attr-defined]
            reactor.stop()  # type: ignore[attr-defined]


def main() -> None:
    import test_dns_probe

    server = test_dns_probe._ZoneServer()
    print(server.address, flush=True)
    stdio.StandardIO(_StopOnEOF())
    reactor.callLater(float(sys.argv[1]) if len(sys.argv) > 1 else 120, reactor.stop)  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
