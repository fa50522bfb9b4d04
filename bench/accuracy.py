"""Connect-latency accuracy: reported minus true latency, ours vs blackbox, idle and loaded.

The truth comes from bench/tundelay.py: inside a network namespace, a TUN responder answers every
SYN to 198.18.6.X after exactly D ms (default 198.18.6.10 = 5 ms, 198.18.6.20 = 20 ms). Both
exporters run inside that namespace; nothing here leaves it. For each target the benchmark
reports the error e = reported - D, in µs:

- ``continuous``: our ``netprobe_connect_duration_seconds`` (interval 100 ms), and
  ``tcpi_rtt``: our ``netprobe_tcp_handshake_rtt_seconds`` (the kernel's smoothed RTT read right
  after connect). Both from bucket deltas over the measured window; each target's buckets run
  from D - 0.5 ms to D + 10 ms in 50 µs steps. Signed-error quantiles are histogram_quantile
  (linear within a 50 µs bin) minus D. |e| is binned exactly: the bins [D - a, D + a] for
  a = 0, 50 µs, 100 µs, ... give a histogram of |e| with 50 µs bins up to 0.5 ms; past 0.5 ms
  only D + a is known, so samples below D - 0.5 ms (counted as ``below``; none expected) are
  put above every finite bin (an upper bound on the |e| quantiles; a quantile that lands among
  them prints as ``>500``). A quantile beyond D + 10 ms prints as ``>10000`` (``<-500`` below
  D - 0.5 ms). The mean is exact (from ``_sum``/``_count``).
- ``ours /probe``, ``blackbox /probe``: ``probe_duration_seconds`` of sequential
  ``/probe?module=tcp_connect&target=IP:80`` requests, interleaved request by request with each
  other and with ``socket`` (a plain blocking connect() from this process: the rig and kernel
  path's own floor under the same conditions). Nearest-rank quantiles of the samples.
- ``rig err``: the responder's own scheduling error over the same block (SYN-ACK write time
  minus SYN read time + D): how exact the truth itself was.

Phases, one after the other in the same run: ``idle`` (only the two measured targets), then
``load``: 2,000 more continuous targets at 1 s in our exporter (loopback listeners inside the
namespace, drained by a separate process) and ``wrk -t1 -c4`` against blackbox's /probe on a
loopback target, both running through the whole phase (window and /probe series), so both
exporters are measured on the same loaded machine. Our exporter is restarted between phases;
blackbox runs throughout.

    python bench/accuracy.py                      # ~2.5 minutes
    python bench/accuracy.py --window 20 --requests 100 --load 1000
"""

from __future__ import annotations

import argparse
import contextlib
import math
import multiprocessing as mp
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from common import (
    Exporter,
    cpu_seconds,
    free_port,
    histogram,
    loopback_targets,
    percentile,
    quantile,
    samples,
    table,
    total,
    write_json,
)
from tundelay import DelayRig, parse_delays

STEP = 0.00005  # 50 µs bucket resolution
BELOW = 0.0005  # buckets start at D - 0.5 ms
ABOVE = 0.010  # and end at D + 10 ms
MODULES = """modules:
  tcp_connect:
    prober: tcp
    timeout: 2s
    tcp:
      preferred_ip_protocol: ip4
"""
CONNECT = "netprobe_connect_duration_seconds"
HANDSHAKE = "netprobe_tcp_handshake_rtt_seconds"
QS = (0.5, 0.99)


# --------------------------------------------------------------------------------------------
# Configs


def fine_buckets(d: float) -> list[float]:
    """D - 0.5 ms .. D + 10 ms in 50 µs steps (seconds, strictly increasing)."""
    k_lo, k_hi = round(BELOW / STEP), round(ABOVE / STEP)
    return [round(d + k * STEP, 7) for k in range(-k_lo, k_hi + 1)]


def our_config(measured: dict[str, float], load_ports: Sequence[int]) -> str:
    lines = [MODULES, "targets:"]
    for ip, d in measured.items():
        lines.append(f"  - address: {ip}:80")
        lines.append("    interval: 100ms")
        lines.append(f"    buckets: [{', '.join(repr(b) for b in fine_buckets(d))}]")
    for port in load_ports:  # one bucket: keeps /metrics small, so scrapes stall the reactor less
        lines.append(f"  - {{address: '127.0.0.1:{port}', interval: 1s, buckets: [0.01]}}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# Processes inside the namespace


def wait_ready(rig: DelayRig, ex: Exporter, path: str, what: str, log: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            with rig.entered():
                ex.get(path)
            return
        except OSError:
            if time.monotonic() > deadline or ex.proc.poll() is not None:
                tail = log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{what} did not start:\n{tail}") from None
            time.sleep(0.1)


def start_exporter(
    stack: contextlib.ExitStack, rig: DelayRig, tmp: Path, name: str, config: str
) -> Exporter:
    """Our exporter inside the namespace, on 127.0.0.1 there; stopped when ``stack`` closes."""
    path = tmp / f"{name}.yml"
    path.write_text(config)
    with rig.entered():
        port = free_port()
    log_path = tmp / f"{name}.log"
    log = stack.enter_context(open(log_path, "wb"))  # noqa: SIM115
    cmd = [sys.executable, "-m", "netprobe_exporter", f"--config.file={path}",
           f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"]  # fmt: skip
    proc = _popen(stack, rig, cmd, log)
    ex = Exporter(proc, port, path)
    wait_ready(rig, ex, "/-/ready", name, log_path)
    return ex


def start_blackbox(stack: contextlib.ExitStack, rig: DelayRig, tmp: Path) -> Exporter:
    path = tmp / "blackbox.yml"
    path.write_text(MODULES)
    with rig.entered():
        port = free_port()
    log_path = tmp / "blackbox.log"
    log = stack.enter_context(open(log_path, "wb"))  # noqa: SIM115
    cmd = ["prometheus-blackbox-exporter", f"--config.file={path}",
           f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"]  # fmt: skip
    proc = _popen(stack, rig, cmd, log)
    ex = Exporter(proc, port, path)
    wait_ready(rig, ex, "/-/healthy", "blackbox_exporter", log_path)
    return ex


def _popen(
    stack: contextlib.ExitStack, rig: DelayRig, cmd: Sequence[str], log: IO[bytes]
) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([*rig.exec_prefix(), *cmd], stdout=log, stderr=log)

    def stop() -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    stack.callback(stop)
    return proc


def drain_in_namespace(
    stack: contextlib.ExitStack, rig: DelayRig, count: int, seconds: float
) -> list[int]:
    """``count`` loopback listeners inside the namespace: common.loopback_targets forked from a
    thread that is in the namespace; verified (the child's net namespace, and the LISTEN count)."""
    before = {p.pid for p in mp.active_children()}
    with rig.entered():
        ports = stack.enter_context(loopback_targets(count, seconds))
    children = [p for p in mp.active_children() if p.pid not in before]
    ns_ino = os.stat(f"/run/netns/{rig.netns}").st_ino
    if len(children) != 1 or os.stat(f"/proc/{children[0].pid}/ns/net").st_ino != ns_ino:
        raise RuntimeError("the drain process is not in the rig's network namespace")
    listening = rig.socket_states().get("LISTEN", 0)
    if listening < count:
        raise RuntimeError(f"only {listening} listeners in the namespace, expected {count}")
    return ports


class Wrk:
    """``wrk`` inside the namespace for at most ``seconds``; ``stop()`` ends it (SIGINT: wrk
    still prints its summary) and parses the summary."""

    def __init__(self, rig: DelayRig, url: str, connections: int, seconds: float) -> None:
        self.proc = subprocess.Popen(
            [*rig.exec_prefix(), "wrk", "-t1", f"-c{connections}", f"-d{seconds:.0f}s", url],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        self.result: dict[str, Any] = {}

    def stop(self) -> dict[str, Any]:
        if self.result:
            return self.result
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            out, _ = self.proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate(timeout=5)
        rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
        n = re.search(r"(\d+) requests in ([\d.]+)(m?s)", out)
        bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        errors = re.search(r"Socket errors: (.*)", out)
        self.result = {
            "requests_per_s": float(rps.group(1)) if rps else None,
            "requests": int(n.group(1)) if n else None,
            "seconds": (float(n.group(2)) / (1000 if n.group(3) == "ms" else 1)) if n else None,
            "non_2xx": int(bad.group(1)) if bad else 0,
            "socket_errors": errors.group(1).strip() if errors else None,
        }
        if rps is None:
            self.result["output"] = out[-1000:]
        return self.result


# --------------------------------------------------------------------------------------------
# Errors from fine buckets


def target_hist(text: str, name: str, target: str) -> list[tuple[float, float]]:
    """Cumulative ``(le, count)`` of one target's histogram."""
    return histogram(text, name, target=target)


def _us(seconds: float | None) -> float | None:
    return None if seconds is None or math.isnan(seconds) else round(seconds * 1e6, 1)


def bucket_errors(text0: str, text1: str, name: str, target: str, d: float) -> dict[str, Any]:
    """Error stats of one target's histogram ``name`` over the window between two scrapes."""
    h0, h1 = target_hist(text0, name, target), target_hist(text1, name, target)
    if not h1:
        return {"n": 0, "method": "buckets", "missing": True}
    prev = dict(h0)
    delta = [(le, c - prev.get(le, 0.0)) for le, c in h1]
    finite = [(le, c) for le, c in delta if le != math.inf]
    n = delta[-1][1]
    k0 = round(BELOW / STEP)  # index of the bucket whose bound is D
    if len(finite) != len(fine_buckets(d)) or abs(finite[k0][0] - d) > STEP / 10:
        raise RuntimeError(f"{name}{{{target}}}: unexpected buckets")
    cum = [c for _, c in finite]
    below, above = cum[0], n - cum[-1]
    # |e| histogram: A(k) = #{|x - D| <= k*STEP}; exact for k <= k0, then below-range excluded
    abs_hist: list[tuple[float, float]] = []
    for k in range(len(cum) - k0):
        lower = cum[k0 - k] if k <= k0 else cum[0]
        abs_hist.append((k * STEP, cum[k0 + k] - lower))
    abs_hist.append((math.inf, n))
    s0 = total(text0, f"{name}_sum", target=target)
    s1 = total(text1, f"{name}_sum", target=target)
    out: dict[str, Any] = {"n": int(n), "method": "buckets"}
    for q in QS:
        tag = f"p{round(q * 100)}"
        rank = q * n
        signed, s_out = None, "above" if rank > cum[-1] else "below" if rank <= below else None
        if n and s_out is None:
            signed = quantile(q, [], delta) - d
        # past the last finite |e| bin: > 10 ms, or, if the rank lands among the samples below
        # D - 0.5 ms, only known to be > 0.5 ms
        absolute, a_out = None, None
        if rank > abs_hist[-2][1] + below:
            a_out = "above"
        elif rank > abs_hist[-2][1]:
            a_out = "below"
        if n and a_out is None:
            absolute = quantile(q, [], abs_hist)
        out[f"err_{tag}_us"] = _us(signed)
        out[f"abs_err_{tag}_us"] = _us(absolute)
        out[f"err_{tag}_out_of_range"] = s_out if n else None
        out[f"abs_err_{tag}_out_of_range"] = a_out if n else None
    out["mean_err_us"] = _us((s1 - s0) / n - d) if n else None
    out["below_range"] = int(below)
    out["above_range"] = int(above)
    return out


def sample_errors(values: Sequence[float], d: float, failures: int) -> dict[str, Any]:
    errs = [v - d for v in values]
    absolute = [abs(e) for e in errs]
    out: dict[str, Any] = {"n": len(errs), "method": "samples", "failures": failures}
    for q in QS:
        tag = f"p{round(q * 100)}"
        out[f"err_{tag}_us"] = _us(percentile(errs, q)) if errs else None
        out[f"abs_err_{tag}_us"] = _us(percentile(absolute, q)) if errs else None
    out["mean_err_us"] = _us(sum(errs) / len(errs)) if errs else None
    out["max_err_us"] = _us(max(errs)) if errs else None
    return out


# --------------------------------------------------------------------------------------------
# /probe series


def probe_duration(ex: Exporter, ip: str) -> float | None:
    """One /probe; its probe_duration_seconds, or None when probe_success is not 1."""
    body, _ = ex.get(f"/probe?module=tcp_connect&target={ip}:80")
    values = {n: v for n, _, v in samples(body.decode())}
    if values.get("probe_success") != 1.0:
        return None
    return values.get("probe_duration_seconds")


def socket_connect(ip: str) -> float | None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_SYNCNT, 1)
        s.settimeout(2.0)
        t0 = time.perf_counter()
        try:
            s.connect((ip, 80))
        except OSError:
            return None
        return time.perf_counter() - t0


def probe_series(
    rig: DelayRig, ours: Exporter, bb: Exporter, delays: dict[str, float], n: int, budget: float
) -> tuple[dict[str, Any], bool]:
    """``n`` rounds; each round, for every address (rotating), ours, blackbox and a plain socket
    in rotating order. Returns per address and method the samples and failure count."""
    methods = ("ours /probe", "blackbox /probe", "socket")
    vals: dict[str, dict[str, list[float]]] = {ip: {m: [] for m in methods} for ip in delays}
    fails = {ip: dict.fromkeys(methods, 0) for ip in delays}
    ips = list(delays)
    deadline = time.monotonic() + budget
    truncated = False
    with rig.entered():
        for i in range(n):
            if time.monotonic() > deadline:
                truncated = True
                break
            for ip in ips[i % len(ips) :] + ips[: i % len(ips)]:
                order = methods[i % 3 :] + methods[: i % 3]
                for m in order:
                    if m == "socket":
                        v = socket_connect(ip)
                    else:
                        v = probe_duration(ours if m == "ours /probe" else bb, ip)
                    if v is None:
                        fails[ip][m] += 1
                    else:
                        vals[ip][m].append(v)
    out = {
        ip: {m: sample_errors(vals[ip][m], d, fails[ip][m]) for m in methods}
        for ip, d in delays.items()
    }
    return out, truncated


# --------------------------------------------------------------------------------------------
# A phase


def rig_error(stats: dict[str, Any], ip: str) -> dict[str, Any]:
    dest = stats["destinations"].get(ip, {})
    return dict(dest.get("error_us", {"n": 0}))


def run_phase(
    rig: DelayRig,
    bb: Exporter,
    tmp: Path,
    phase: str,
    delays: dict[str, float],
    args: argparse.Namespace,
) -> dict[str, Any]:
    load = args.load if phase == "load" else 0
    result: dict[str, Any] = {"phase": phase}
    with contextlib.ExitStack() as stack:
        life = args.warmup + args.window + args.probe_budget + 90
        ports = drain_in_namespace(stack, rig, load + 1, life) if load else []
        t_start = time.monotonic()
        ours = start_exporter(
            stack, rig, tmp, f"netprobe-{phase}", our_config(delays, ports[:load])
        )
        result["startup_s"] = round(time.monotonic() - t_start, 2)
        wrk: Wrk | None = None
        if load:
            url = f"{bb.base}/probe?module=tcp_connect&target=127.0.0.1:{ports[-1]}"
            wrk = Wrk(rig, url, args.bb_connections, life)
            stack.callback(wrk.stop)
        time.sleep(args.warmup)

        # continuous: a window between two scrapes
        with rig.entered():
            text0 = ours.get("/metrics")[0].decode()
        rig.reset_stats()
        cpu0 = {"ours": cpu_seconds(ours.proc.pid), "blackbox": cpu_seconds(bb.proc.pid)}
        t0 = time.monotonic()
        time.sleep(args.window)
        with rig.entered():
            text1 = ours.get("/metrics")[0].decode()
        t1 = time.monotonic()
        stats = rig.responder_stats()
        cont: dict[str, Any] = {}
        for ip, d in delays.items():
            cont[ip] = {
                "connect": bucket_errors(text0, text1, CONNECT, f"{ip}:80", d),
                "tcpi_rtt": bucket_errors(text0, text1, HANDSHAKE, f"{ip}:80", d),
                "rig_error_us": rig_error(stats, ip),
            }
        elapsed = t1 - t0
        probes = total(text1, "netprobe_probes_total") - total(text0, "netprobe_probes_total")
        ok = total(text1, "netprobe_probes_total", result="success") - total(
            text0, "netprobe_probes_total", result="success"
        )
        skipped = total(text1, "netprobe_scheduler_skipped_probes_total") - total(
            text0, "netprobe_scheduler_skipped_probes_total"
        )
        lag0 = histogram(text0, "netprobe_scheduler_lag_seconds")
        lag1 = histogram(text1, "netprobe_scheduler_lag_seconds")
        result["continuous"] = cont
        failed = {
            res: total(text1, "netprobe_probes_total", result=res)
            - total(text0, "netprobe_probes_total", result=res)
            for res in ("timeout", "refused", "unreachable", "error")
        }
        result["ours_background"] = {
            "window_s": round(elapsed, 2),
            "targets": load + len(delays),
            "scheduled_per_s": load + 10 * len(delays),
            "achieved_per_s": round(probes / elapsed, 1),
            "success_ratio": round(ok / probes, 5) if probes else None,
            "failed_by_result": {k: v for k, v in failed.items() if v},
            "skipped": skipped,
            "lag_p50_ms": round(quantile(0.5, lag0, lag1) * 1000, 3),
            "lag_p99_ms": round(quantile(0.99, lag0, lag1) * 1000, 3),
            "cpu_percent": round((cpu_seconds(ours.proc.pid) - cpu0["ours"]) / elapsed * 100, 1),
        }
        result["blackbox_cpu_percent_window"] = round(
            (cpu_seconds(bb.proc.pid) - cpu0["blackbox"]) / elapsed * 100, 1
        )

        # /probe series (continuous targets and background load keep running)
        rig.reset_stats()
        t2 = time.monotonic()
        series, truncated = probe_series(rig, ours, bb, delays, args.requests, args.probe_budget)
        result["probe_series_s"] = round(time.monotonic() - t2, 2)
        stats = rig.responder_stats()
        for ip in delays:
            series[ip]["rig_error_us"] = rig_error(stats, ip)
        result["probe"] = series
        result["probe_truncated_by_budget"] = truncated
        if wrk is not None:
            result["blackbox_background"] = {
                "tool": f"wrk -t1 -c{args.bb_connections} (whole phase)",
                **wrk.stop(),
            }
        if ours.proc.poll() is not None:
            raise RuntimeError(f"our exporter exited during the {phase} phase")
    return result


# --------------------------------------------------------------------------------------------
# Report

LEGEND = """
e p50/p99: quantiles of the signed error e; |e| p50/p99: quantiles of |e|; mean e: exact mean.
continuous = netprobe_connect_duration_seconds, tcpi_rtt = netprobe_tcp_handshake_rtt_seconds:
  bucket deltas over the window; quantiles interpolated within 50 µs bins (histogram_quantile);
  |e| from the buckets folded around D (exact 50 µs bins of |e| up to 0.5 ms, D+a beyond).
  >10000: beyond D+10 ms (the last bucket); >500: lands among samples below D-0.5 ms.
/probe = probe_duration_seconds of each answer; socket = blocking connect() wall time in this
  process (the floor); these three interleaved request by request; nearest-rank quantiles.
rig err p50/p99: the responder's own SYN-ACK timing error (µs) over the same block.
"""


def _cell(stats: dict[str, Any], key: str) -> str:
    v = stats.get(f"{key}_us")
    if v is None:
        side = stats.get(f"{key}_out_of_range")
        if side == "above":
            return f">{ABOVE * 1e6:.0f}"
        if side == "below":
            return f">{BELOW * 1e6:.0f}" if key.startswith("abs") else f"<-{BELOW * 1e6:.0f}"
        return "-"
    return f"{v:.0f}"


def _rig_cell(err: dict[str, Any]) -> str:
    if not err.get("n"):
        return "-"
    return f"{err['p50']:.0f} / {err['p99']:.0f}"


def report_rows(phases: Sequence[dict[str, Any]], delays: dict[str, float]) -> list[list[object]]:
    rows: list[list[object]] = [
        ["phase", "what", "D ms", "n", "e p50", "e p99", "|e| p50", "|e| p99", "mean e",
         "rig err p50/p99"],
    ]  # fmt: skip
    for ph in phases:
        for ip, d in delays.items():
            c = ph["continuous"][ip]
            p = ph["probe"][ip]
            blocks = [
                ("continuous", c["connect"], c["rig_error_us"]),
                ("tcpi_rtt", c["tcpi_rtt"], c["rig_error_us"]),
                ("ours /probe", p["ours /probe"], p["rig_error_us"]),
                ("blackbox /probe", p["blackbox /probe"], p["rig_error_us"]),
                ("socket (floor)", p["socket"], p["rig_error_us"]),
            ]
            for what, st, rig in blocks:
                n = f"{st['n']}" + (f" ({st['failures']} failed)" if st.get("failures") else "")
                mean = st.get("mean_err_us")
                rows.append([ph["phase"], what, f"{d * 1000:g}", n, _cell(st, "err_p50"),
                             _cell(st, "err_p99"), _cell(st, "abs_err_p50"),
                             _cell(st, "abs_err_p99"), "-" if mean is None else f"{mean:.0f}",
                             _rig_cell(rig)])  # fmt: skip
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--delays", default="198.18.6.10=5,198.18.6.20=20", help="IP=MS,...")
    ap.add_argument("--window", type=float, default=35.0, help="continuous window per phase, s")
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--requests", type=int, default=200, help="/probe rounds per phase")
    ap.add_argument("--probe-budget", type=float, default=60.0, help="max s of /probe series")
    ap.add_argument("--load", type=int, default=2000, help="background targets at 1 s")
    ap.add_argument("--bb-connections", type=int, default=4, help="wrk connections (blackbox)")
    args = ap.parse_args()
    actions = parse_delays(args.delays)
    if any(a.kind != "accept" for a in actions.values()):
        sys.exit("--delays: accepting destinations only (IP=MS)")
    for tool in ("wrk", "prometheus-blackbox-exporter", "ip"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found")
    budget = 2 * (args.warmup + args.window + args.probe_budget + 90) + 60
    phases: list[dict[str, Any]] = []
    with (
        DelayRig(actions, max_seconds=budget) as rig,
        tempfile.TemporaryDirectory() as tmp_name,
        contextlib.ExitStack() as stack,
    ):
        delays = {ip: rig.truth(ip) for ip in actions}
        tmp = Path(tmp_name)
        setup = {k: v for k, v in rig.responder_setup.items() if k != "ready"}
        print(f"rig {rig.netns}: {', '.join(f'{ip} D={d * 1000:g} ms' for ip, d in delays.items())}"
              f"; responder {setup.get('sched')}", flush=True)  # fmt: skip
        bb = start_blackbox(stack, rig, tmp)
        for phase in ("idle", "load"):
            print(f"phase {phase}: warm-up {args.warmup:g} s, window {args.window:g} s, "
                  f"then {args.requests} /probe rounds", flush=True)  # fmt: skip
            phases.append(run_phase(rig, bb, tmp, phase, delays, args))
        if bb.proc.poll() is not None:
            raise RuntimeError("blackbox_exporter exited during the run")
    result = {
        "delays_ms": {ip: a.delay_ms for ip, a in actions.items()},
        "responder": setup,
        "window_s": args.window,
        "warmup_s": args.warmup,
        "requests_per_phase": args.requests,
        "load_targets": args.load,
        "units": "µs; e = reported - D",
        "method": {
            "continuous/tcpi_rtt": "bucket deltas over the window (50 µs buckets from D-0.5 ms "
            "to D+10 ms); signed quantiles = histogram_quantile - D; |e| quantiles from the "
            "exact |e| histogram (50 µs bins), samples below D-0.5 ms counted as beyond every "
            "finite bin; mean exact from _sum/_count",
            "probe/socket": "nearest-rank quantiles of per-request samples "
            "(probe_duration_seconds, or connect() wall time)",
            "rig_error_us": "responder's SYN-ACK write time - (SYN read time + D), same block",
        },
        "phases": phases,
    }
    path = write_json("accuracy", result)
    print()
    print("error e = reported - D, µs (continuous and tcpi_rtt: from 50 µs buckets; "
          "the rest: per-request samples)")  # fmt: skip
    print(table(report_rows(phases, delays)))
    print(LEGEND)
    for ph in phases:
        bg = ph["ours_background"]
        failed = f" failed {bg['failed_by_result']}" if bg["failed_by_result"] else ""
        print(
            f"{ph['phase']}: ours: {bg['achieved_per_s']} probes/s of {bg['scheduled_per_s']}"
            f" scheduled, success {bg['success_ratio']}{failed}, skipped {bg['skipped']:g},"
            f" lag p50/p99 {bg['lag_p50_ms']}/{bg['lag_p99_ms']} ms, CPU {bg['cpu_percent']}%;"
            f" blackbox CPU {ph['blackbox_cpu_percent_window']}% (continuous window)"
        )
        bbl = ph.get("blackbox_background")
        if bbl:
            print(
                f"  blackbox background: wrk -c{args.bb_connections} {bbl['requests_per_s']} "
                f"req/s (non-2xx {bbl['non_2xx']}, socket errors {bbl['socket_errors']})"
            )
        cut = " (truncated by --probe-budget)" if ph["probe_truncated_by_budget"] else ""
        print(f"  /probe series: {ph['probe_series_s']} s{cut}")
    print(f"written: {path}")


if __name__ == "__main__":
    main()
