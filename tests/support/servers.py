"""Local probe targets for the differential tests: TCP, line-protocol, TLS and HTTP(S) servers.

Every server listens on an ephemeral loopback port (127.0.0.1, or ::1 where asked), runs in
background threads of this process and is a context manager: leaving the ``with`` block stops
it, wakes every handler (an event plus socket timeouts: no wait is unbounded) and joins its
threads with a deadline. Certificates are generated with ``cryptography`` into a directory so
that exporter configs can point ``tls_config.ca_file`` at them.
"""

from __future__ import annotations

import base64
import contextlib
import http.server
import socket
import socketserver
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.pki import Certs, make_certs

#: how long a handler waits for its peer before giving up on the connection
PEER_TIMEOUT = 10.0
#: how often blocking handler calls wake up to look at the stop event
POLL = 0.2
#: how long stopping a server may wait for its threads
JOIN_TIMEOUT = 5.0


def host_port(host: str, port: int) -> str:
    """``host:port``, with IPv6 literals bracketed."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# raw TCP servers


class Stopped(Exception):
    """The server is stopping: the handler should return."""


class Conn:
    """A connection as a handler sees it: line reads and writes that honour the stop event."""

    def __init__(self, sock: socket.socket, stop: threading.Event) -> None:
        self.sock = sock
        self.stop = stop
        self._buf = b""
        sock.settimeout(POLL)

    def _recv(self, deadline: float) -> bytes:
        while True:
            if self.stop.is_set():
                raise Stopped
            if time.monotonic() >= deadline:
                raise TimeoutError("peer sent nothing in time")
            try:
                return self.sock.recv(4096)
            except TimeoutError:
                continue
            except ssl.SSLWantReadError:
                continue

    def readline(self, timeout: float = PEER_TIMEOUT) -> bytes | None:
        """One line without its ``\\r\\n``/``\\n``; None at EOF."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            data = self._recv(deadline)
            if not data:
                return None
            self._buf += data
            if len(self._buf) > 65536:
                raise ValueError("line too long")
        line, self._buf = self._buf.split(b"\n", 1)
        return line.rstrip(b"\r")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def drain(self, timeout: float = PEER_TIMEOUT) -> None:
        """Read and drop everything until the peer closes (or the timeout/stop)."""
        deadline = time.monotonic() + timeout
        while self._recv(deadline):
            pass

    def start_tls(self, ctx: ssl.SSLContext) -> None:
        """Server-side TLS handshake on this connection (raises on failure)."""
        assert not self._buf, "unread plaintext before the TLS handshake"
        self.sock.settimeout(PEER_TIMEOUT)
        tls = ctx.wrap_socket(self.sock, server_side=True)
        tls.settimeout(POLL)
        self.sock = tls


Handler = Callable[[Conn], None]


class TCPServer:
    """Accepts on a loopback port (or the Unix socket ``unix_path``) and runs ``handler`` for
    each connection in its own thread."""

    def __init__(
        self, handler: Handler, host: str = "127.0.0.1", unix_path: Path | None = None
    ) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.host = host
        self.unix_path = unix_path
        self.handler = handler
        self.stop = threading.Event()
        self.connections = 0
        self.errors: list[BaseException] = []
        self._lock = threading.Lock()
        self._socks: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        if unix_path is not None:
            self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self._listener.bind(str(unix_path))
            self.port = 0
        else:
            self._listener = socket.socket(family, socket.SOCK_STREAM)
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._listener.bind((host, 0))
            self.port = self._listener.getsockname()[1]
        self._listener.listen(128)
        self._listener.settimeout(POLL)
        self._acceptor = threading.Thread(target=self._accept_loop, name=f"tcp:{self.port}")

    @property
    def address(self) -> str:
        return (
            str(self.unix_path) if self.unix_path is not None else host_port(self.host, self.port)
        )

    def start(self) -> TCPServer:
        self._acceptor.start()
        return self

    def _accept_loop(self) -> None:
        while not self.stop.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.connections += 1
                self._socks.add(sock)
                t = threading.Thread(target=self._serve, args=(sock,), daemon=True)
                self._threads.append(t)
            t.start()

    def _serve(self, sock: socket.socket) -> None:
        conn = Conn(sock, self.stop)
        try:
            self.handler(conn)
        except (Stopped, OSError, ValueError):
            pass  # peers hang up, time out or fail TLS handshakes: that is what probes do
        except BaseException as exc:  # a bug in a handler: keep it for the test to see
            self.errors.append(exc)
        finally:
            with contextlib.suppress(OSError):
                conn.sock.close()
            with self._lock:
                self._socks.discard(sock)
            sock.close()

    def close(self) -> None:
        self.stop.set()
        self._listener.close()
        if self._acceptor.is_alive():
            self._acceptor.join(JOIN_TIMEOUT)
        with self._lock:
            socks, threads = list(self._socks), list(self._threads)
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + JOIN_TIMEOUT
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))


@contextlib.contextmanager
def tcp_server(handler: Handler, host: str = "127.0.0.1") -> Iterator[TCPServer]:
    server = TCPServer(handler, host)
    try:
        yield server.start()
    finally:
        server.close()


@contextlib.contextmanager
def unix_server(handler: Handler, path: Path) -> Iterator[TCPServer]:
    """``tcp_server`` on a Unix stream socket at ``path`` (removed afterwards)."""
    server = TCPServer(handler, unix_path=path)
    try:
        yield server.start()
    finally:
        server.close()
        path.unlink(missing_ok=True)


def _hold(conn: Conn) -> None:
    """Accept and say nothing until the peer closes (or the server stops)."""
    conn.drain(timeout=60.0)


def holding_server(host: str = "127.0.0.1") -> contextlib.AbstractContextManager[TCPServer]:
    """An open port that accepts and then holds the connection silently.

    For ``tcp_connect`` it is an open port; for a module that ``expect``\\s something it is the
    honest loopback stand-in for a filtered service: the probe's read times out.
    """
    return tcp_server(_hold, host)


TALKER_LINES = b"220 hello\r\nnothing to see\r\n"


def _talk(conn: Conn) -> None:
    conn.send(TALKER_LINES)
    conn.sock.shutdown(socket.SHUT_WR)
    conn.drain(timeout=5.0)


def talker_server() -> contextlib.AbstractContextManager[TCPServer]:
    """Sends two fixed lines (``TALKER_LINES``) and closes: an ``expect`` that never matches
    sees EOF (blackbox: ``probe_failed_due_to_regex 1``)."""
    return tcp_server(_talk)


SSH_BANNER = b"SSH-2.0-OpenSSH_9.0\r\n"


@dataclass
class Received:
    """Lines received by a line-protocol server, for assertions."""

    lines: list[bytes] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, line: bytes) -> None:
        with self.lock:
            self.lines.append(line)


@contextlib.contextmanager
def banner_server(received: Received | None = None) -> Iterator[TCPServer]:
    """SSH-like: sends ``SSH-2.0-OpenSSH_9.0``, reads one line, closes."""
    got = received if received is not None else Received()

    def handle(conn: Conn) -> None:
        conn.send(SSH_BANNER)
        line = conn.readline()
        if line is not None:
            got.add(line)

    with tcp_server(handle) as server:
        yield server


IRC_PING_TOKEN = "abc123"


@contextlib.contextmanager
def irc_server(received: Received | None = None) -> Iterator[TCPServer]:
    """IRC-like, for ``irc_banner``: wants NICK and USER, sends ``PING :abc123``, wants
    ``PONG abc123`` and only then welcomes (``:server 001 prober :Welcome``)."""
    got = received if received is not None else Received()

    def handle(conn: Conn) -> None:
        seen: set[bytes] = set()
        while not {b"NICK", b"USER"} <= seen:
            line = conn.readline()
            if line is None:
                return
            got.add(line)
            seen.add(line.split(b" ", 1)[0].upper())
        conn.send(f"PING :{IRC_PING_TOKEN}\r\n".encode())
        line = conn.readline()
        if line is None:
            return
        got.add(line)
        if line == f"PONG {IRC_PING_TOKEN}".encode():
            conn.send(b":server 001 prober :Welcome\r\n")
        else:
            conn.send(b"ERROR :Closing link (bad PONG)\r\n")
        conn.drain(timeout=5.0)

    with tcp_server(handle) as server:
        yield server


@contextlib.contextmanager
def starttls_server(ctx: ssl.SSLContext) -> Iterator[TCPServer]:
    """SMTP-like STARTTLS: ``220 ready``; on ``STARTTLS`` ``220 go ahead``, a TLS handshake
    with ``ctx``, then ``250 secured`` over TLS; anything else gets ``500 what?``."""

    def handle(conn: Conn) -> None:
        conn.send(b"220 ready\r\n")
        line = conn.readline()
        if line is None:
            return
        if line.strip().upper() != b"STARTTLS":
            conn.send(b"500 what?\r\n")
            return
        conn.send(b"220 go ahead\r\n")
        conn.start_tls(ctx)
        conn.send(b"250 secured\r\n")
        conn.drain(timeout=5.0)

    with tcp_server(handle) as server:
        yield server


@contextlib.contextmanager
def tls_server(ctx: ssl.SSLContext, host: str = "127.0.0.1") -> Iterator[TCPServer]:
    """TLS from the first byte: handshake with ``ctx``, then hold until the peer closes."""

    def handle(conn: Conn) -> None:
        conn.start_tls(ctx)
        conn.drain(timeout=10.0)

    with tcp_server(handle, host) as server:
        yield server


# websocket


class WSConn:
    """The server side of a websocket on a ``Conn``, spoken by ``wsproto``: an implementation
    other than the prober's, so each checks the other (wsproto refuses unmasked client frames).
    """

    def __init__(self, conn: Conn) -> None:
        from wsproto import ConnectionType, WSConnection

        self.conn = conn
        self.ws = WSConnection(ConnectionType.SERVER)
        self.events: list[Any] = []
        #: what the client sent besides messages: ("ping"|"pong"|"close", payload or code)
        self.control: list[tuple[str, object]] = []
        self.request: Any = None

    def _pump(self, deadline: float) -> None:
        data = self.conn._recv(deadline)
        self.ws.receive_data(data or None)
        self.events.extend(self.ws.events())
        if not data and not self.events:
            raise Stopped

    def _next(self, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while not self.events:
            self._pump(deadline)
        return self.events.pop(0)

    def handshake(self, timeout: float = PEER_TIMEOUT) -> Any:
        """The client's upgrade request (wsproto's ``Request``), not yet answered."""
        from wsproto.events import Request

        event = self._next(timeout)
        if not isinstance(event, Request):
            raise ValueError(f"expected an upgrade request, got {event!r}")
        self.request = event
        return event

    def accept(self, timeout: float = PEER_TIMEOUT) -> Any:
        from wsproto.events import AcceptConnection

        request = self.handshake(timeout)
        self.conn.send(self.ws.send(AcceptConnection()))
        return request

    def reject(self, status: int, timeout: float = PEER_TIMEOUT) -> None:
        from wsproto.events import RejectConnection

        self.handshake(timeout)
        self.conn.send(self.ws.send(RejectConnection(status_code=status)))

    def send_text(self, text: str) -> None:
        from wsproto.events import Message

        self.conn.send(self.ws.send(Message(data=text)))

    def receive(self, timeout: float = PEER_TIMEOUT) -> str | bytes | None:
        """The next whole message; None once the client closed (its Close is answered)."""
        from wsproto.events import CloseConnection, Message, Ping, Pong

        deadline = time.monotonic() + timeout
        parts: list[Any] = []
        while True:
            event = self._next(max(deadline - time.monotonic(), 0.001))
            if isinstance(event, Ping):
                self.control.append(("ping", event.payload))
                self.conn.send(self.ws.send(event.response()))
            elif isinstance(event, Pong):
                self.control.append(("pong", bytes(event.payload)))
            elif isinstance(event, CloseConnection):
                self.control.append(("close", event.code))
                with contextlib.suppress(Exception):
                    self.conn.send(self.ws.send(event.response()))
                return None
            elif isinstance(event, Message):
                parts.append(event.data)
                if event.message_finished:
                    joined: str | bytes = (
                        "".join(parts) if isinstance(parts[0], str) else b"".join(parts)
                    )
                    return joined

    def until_closed(self, timeout: float = PEER_TIMEOUT) -> None:
        """Read (and drop) messages until the client closes."""
        with contextlib.suppress(Stopped, TimeoutError):
            while self.receive(timeout) is not None:
                pass


WSHandler = Callable[[WSConn], None]


@contextlib.contextmanager
def websocket_server(
    handler: WSHandler, ctx: ssl.SSLContext | None = None, host: str = "127.0.0.1"
) -> Iterator[TCPServer]:
    """A websocket server (TLS from the first byte with ``ctx``: wss); ``handler`` gets each
    connection as a ``WSConn`` to accept (or reject) and talk on."""

    def handle(conn: Conn) -> None:
        if ctx is not None:
            conn.start_tls(ctx)
        handler(WSConn(conn))

    with tcp_server(handle, host) as server:
        yield server


# HTTP


BODY_OK = b"hello netprobe\n"
BODY_OTHER = b"something else\n"
BODY_FORBIDDEN = b"this body has forbidden content\n"
BODY_404 = b"not found\n"
BODY_500 = b"boom\n"
CHUNKS = (b"chun", b"ky\n")
LAST_MODIFIED = "Wed, 21 Oct 2015 07:28:00 GMT"
LAST_MODIFIED_UNIX = 1445412480
HEADER_NAME = "X-Test"
SLOW_SECONDS = 3.0
POST_BODY = '{"ping": 1}'
AUTH_USER = "prober"
AUTH_PASSWORD = "s3cret"


class _Handler(http.server.BaseHTTPRequestHandler):
    """The test site. Paths:

    ``/`` ``/ok`` 200 ``BODY_OK`` with Last-Modified; ``/other`` 200 ``BODY_OTHER``;
    ``/forbidden-body`` 200 ``BODY_FORBIDDEN``; ``/chunked`` 200 chunked; ``/redirect`` 301 to
    ``/ok``; ``/error`` 500; ``/slow`` 200 after ``SLOW_SECONDS``; ``/header`` 200 with
    ``X-Test: good-value``; ``/header-bad`` 200 with ``X-Test: bad-value``; ``/post`` 200 for a
    POST of ``POST_BODY`` (405 for other methods, 400 for another body); ``/auth`` 200 with
    the right basic auth, else 401; anything else 404.
    """

    protocol_version = "HTTP/1.1"
    server_version = "netprobe-test"
    timeout = PEER_TIMEOUT
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def version_string(self) -> str:
        return self.server_version

    def _reply(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def do_GET(self) -> None:
        self._dispatch(self._read_body())

    def do_POST(self) -> None:
        self._dispatch(self._read_body())

    do_HEAD = do_GET

    def _dispatch(self, body: bytes) -> None:
        self.server.requests.append((self.command, self.path, dict(self.headers.items())))
        path = self.path.split("?", 1)[0]
        if path in ("/", "/ok"):
            self._reply(200, BODY_OK, {"Last-Modified": LAST_MODIFIED})
        elif path == "/other":
            self._reply(200, BODY_OTHER)
        elif path == "/forbidden-body":
            self._reply(200, BODY_FORBIDDEN)
        elif path == "/chunked":
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for chunk in CHUNKS:
                self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
        elif path == "/redirect":
            self._reply(301, b"", {"Location": "/ok"})
        elif path == "/error":
            self._reply(500, BODY_500)
        elif path == "/slow":
            if self.server.stop.wait(SLOW_SECONDS):
                self.close_connection = True
                return
            self._reply(200, BODY_OK)
        elif path in ("/header", "/header-bad"):
            value = "good-value" if path == "/header" else "bad-value"
            self._reply(200, BODY_OK, {HEADER_NAME: value})
        elif path == "/post":
            if self.command != "POST":
                self._reply(405, b"POST only\n", {"Allow": "POST"})
            elif body != POST_BODY.encode():
                self._reply(400, b"unexpected body\n")
            else:
                self._reply(200, b"posted\n")
        elif path == "/auth":
            token = base64.b64encode(f"{AUTH_USER}:{AUTH_PASSWORD}".encode()).decode()
            if self.headers.get("Authorization") == f"Basic {token}":
                self._reply(200, BODY_OK)
            else:
                self._reply(401, b"who are you?\n", {"WWW-Authenticate": 'Basic realm="test"'})
        else:
            self._reply(404, BODY_404)


class _HTTPServer(http.server.HTTPServer):
    """One thread per connection, each tracked so that ``close()`` can wake and join it."""

    def __init__(self, host: str, ssl_context: ssl.SSLContext | None) -> None:
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.ssl_context = ssl_context
        self.stop = threading.Event()
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        super().__init__((host, 0), _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        t = threading.Thread(target=self._serve, args=(request, client_address), daemon=True)
        with self._lock:
            self._conns.add(request)
            self._threads.append(t)
        t.start()

    def _serve(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            with self._lock:
                self._conns.discard(request)
            self.shutdown_request(request)

    def close(self) -> None:
        """Stop serving, wake every handler (slow path, idle keep-alive) and join them."""
        self.stop.set()
        self.shutdown()
        self.server_close()
        with self._lock:
            conns, threads = list(self._conns), list(self._threads)
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + JOIN_TIMEOUT
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))

    def server_bind(self) -> None:
        # HTTPServer.server_bind would call getfqdn() (a reverse lookup); not needed here
        socketserver.TCPServer.server_bind(self)
        self.server_name = "localhost"
        self.server_port = self.server_address[1]

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.ssl_context is None:
            super().finish_request(request, client_address)
            return
        request.settimeout(PEER_TIMEOUT)
        try:
            tls = self.ssl_context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return  # the client refused our certificate, or hung up: that is the test
        with self._lock:
            self._conns.add(tls)  # the plain socket was detached into it
        try:
            super().finish_request(tls, client_address)
        finally:
            with self._lock:
                self._conns.discard(tls)
            tls.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # probes hang up mid-response (timeouts); no tracebacks on stderr


@dataclass
class HTTPServer:
    host: str
    port: int
    scheme: str
    requests: list[tuple[str, str, dict[str, str]]]

    def url(self, path: str = "/") -> str:
        return f"{self.scheme}://{host_port(self.host, self.port)}{path}"


@contextlib.contextmanager
def http_server(
    ssl_context: ssl.SSLContext | None = None, host: str = "127.0.0.1"
) -> Iterator[HTTPServer]:
    """The test site (see ``_Handler``) over HTTP/1.1, or HTTPS with ``ssl_context``."""
    server = _HTTPServer(host, ssl_context)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="http", daemon=True
    )
    thread.start()
    try:
        yield HTTPServer(
            host=host,
            port=server.server_address[1],
            scheme="https" if ssl_context else "http",
            requests=server.requests,
        )
    finally:
        server.close()
        thread.join(JOIN_TIMEOUT)


# everything at once


@dataclass
class Targets:
    """Every server of the differential matrix, started together."""

    certs: Certs
    hold: TCPServer
    hold6: TCPServer
    closed_port: int
    closed_port6: int
    talker: TCPServer
    banner: TCPServer
    banner_received: Received
    irc: TCPServer
    irc_received: Received
    starttls: TCPServer
    starttls_expired: TCPServer
    tls_valid: TCPServer
    tls_expired: TCPServer
    tls_selfsigned: TCPServer
    http: HTTPServer
    http6: HTTPServer
    https: HTTPServer
    https_expired: HTTPServer
    https_selfsigned: HTTPServer

    def tcp_servers(self) -> list[TCPServer]:
        return [
            self.hold,
            self.hold6,
            self.talker,
            self.banner,
            self.irc,
            self.starttls,
            self.starttls_expired,
            self.tls_valid,
            self.tls_expired,
            self.tls_selfsigned,
        ]


@contextlib.contextmanager
def all_targets(cert_dir: Path) -> Iterator[Targets]:
    """Start every server; stop them all on exit (also when a later one fails to start)."""
    certs = make_certs(cert_dir)
    with contextlib.ExitStack() as stack:
        enter = stack.enter_context
        banner_received, irc_received = Received(), Received()
        yield Targets(
            certs=certs,
            hold=enter(holding_server()),
            hold6=enter(holding_server("::1")),
            closed_port=enter(closed_port()),
            closed_port6=enter(closed_port("::1")),
            talker=enter(talker_server()),
            banner=enter(banner_server(banner_received)),
            banner_received=banner_received,
            irc=enter(irc_server(irc_received)),
            irc_received=irc_received,
            starttls=enter(starttls_server(certs.server_context("valid"))),
            starttls_expired=enter(starttls_server(certs.server_context("expired"))),
            tls_valid=enter(tls_server(certs.server_context("valid"))),
            tls_expired=enter(tls_server(certs.server_context("expired"))),
            tls_selfsigned=enter(tls_server(certs.server_context("selfsigned"))),
            http=enter(http_server()),
            http6=enter(http_server(host="::1")),
            https=enter(http_server(certs.server_context("valid"))),
            https_expired=enter(http_server(certs.server_context("expired"))),
            https_selfsigned=enter(http_server(certs.server_context("selfsigned"))),
        )


@contextlib.contextmanager
def closed_port(host: str = "127.0.0.1") -> Iterator[int]:
    """A loopback port that refuses connections, reserved while the block runs.

    The socket is bound but never listens: the kernel answers a SYN with RST, and no other
    server (or exporter on port 0) can be handed the port meanwhile.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        yield int(s.getsockname()[1])


# gRPC


#: services of ``grpc_health_server``: "" (the whole server) and "up" are SERVING, "down" is
#: NOT_SERVING; any other name is unknown (grpcio answers NOT_FOUND)
GRPC_SERVICES = {"": "SERVING", "up": "SERVING", "down": "NOT_SERVING"}


@dataclass
class GRPCServer:
    host: str
    port: int
    #: the invocation metadata of every Check the server answered, in order
    metadata: list[list[tuple[str, str | bytes]]] = field(default_factory=list)
    #: the peer of each of those calls, as grpcio writes it (``ipv4:127.0.0.2:41234``)
    peers: list[str] = field(default_factory=list)

    @property
    def address(self) -> str:
        return host_port(self.host, self.port)


@contextlib.contextmanager
def grpc_health_server(
    tls: tuple[Path, Path] | None = None, host: str = "127.0.0.1"
) -> Iterator[GRPCServer]:
    """grpcio's own health service (``GRPC_SERVICES``) on an ephemeral port, over TLS with
    ``tls`` (certificate chain, key). Stopped, with its threads, when the block ends."""
    from concurrent import futures

    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    seen = GRPCServer(host, 0)

    class _Recording(health.HealthServicer):  # type: ignore[misc]
        def Check(self, request: Any, context: Any) -> Any:
            seen.metadata.append([(m.key, m.value) for m in context.invocation_metadata()])
            seen.peers.append(context.peer())
            return super().Check(request, context)

    servicer = _Recording()
    for name, status in GRPC_SERVICES.items():
        servicer.set(name, health_pb2.HealthCheckResponse.ServingStatus.Value(status))
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    where = f"[{host}]:0" if ":" in host else f"{host}:0"
    if tls is None:
        port = server.add_insecure_port(where)
    else:
        chain, key = (p.read_bytes() for p in tls)
        port = server.add_secure_port(where, grpc.ssl_server_credentials([(key, chain)]))
    server.start()
    seen.port = port
    try:
        yield seen
    finally:
        server.stop(grace=None).wait(JOIN_TIMEOUT)
