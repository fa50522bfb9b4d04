"""Run the test DNS zone (tests.support.dns_zone._ZoneServer) in a process of its own.

Prints the ``127.0.0.1:PORT`` it serves on (UDP and TCP), and with a certificate and key also
the port it serves DNS over TLS on, then serves until stdin closes or the time limit: the
differential tests need a DNS server that both exporters can query while no reactor runs in the
test process. Arguments: ``[SECONDS [CERT_FILE KEY_FILE]]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from twisted.internet import reactor, stdio
from twisted.internet.protocol import Protocol


class _StopOnEOF(Protocol):
    def connectionLost(self, reason: object = None) -> None:
        if reactor.running:  # type: ignore[attr-defined]
            reactor.stop()  # type: ignore[attr-defined]


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script
    from tests.support import dns_zone

    server = dns_zone._ZoneServer()
    print(server.address, flush=True)
    if len(sys.argv) > 3:
        from twisted.internet import ssl
        from twisted.names import server as names_server

        factory = names_server.DNSServerFactory(authorities=[dns_zone._Zone()])
        factory.noisy = False
        pem = Path(sys.argv[3]).read_bytes() + Path(sys.argv[2]).read_bytes()
        options = ssl.PrivateCertificate.loadPEM(pem).options()
        port = reactor.listenSSL(0, factory, options, interface="127.0.0.1")  # type: ignore[attr-defined]
        print(f"127.0.0.1:{port.getHost().port}", flush=True)
    stdio.StandardIO(_StopOnEOF())
    reactor.callLater(float(sys.argv[1]) if len(sys.argv) > 1 else 120, reactor.stop)  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
