"""HTTP/2 and HTTP/3 peers for the http prober's tests, on loopback.

``twisted_site`` is Twisted's own web server (HTTP/2 over TLS when ALPN offers ``h2``, from
``twisted[http2]``) on the test's reactor; ``H3Server`` is aioquic's HTTP/3 server in a thread
of its own (asyncio there, never in the exporter).
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import brotli
from twisted.internet import ssl
from twisted.internet.interfaces import IListeningPort
from twisted.web import resource, server

from netprobe_exporter.probes import ProbeResult
from tests.support.servers import BODY_OK, Certs

GZIP_TEXT = b"squeezed through HTTP/2\n" * 40


def _echo(version: str, client: str, headers: list[tuple[bytes, bytes]], body: bytes) -> bytes:
    """What ``/echo`` answers: JSON of the request as the server saw it."""
    return json.dumps({
        "version": version, "client": client, "body": body.decode("latin-1"),
        "headers": [[n.decode("latin-1").lower(), v.decode("latin-1")] for n, v in headers],
    }).encode()  # fmt: skip


def bb_values(result: ProbeResult) -> dict[str, float]:
    """A probe's /probe output (its details' part): the unlabelled values, by family."""
    out: dict[str, list[Any]] = {}
    assert result.details is not None
    result.details.blackbox(out, result)
    return {name: samples[0][1] for name, samples in out.items() if samples and not samples[0][0]}


class _Page(resource.Resource):
    """``/ok`` ``BODY_OK``; ``/redirect`` 302 to ``/ok``; ``/gzip`` gzip of ``GZIP_TEXT``;
    ``/error`` 500; ``/version`` the request's protocol (``HTTP/2`` or ``HTTP/1.1``); ``/br``
    brotli of ``GZIP_TEXT``; ``/echo`` JSON of the request (version, client address, headers,
    body)."""

    isLeaf = True

    def render(self, request: Any) -> bytes:
        path = request.path
        if path == b"/redirect":
            request.setResponseCode(302)
            request.setHeader(b"location", b"/ok")
            return b""
        if path == b"/gzip":
            body = gzip.compress(GZIP_TEXT)
            request.setHeader(b"content-encoding", b"gzip")
        elif path == b"/error":
            request.setResponseCode(500)
            body = b"broken\n"
        elif path == b"/version":
            body = request.clientproto
        elif path == b"/br":
            body = brotli.compress(GZIP_TEXT)
            request.setHeader(b"content-encoding", b"br")
        elif path == b"/echo":
            headers = [(n, v) for n, vs in request.requestHeaders.getAllRawHeaders() for v in vs]
            body = _echo(request.clientproto.decode(), request.getClientAddress().host, headers,
                         request.content.read())  # fmt: skip
            request.setHeader(b"content-type", b"application/json")
        else:
            body = BODY_OK
        request.setHeader(b"content-type", b"text/plain")
        request.setHeader(b"content-length", str(len(body)).encode())
        return body


class _HTTP11Site(server.Site):
    """A site that offers only ``http/1.1`` over ALPN (Twisted's TLS takes the list from here,
    not from the certificate options)."""

    def acceptableProtocols(self) -> list[bytes]:
        return [b"http/1.1"]


def twisted_site(reactor: Any, certs: Certs | None, h2: bool = True) -> IListeningPort:
    """Listen on 127.0.0.1 (port 0): TLS with the valid leaf when ``certs``, ALPN ``h2`` if
    ``h2``; plain HTTP/1.1 without ``certs``. The caller stops the port."""
    site = server.Site(_Page()) if h2 else _HTTP11Site(_Page())
    site.displayTracebacks = False
    if certs is None:
        return reactor.listenTCP(0, site, interface="127.0.0.1")  # type: ignore[no-any-return]
    key = certs.leaf_key.read_bytes()
    chain = certs.leaf_chain.read_bytes()
    cert = ssl.PrivateCertificate.loadPEM(chain + key)
    extra = ssl.Certificate.loadPEM(certs.ca_cert.read_bytes())
    options = ssl.CertificateOptions(
        privateKey=cert.privateKey.original,
        certificate=cert.original,
        extraCertChain=[extra.original],
        acceptableProtocols=[b"h2", b"http/1.1"] if h2 else [b"http/1.1"],
    )
    return reactor.listenSSL(0, site, options, interface="127.0.0.1")  # type: ignore[no-any-return]


class H3Server:
    """aioquic's HTTP/3 server on 127.0.0.1 UDP in a thread with its own event loop.

    Paths as ``_Page`` (``/ok``, ``/redirect``, ``/gzip``, ``/error``, ``/echo`` without the
    body); ``requests`` records each request's ``(method, path)``, ``heads`` its headers and the
    client's address.
    """

    def __init__(self, cert: Path, key: Path) -> None:
        self._cert, self._key = cert, key
        self.port = 0
        self.requests: list[tuple[bytes, bytes]] = []
        self.heads: list[tuple[list[tuple[bytes, bytes]], str]] = []
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._server: Any = None

    def start(self) -> H3Server:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the HTTP/3 test server did not start")
        return self

    def stop(self) -> None:
        def close() -> None:
            if self._server is not None:
                self._server.close()
            self._loop.stop()

        self._loop.call_soon_threadsafe(close)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())
        self._ready.set()
        self._loop.run_forever()
        self._loop.close()

    async def _serve(self) -> None:
        from aioquic.asyncio import serve
        from aioquic.h3.connection import H3_ALPN
        from aioquic.quic.configuration import QuicConfiguration

        config = QuicConfiguration(is_client=False, alpn_protocols=H3_ALPN)
        config.load_cert_chain(self._cert, self._key)
        self._server = await serve(
            "127.0.0.1",
            0,
            configuration=config,
            create_protocol=_h3_protocol(self.requests, self.heads),
        )
        self.port = self._server._transport.get_extra_info("sockname")[1]


def _reply(path: bytes) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    if path == b"/redirect":
        return 302, [(b"location", b"/ok")], b""
    if path == b"/gzip":
        return 200, [(b"content-encoding", b"gzip")], gzip.compress(GZIP_TEXT)
    if path == b"/error":
        return 500, [], b"broken\n"
    return 200, [(b"content-type", b"text/plain")], BODY_OK


def _h3_protocol(
    requests: list[tuple[bytes, bytes]], heads: list[tuple[list[tuple[bytes, bytes]], str]]
) -> Callable[..., Any]:
    from aioquic.asyncio import QuicConnectionProtocol
    from aioquic.h3.connection import H3Connection
    from aioquic.h3.events import HeadersReceived
    from aioquic.quic.events import ProtocolNegotiated

    class _Protocol(QuicConnectionProtocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._h3: H3Connection | None = None

        def quic_event_received(self, event: Any) -> None:
            if isinstance(event, ProtocolNegotiated):
                self._h3 = H3Connection(self._quic)
            if self._h3 is None:
                return
            for h3_event in self._h3.handle_event(event):
                if isinstance(h3_event, HeadersReceived):
                    head = dict(h3_event.headers)
                    path = head.get(b":path", b"/")
                    requests.append((head.get(b":method", b""), path))
                    client = str(self._quic._network_paths[0].addr[0])
                    heads.append((list(h3_event.headers), client))
                    status, headers, body = _reply(path)
                    if path == b"/echo":
                        body = _echo("HTTP/3", client, list(h3_event.headers), b"")
                    self._h3.send_headers(
                        h3_event.stream_id,
                        [(b":status", str(status).encode()),
                         (b"content-length", str(len(body)).encode()), *headers],
                    )  # fmt: skip
                    self._h3.send_data(h3_event.stream_id, body, end_stream=True)
            self.transmit()

    return _Protocol


@contextlib.contextmanager
def h2_site_process(certs: Certs, h2: bool = True) -> Iterator[int]:
    """Twisted's HTTPS site (``h2`` offered or not) in a subprocess; yields its port."""
    mode = "h2" if h2 else "h1"
    cmd = [sys.executable, "-m", "tests.support.web_peers", mode, str(certs.directory)]
    root = Path(__file__).resolve().parents[2]
    with subprocess.Popen(cmd, cwd=root, stdin=subprocess.PIPE, stdout=subprocess.PIPE) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if not line.strip().isdigit():
                raise RuntimeError(f"the HTTP/2 test site did not start: {line!r}")
            yield int(line)
        finally:
            if proc.stdin is not None:
                proc.stdin.close()  # it exits when its stdin closes
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def _certs_in(directory: Path) -> Certs:
    """The ``Certs`` that ``make_certs`` wrote into ``directory`` (file names only)."""
    return Certs(
        directory=directory, ca_cert=directory / "ca.pem", leaf_cert=directory / "leaf.pem",
        leaf_chain=directory / "leaf-chain.pem", leaf_key=directory / "leaf-key.pem",
        expired_cert=directory / "expired.pem", expired_key=directory / "expired-key.pem",
        selfsigned_cert=directory / "selfsigned.pem",
        selfsigned_key=directory / "selfsigned-key.pem",
        leaf_not_after=0, expired_not_after=0, selfsigned_not_after=0,
    )  # fmt: skip


def _main(mode: str, directory: str) -> None:
    """Serve until stdin closes: print the port, then run the reactor."""
    from twisted.internet import reactor, stdio
    from twisted.internet.protocol import Protocol

    port = twisted_site(reactor, _certs_in(Path(directory)), h2=mode == "h2")

    class _Stdin(Protocol):
        def connectionLost(self, reason: Any = None) -> None:
            reactor.stop()  # type: ignore[attr-defined]

    stdio.StandardIO(_Stdin())
    print(port.getHost().port, flush=True)
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    _main(sys.argv[1], sys.argv[2])
