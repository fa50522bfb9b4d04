"""Loopback peers for the http prober's client keys: an OAuth2 token endpoint, a site that
wants its token (and serves brotli, echoes bodies and client addresses), and an HTTP proxy
that forwards plain requests and tunnels CONNECT. Each runs in threads of this process; every
socket is on 127.0.0.0/8 and every wait is bounded."""

from __future__ import annotations

import base64
import contextlib
import http.server
import json
import select
import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import brotli

from tests.support.servers import JOIN_TIMEOUT, PEER_TIMEOUT

CLIENT_ID = "probe-client"
CLIENT_SECRET = "t0ken-s3cret"
SCOPE = "health:read"
JSON_BODY = {"status": "up", "checks": [{"name": "db", "ok": True}], "version": 3}
BR_BODY = b"brotli compressed hello\n" * 4


@dataclass
class Seen:
    """What a peer was asked, in order (thread-safe appends)."""

    requests: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, **what: Any) -> None:
        with self.lock:
            self.requests.append(what)


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    block_on_close = False

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)  # no reverse lookup
        self.server_name, self.server_port = "localhost", self.server_address[1]

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


@dataclass
class Peer:
    port: int
    seen: Seen
    state: dict[str, Any]

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@contextlib.contextmanager
def _serve(handler: type[http.server.BaseHTTPRequestHandler], state: dict[str, Any],
           host: str = "127.0.0.1") -> Iterator[Peer]:  # fmt: skip
    server = _Server((host, 0), handler)
    seen = Seen()
    server.seen, server.state = seen, state  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              daemon=True)  # fmt: skip
    thread.start()
    try:
        yield Peer(server.server_address[1], seen, state)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(JOIN_TIMEOUT)


class _Base(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = PEER_TIMEOUT

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def reply(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in {"Content-Type": "text/plain", **(headers or {})}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""


class _TokenEndpoint(_Base):
    """POST /token: client credentials by Basic auth (or in the form when ``state['params']``),
    ``scope`` must be ``SCOPE``; tokens are ``tok-N`` with ``state['expires_in']``."""

    def do_POST(self) -> None:
        state, seen = self.server.state, self.server.seen  # type: ignore[attr-defined]
        form = {k: v[0] for k, v in parse_qs(self.body().decode()).items()}
        auth = self.headers.get("Authorization", "")
        seen.add(path=self.path, form=form, authorization=auth,
                 user_agent=self.headers.get("User-Agent", ""))  # fmt: skip
        client = secret = None
        if auth.startswith("Basic ") and not state.get("params"):
            user, _, pw = base64.b64decode(auth[6:]).decode().partition(":")
            client, secret = unquote(user), unquote(pw)
        elif state.get("params"):
            client, secret = form.get("client_id"), form.get("client_secret")
        if (client, secret) != (CLIENT_ID, CLIENT_SECRET):
            self.reply(401, json.dumps({"error": "invalid_client"}).encode(),
                       {"Content-Type": "application/json"})  # fmt: skip
            return
        if form.get("grant_type") != "client_credentials" or form.get("scope") != SCOPE:
            self.reply(400, json.dumps({"error": "invalid_scope"}).encode(),
                       {"Content-Type": "application/json"})  # fmt: skip
            return
        with seen.lock:
            state["issued"] = state.get("issued", 0) + 1
            token = f"tok-{state['issued']}"
        doc: dict[str, Any] = {"access_token": token, "token_type": "bearer"}
        if state.get("expires_in") is not None:
            doc["expires_in"] = state["expires_in"]
        self.reply(200, json.dumps(doc).encode(), {"Content-Type": "application/json"})


class _Site(_Base):
    """``/protected``: 200 with a ``Bearer tok-N`` token (the token endpoint's), else 401;
    ``/json``: ``JSON_BODY``; ``/br``: ``BR_BODY`` brotli-encoded (``/br-broken``: cut short);
    ``/echo``: 200, the request recorded; every request is recorded with its client address."""

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def _handle(self) -> None:
        seen = self.server.seen  # type: ignore[attr-defined]
        body = self.body()
        seen.add(method=self.command, path=self.path, headers=dict(self.headers.items()),
                 header_lines=self.headers.items(), body=body,
                 client=self.client_address[0])  # fmt: skip
        path = self.path.split("?", 1)[0]
        if path.startswith("http://"):  # a proxy forwarded the absolute form: not expected
            path = urlsplit(path).path
        if path == "/protected":
            auth = self.headers.get("Authorization", "")
            ok = auth.startswith("Bearer tok-")
            self.reply(200 if ok else 401, b"ok\n" if ok else b"no\n")
        elif path == "/doc-example":  # CONFIGURATION.md's CEL example body
            self.reply(200, b'{ "foo": "bar", "baz": "qux" }', {"Content-Type": "application/json"})
        elif path == "/json":
            self.reply(200, json.dumps(JSON_BODY).encode(), {"Content-Type": "application/json"})
        elif path in ("/br", "/br-broken"):
            data = brotli.compress(BR_BODY)
            if path == "/br-broken":
                data = data[: len(data) // 2]
            self.reply(200, data, {"Content-Encoding": "br"})
        else:
            self.reply(200, b"echo\n")


def token_endpoint(expires_in: float | None = 3600) -> contextlib.AbstractContextManager[Peer]:
    return _serve(_TokenEndpoint, {"expires_in": expires_in})


def site(host: str = "127.0.0.1") -> contextlib.AbstractContextManager[Peer]:
    return _serve(_Site, {}, host)


# the proxy


def _pipe(a: socket.socket, b: socket.socket, deadline: float) -> None:
    """Copy both ways until either side closes or ``deadline``."""
    socks = [a, b]
    while time.monotonic() < deadline:
        ready, _, _ = select.select(socks, [], [], 0.1)
        for s in ready:
            try:
                data = s.recv(65536)
            except OSError:
                return
            if not data:
                return
            (b if s is a else a).sendall(data)


class _Proxy(socketserver.BaseRequestHandler):
    """CONNECT host:port: a tunnel (``state['refuse']``: 403 instead); an absolute-form request:
    forwarded to its host (``Connection: close``). Records method, target and headers."""

    def handle(self) -> None:
        state, seen = self.server.state, self.server.seen  # type: ignore[attr-defined]
        conn: socket.socket = self.request
        conn.settimeout(PEER_TIMEOUT)
        head = b""
        while b"\r\n\r\n" not in head and len(head) < 65536:
            chunk = conn.recv(4096)
            if not chunk:
                return
            head += chunk
        head, _, rest = head.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers = [tuple(x.strip() for x in line.split(":", 1)) for line in lines[1:] if line]
        seen.add(method=method, target=target, headers=headers)
        deadline = time.monotonic() + PEER_TIMEOUT
        if method == "CONNECT":
            if state.get("refuse"):
                conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                return
            host, _, port = target.rpartition(":")
            with socket.create_connection((host.strip("[]"), int(port)), PEER_TIMEOUT) as up:
                conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                if rest:
                    up.sendall(rest)
                _pipe(conn, up, deadline)
            return
        parts = urlsplit(target)
        origin = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        kept = [f"{k}: {v}" for k, v in headers if k.lower() not in ("proxy-authorization",
                                                                      "connection")]  # fmt: skip
        request = "\r\n".join([f"{method} {origin} HTTP/1.1", *kept, "Connection: close"])
        with socket.create_connection((parts.hostname, parts.port or 80), PEER_TIMEOUT) as up:
            up.sendall(request.encode("latin-1") + b"\r\n\r\n" + rest)
            _pipe(conn, up, deadline)


class _ProxyServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


@contextlib.contextmanager
def proxy(refuse: bool = False) -> Iterator[Peer]:
    server = _ProxyServer(("127.0.0.1", 0), _Proxy)
    seen = Seen()
    state: dict[str, Any] = {"refuse": refuse}
    server.seen, server.state = seen, state  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              daemon=True)  # fmt: skip
    thread.start()
    try:
        yield Peer(server.server_address[1], seen, state)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(JOIN_TIMEOUT)
