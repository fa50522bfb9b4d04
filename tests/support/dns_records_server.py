"""A DNS server in a process of its own whose records a test can change while it runs.

Serves A and AAAA over UDP on 127.0.0.1 from a JSON file read at each query
(``{"name": ["192.0.2.1", "2001:db8::1", ...]}``), so a test rewrites the file to change the
answers. Every answer carries ``TTL`` (seconds); a name with no address of the asked family
(NODATA) or an unknown name (NXDOMAIN) is answered with an SOA in the authority section whose
TTL and minimum are ``NEGATIVE_TTL``, so a resolver can cache the negative answer (RFC 2308).

It counts the questions it gets per (name, type) and writes them, after each one, to the stats
file as JSON (``{"name A": 3, "name AAAA": 2}``), replaced atomically, so a test can read how
many queries a cache let through.

Arguments: ``RECORDS_FILE STATS_FILE TTL NEGATIVE_TTL [SECONDS]``. Prints ``127.0.0.1:PORT``,
then serves until stdin closes or ``SECONDS`` (default 120) have passed. Plain sockets and no
reactor: nothing here needs one, and a test process that starts it runs none.
"""

from __future__ import annotations

import ipaddress
import json
import os
import selectors
import socket
import sys
import time
from collections import Counter
from pathlib import Path

from twisted.names import dns

#: a UDP datagram larger than this is not a query we answer
_MAX_QUERY = 4096
SOA_ZONE = b"example.test"


def _records(path: Path) -> dict[str, list[str]]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # mid-rewrite by a careless writer: answer NXDOMAIN once rather than crash
    return {str(k).lower().rstrip("."): [str(ip) for ip in v] for k, v in data.items()}


def _soa(negative_ttl: int) -> dns.RRHeader:
    record = dns.Record_SOA(
        mname=b"ns." + SOA_ZONE, rname=b"hostmaster." + SOA_ZONE, serial=1,
        refresh=3600, retry=600, expire=86400, minimum=negative_ttl, ttl=negative_ttl,
    )  # fmt: skip
    return dns.RRHeader(SOA_ZONE, dns.SOA, dns.IN, negative_ttl, record, auth=True)


def answer(
    query: dns.Message, records: dict[str, list[str]], ttl: int, negative_ttl: int
) -> dns.Message:
    """The reply to ``query``: its A or AAAA records, else NODATA / NXDOMAIN with an SOA."""
    reply = dns.Message(id=query.id, answer=1, opCode=query.opCode, recDes=query.recDes,
                        recAv=1, auth=True)  # fmt: skip
    reply.queries = query.queries
    if len(query.queries) != 1:
        reply.rCode = dns.EFORMAT
        return reply
    q = query.queries[0]
    name = q.name.name.decode("ascii", "replace").lower().rstrip(".")
    ips = records.get(name)
    if ips is None:
        reply.rCode = dns.ENAME
        reply.authority = [_soa(negative_ttl)]
        return reply
    for ip in ips:
        version = ipaddress.ip_address(ip).version
        if q.type == dns.A and version == 4:
            payload: dns.Record_A | dns.Record_AAAA = dns.Record_A(ip, ttl)
        elif q.type == dns.AAAA and version == 6:
            payload = dns.Record_AAAA(ip, ttl)
        else:
            continue
        reply.answers.append(dns.RRHeader(q.name.name, q.type, dns.IN, ttl, payload, auth=True))
    if not reply.answers:
        reply.authority = [_soa(negative_ttl)]
    return reply


def _write_stats(path: Path, counts: Counter[str]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(dict(counts), sort_keys=True))
    os.replace(tmp, path)


def serve(records: Path, stats: Path, ttl: int, negative_ttl: int, seconds: float) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    counts: Counter[str] = Counter()
    _write_stats(stats, counts)
    print(f"127.0.0.1:{sock.getsockname()[1]}", flush=True)
    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_READ, "dns")
    sel.register(sys.stdin, selectors.EVENT_READ, "stdin")
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        for key, _ in sel.select(min(left, 1.0)):
            if key.data == "stdin":
                if not os.read(sys.stdin.fileno(), 4096):
                    return  # stdin closed: the test is done
                continue
            data, peer = sock.recvfrom(_MAX_QUERY)
            query = dns.Message()
            try:
                query.fromStr(data)
            except Exception:  # garbage is dropped, as a server does
                continue
            for q in query.queries:
                name = q.name.name.decode("ascii", "replace").lower().rstrip(".")
                counts[f"{name} {dns.QUERY_TYPES.get(q.type, str(q.type))}"] += 1
            reply = answer(query, _records(records), ttl, negative_ttl)
            sock.sendto(reply.toStr(), peer)
            _write_stats(stats, counts)


def main() -> None:
    records, stats, ttl, negative_ttl = sys.argv[1:5]
    seconds = float(sys.argv[5]) if len(sys.argv) > 5 else 120.0
    serve(Path(records), Path(stats), int(ttl), int(negative_ttl), seconds)


if __name__ == "__main__":
    main()
