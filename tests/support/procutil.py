"""Helpers for process-level tests: start the exporter (and Prometheus) as real subprocesses.

Everything here talks to 127.0.0.1 only, bounds every wait with a deadline and kills what it
started. Blocking I/O (subprocess, urllib, sockets) is fine: these tests run no reactor.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TypeVar

import pytest

# re-exported: the process tests read metrics through these
from tests.support.metrics import Sample, parse_samples
from tests.support.metrics import find as find
from tests.support.metrics import value as value

T = TypeVar("T")

START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
_LISTENING = re.compile(r"\blevel=info msg=listening address=\S+ port=(\d+)")


# waiting


def wait_for(
    predicate: Callable[[], T | None],
    timeout: float,
    what: str,
    interval: float = 0.05,
) -> T:
    """Poll ``predicate`` until it returns a truthy value; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout:g}s waiting for {what} (last value: {last!r})")
        time.sleep(interval)


# sockets


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def closed_port() -> int:
    """A port nobody listens on: connects to it are refused.

    It lies below the kernel's ephemeral range, so no process that binds port 0 (another
    exporter, Prometheus, a test server) can take it meanwhile, and no outgoing connection can
    use it as its source port (which would make a connect to it a TCP self-connect)."""
    low, _ = _ephemeral_range()
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(10000, max(10001, low))
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no closed port found below the ephemeral range")


@contextlib.contextmanager
def loopback_listener() -> Iterator[int]:
    """A listening socket on 127.0.0.1 (the kernel completes handshakes; nobody accepts)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", 0))
        s.listen(1024)
        yield int(s.getsockname()[1])
    finally:
        s.close()


def tcp_socket_states(port: int, local: bool) -> list[str]:
    """The states (hex, as ``/proc/net/tcp`` writes them: 01 ESTABLISHED, 06 TIME_WAIT,
    0A LISTEN) of this host's TCP sockets whose local (or remote) port is ``port``."""
    column = 1 if local else 2
    states = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[column].rsplit(":", 1)[1], 16) == port:
                states.append(fields[3])
    return states


def port_is_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


# HTTP


@dataclass(frozen=True)
class Response:
    status: int
    headers: Mapping[str, str]  # lower-case names
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")


def http(
    url: str,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    data: bytes | None = None,
    timeout: float = 5.0,
) -> Response:
    """One request; HTTP error statuses are returned, not raised. No automatic decompression."""
    if method in ("POST", "PUT") and data is None:
        data = b""
    req = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            hdrs = {k.lower(): v for k, v in resp.headers.items()}
            return Response(resp.status, hdrs, resp.read())
    except urllib.error.HTTPError as err:
        hdrs = {k.lower(): v for k, v in err.headers.items()}
        body = err.read()
        err.close()
        return Response(err.code, hdrs, body)


# the exposition format (parsed by tests.support.metrics)


def _unescape(value: str) -> str:
    return value.replace("\\n", "\n").replace('\\"', '"').replace("\\\\", "\\")


def type_lines(text: str) -> list[str]:
    return sorted(line for line in text.splitlines() if line.startswith("# TYPE "))


# logs

_LOGFMT_PAIR = re.compile(r'\s*([^\s=]+)=(?:"((?:[^"\\]|\\.)*)"|(\S*))')


def parse_logfmt(line: str) -> dict[str, str]:
    """One logfmt line as a dict; quoted values are unescaped."""
    out: dict[str, str] = {}
    pos = 0
    while pos < len(line):
        m = _LOGFMT_PAIR.match(line, pos)
        if m is None:
            raise AssertionError(f"not a logfmt line: {line!r}")
        key, quoted, bare = m.groups()
        out[key] = _unescape(quoted) if quoted is not None else bare
        pos = m.end()
    return out


# the exporter


@dataclass
class Exporter:
    proc: subprocess.Popen[bytes]
    stderr_path: Path
    port: int = 0
    _stderr: IO[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def log_records(self) -> list[dict[str, str]]:
        return [parse_logfmt(line) for line in self.stderr().splitlines() if line.strip()]

    def get(self, path: str, headers: Mapping[str, str] | None = None) -> Response:
        return http(self.url + path, headers=headers)

    def post(self, path: str) -> Response:
        return http(self.url + path, method="POST")

    def metrics(self) -> list[Sample]:
        resp = self.get("/metrics")
        assert resp.status == 200, resp
        return parse_samples(resp.text)

    def wait_listening(self, timeout: float = START_TIMEOUT) -> int:
        def bound() -> int | None:
            m = _LISTENING.search(self.stderr())
            if m is not None:
                return int(m.group(1))
            if self.proc.poll() is not None:
                pytest.fail(f"exporter exited {self.proc.returncode} early:\n{self.stderr()}")
            return None

        self.port = wait_for(bound, timeout, "the exporter's listening log line")
        return self.port

    def wait_exit(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"exporter still running {timeout:g}s later:\n{self.stderr()}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=STOP_TIMEOUT)
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None


def child_pids(pid: int) -> list[int]:
    """The live processes whose parent is ``pid`` (an exporter's probe workers), sorted."""
    found: list[int] = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return sorted(found)


def exporter_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "netprobe_exporter", *args]


def run_exporter(*args: str, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
    """Run the exporter to completion (``--version``, ``--config.check``, bad flags, ...)."""
    return subprocess.run(
        exporter_command(*args),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_env(),
        check=False,
    )


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Processes:
    """Starts exporters (and other daemons) for one test and kills them all at teardown."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.exporters: list[Exporter] = []
        self.others: list[subprocess.Popen[bytes]] = []
        self._files: list[IO[bytes]] = []

    def spawn_exporter(self, *args: str) -> Exporter:
        """Start an exporter; do not wait for anything."""
        n = len(self.exporters)
        path = self.workdir / f"exporter{n}.stderr"
        err = path.open("wb")
        proc = subprocess.Popen(
            exporter_command(*args),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=_env(),
            cwd=self.workdir,
        )
        exporter = Exporter(proc, path, _stderr=err)
        self.exporters.append(exporter)
        return exporter

    def start_exporter(self, *args: str) -> Exporter:
        """Start an exporter on a free loopback port and wait for its listening log line."""
        if not any(a.startswith("--web.listen-address") for a in args):
            args = ("--web.listen-address=127.0.0.1:0", *args)
        exporter = self.spawn_exporter(*args)
        exporter.wait_listening()
        return exporter

    def spawn(self, argv: Sequence[str], name: str) -> tuple[subprocess.Popen[bytes], Path]:
        path = self.workdir / f"{name}.log"
        out = path.open("wb")
        self._files.append(out)
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
        )
        self.others.append(proc)
        return proc, path

    def close(self) -> None:
        for exporter in self.exporters:
            exporter.kill()
        for proc in self.others:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=STOP_TIMEOUT)
        for f in self._files:
            f.close()


# external binaries


def require_binary(name: str, package: str = "prometheus") -> str:
    """Path of a binary from a Debian package (``prometheus`` unless said otherwise).

    Missing: a failure under CI (the environment must provide it), a skip elsewhere.
    """
    path = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
    if path is not None:
        return path
    message = f"{name} not found: apt-get install {package}"
    if os.environ.get("CI"):
        pytest.fail(message + " (required when CI is set)")
    pytest.skip(message)


def start_prometheus(
    procs: Processes, config: Path, workdir: Path, *extra: str
) -> tuple[str, Path]:
    """Start a real Prometheus on a free loopback port with ``config`` (and ``extra`` flags);
    wait until ready.

    Returns its base URL and log file.
    """
    prometheus = require_binary("prometheus")
    port = free_port()
    proc, log = procs.spawn(
        [
            prometheus,
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            *extra,
        ],
        "prometheus",
    )
    base = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"prometheus exited {proc.returncode}:\n{log.read_text()}")
        try:
            return http(base + "/-/ready", timeout=1).status == 200
        except OSError:
            return False

    wait_for(ready, 20, "prometheus to be ready", interval=0.2)
    return base, log


def _end_by_stdin(proc: subprocess.Popen[bytes]) -> None:
    """Stop a helper process that exits when its stdin closes (killed after 10 s)."""
    assert proc.stdin is not None
    proc.stdin.close()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@contextlib.contextmanager
def dns_zone_process(
    seconds: float = 120, cert: Path | None = None, key: Path | None = None
) -> Iterator[tuple[str, str | None]]:
    """The test DNS zone (tests/support/dns_zone_server.py) in a process of its own: yields its
    ``127.0.0.1:PORT`` (UDP and TCP) and, given a certificate and key, its DNS-over-TLS one."""
    here = Path(__file__).resolve().parent
    tls = [str(cert), str(key)] if cert is not None and key is not None else []
    proc = subprocess.Popen(
        [sys.executable, str(here / "dns_zone_server.py"), str(seconds), *tls],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=here,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        address = proc.stdout.readline().decode().strip()
        dot = proc.stdout.readline().decode().strip() if tls else None
        assert address.startswith("127.0.0.1:"), address
        yield address, dot
    finally:
        _end_by_stdin(proc)


@dataclass
class RecordsServer:
    """tests/support/dns_records_server.py running: where it serves, and its records and counts."""

    address: str  # 127.0.0.1:PORT
    records_file: Path
    stats_file: Path

    def write(self, records: Mapping[str, Sequence[str]]) -> None:
        """Replace the records served (atomically: the server reads the file at each query)."""
        tmp = self.records_file.with_name(self.records_file.name + ".tmp")
        tmp.write_text(json.dumps({k: list(v) for k, v in records.items()}))
        os.replace(tmp, self.records_file)

    def counts(self) -> dict[str, int]:
        """Queries received so far per ``"name TYPE"`` (``"every.example.test AAAA"``)."""
        return {str(k): int(v) for k, v in json.loads(self.stats_file.read_text()).items()}


@contextlib.contextmanager
def dns_records_process(
    workdir: Path,
    records: Mapping[str, Sequence[str]],
    ttl: int,
    negative_ttl: int,
    seconds: float = 120,
) -> Iterator[RecordsServer]:
    """A DNS server process on 127.0.0.1 whose records the test changes (``write``) and whose
    query counts it reads (``counts``); stopped (stdin closed, killed if it lingers) at exit."""
    here = Path(__file__).resolve().parent
    server = RecordsServer("", workdir / "dns_records.json", workdir / "dns_stats.json")
    server.write(records)
    proc = subprocess.Popen(
        [sys.executable, str(here / "dns_records_server.py"), str(server.records_file),
         str(server.stats_file), str(ttl), str(negative_ttl), str(seconds)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=workdir,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        server.address = proc.stdout.readline().decode().strip()
        assert server.address.startswith("127.0.0.1:"), server.address
        yield server
    finally:
        _end_by_stdin(proc)
