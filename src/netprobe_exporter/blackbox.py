"""``/probe`` answers in blackbox_exporter 0.23's words: metric names, values and layout.

Names, HELP texts and which metrics appear when follow blackbox exactly, so its dashboards and
alerts read our output unchanged. Families are sorted by name and numbers are written the way
Go's Prometheus client writes them, so even a byte-level diff of the two answers shows only
measured values that differ.
"""

from __future__ import annotations

import ipaddress
import math
import time

import yaml

from netprobe_exporter.addresses import redact_url
from netprobe_exporter.logs import logfmt_value as _logfmt
from netprobe_exporter.metrics import escape_label_value
from netprobe_exporter.model import Module, ProbeResult, Sample, family_counts
from netprobe_exporter.probes import BlackboxFamily
from netprobe_exporter.probes.all import PROBERS
from netprobe_exporter.redact import module_doc

#: the families every prober's answer may have; the probers declare their own
_CORE = (
    BlackboxFamily("probe_success", "Displays whether or not the probe was a success"),
    BlackboxFamily("probe_duration_seconds",
                   "Returns how long the probe took to complete in seconds"),
    # blackbox after 0.28 (#1571): the timeout the probe was given
    BlackboxFamily("probe_timeout_seconds", "Returns how long the probe timeout is in seconds"),
    BlackboxFamily("probe_dns_lookup_time_seconds",
                   "Returns the time taken for probe dns lookup in seconds"),
    BlackboxFamily("probe_ip_protocol", "Specifies whether probe ip protocol is IP4 or IP6"),
    BlackboxFamily("probe_ip_addr_hash", "Specifies the hash of IP address. It's useful to "
                   "detect if the IP address changes."),
    # ours, for every_address modules
    BlackboxFamily("probe_addresses", "Addresses of the target's name probed, by family"),
    BlackboxFamily("probe_addresses_success",
                   "Addresses of the target's name whose probe succeeded, by family"),
)  # fmt: skip


def _header(name: str) -> str:
    """A family's HELP and TYPE lines, from the core's or its prober's declaration."""
    text = _HEADERS.get(name)
    if text is None:
        declared = (*_CORE, *(b for spec in PROBERS.values() for b in spec.blackbox_families))
        _HEADERS.update(
            (f.name, f"# HELP {f.name} {f.help}\n# TYPE {f.name} gauge\n") for f in declared
        )
        text = _HEADERS[name]
    return text


_HEADERS: dict[str, str] = {}


def go_float(value: float) -> str:
    """Format like Go's ``strconv.FormatFloat(v, 'g', -1, 64)`` as Prometheus' client does.

    Both start from the shortest digits that round-trip (Python's ``repr``); Go then writes an
    exponent when the decimal exponent is below -4 or at least 6, with two digits at least.
    """
    value = float(value)  # an int (a DNS serial) is written the same way
    if value != value:
        return "NaN"
    if value == math.inf or value == -math.inf:
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "0"
    if value.is_integer() and -1e6 < value < 1e6:  # 1, 4, 200: most values in a probe answer
        return str(int(value))
    text = repr(value)
    minus = ""
    if text[0] == "-":
        minus, text = "-", text[1:]
    mantissa, _, exp_text = text.partition("e")
    whole, _, frac = mantissa.partition(".")
    exp = int(exp_text) if exp_text else 0
    digits = (whole + frac).lstrip("0")
    stripped_whole = whole.lstrip("0")
    if stripped_whole:
        exp10 = len(stripped_whole) - 1 + exp
    else:
        exp10 = exp - (len(frac) - len(frac.lstrip("0"))) - 1
    digits = digits.rstrip("0") or "0"
    if exp10 < -4 or exp10 >= 6:
        lead = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{minus}{lead}e{'+' if exp10 >= 0 else '-'}{abs(exp10):02d}"
    point = exp10 + 1
    if point <= 0:
        return f"{minus}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return f"{minus}{digits}{'0' * (point - len(digits))}"
    return f"{minus}{digits[:point]}.{digits[point:]}"


def ip_hash(ip: str) -> float:
    """blackbox's ``probe_ip_addr_hash``: 32-bit FNV-1a of the address bytes."""
    addr = ipaddress.ip_address(ip)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    h = 0x811C9DC5
    for b in addr.packed:
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return float(h)


def _ns(seconds: float) -> float:
    """Durations at Go's resolution (time.Duration is whole nanoseconds)."""
    return round(seconds, 9)


def families(r: ProbeResult, timeout: float | None = None) -> dict[str, list[Sample]]:
    """Every family blackbox would emit for this result, by name (``probe_timeout_seconds``
    when the probe's timeout is given, as blackbox's main branch writes it)."""
    out: dict[str, list[Sample]] = {
        "probe_success": [({}, 1.0 if r.success else 0.0)],
        "probe_duration_seconds": [({}, _ns(r.duration))],
    }
    if timeout is not None:
        out["probe_timeout_seconds"] = [({}, timeout)]
    if r.addresses is not None:
        _every_address(out, r)
        return out
    if r.resolve_duration is not None:
        out["probe_dns_lookup_time_seconds"] = [({}, _ns(r.resolve_duration))]
        out["probe_ip_protocol"] = [({}, float(r.ip_protocol))]
        out["probe_ip_addr_hash"] = [({}, ip_hash(r.ip) if r.ip else 0.0)]
    if r.details is not None:
        r.details.blackbox(out, r)
    return out


def _every_address(out: dict[str, list[Sample]], r: ProbeResult) -> None:
    """An every_address probe: its lookup, counts per family, then each address's families
    with an ``ip`` label (``probe_success{ip=…}``…), next to the whole probe's own."""
    if r.resolve_duration is not None:
        out["probe_dns_lookup_time_seconds"] = [({}, _ns(r.resolve_duration))]
    addresses = r.addresses or []
    for ip, child in addresses:
        for name, samples in families(child).items():
            out.setdefault(name, []).extend(({**_exported(labels), "ip": ip}, v)
                                            for labels, v in samples)  # fmt: skip
    counts = family_counts((ip, child.success) for ip, child in addresses)
    out["probe_addresses"] = [({"family": f}, float(n)) for f, n, _ in counts]
    out["probe_addresses_success"] = [({"family": f}, float(up)) for f, _, up in counts]


def _exported(labels: dict[str, str]) -> dict[str, str]:
    """A family's own ``ip`` label (traceroute's hop addresses) as ``exported_ip``, as
    Prometheus renames a label that collides with one it sets."""
    if "ip" not in labels:
        return labels
    return {("exported_ip" if k == "ip" else k): v for k, v in labels.items()}


def render(r: ProbeResult, timeout: float | None = None) -> str:
    """The text exposition (0.0.4) of a probe result, families sorted as Go's registry does."""
    lines: list[str] = []
    for name, samples in sorted(families(r, timeout).items()):
        lines.append(_header(name))
        if len(samples) > 1:
            samples = sorted(samples, key=lambda s: sorted(s[0].items()))
        for labels, value in samples:
            if not labels:
                lines.append(f"{name} {go_float(value)}\n")
                continue
            lbl = ",".join(f'{k}="{escape_label_value(v)}"' for k, v in sorted(labels.items()))
            lines.append(f"{name}{{{lbl}}} {go_float(value)}\n")
    return "".join(lines)


def _ts(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z"


def module_yaml(module: Module) -> str:
    """The module as YAML, secrets redacted, only its own prober's section."""
    return yaml.safe_dump(module_doc(module), sort_keys=False, default_flow_style=False)


def debug_output(
    module: Module, target: str, timeout: float, r: ProbeResult, started: float
) -> str:
    """blackbox's ``debug=true`` page: the probe's log, the metrics, the module."""
    entries = list(r.log or [])
    return debug_page(
        module,
        target,
        timeout,
        entries,
        r.log_dropped,
        r.log_dropped_at,
        render(r, timeout),
        started,
    )


def debug_page(
    module: Module,
    target: str,
    timeout: float,
    entries: list[tuple[float, str, str, dict[str, object]]],
    dropped: int,
    dropped_at: int,
    metrics: str,
    started: float,
) -> str:
    """The debug page from its parts: a probe worker sends the notes and the metrics text, so
    the main process can make the page of a kept request only when ``/logs`` asks for it."""
    begin: dict[str, object] = {"probe": module.prober, "timeout_seconds": go_float(timeout)}
    head: list[tuple[float, str, str, dict[str, object]]] = [
        (started, "info", "Beginning probe", begin)
    ]
    lines = []
    shown = redact_url(target)
    entries = list(entries)
    if dropped:  # the log was full: say how much is missing, where it is missing
        entries.insert(dropped_at, (0.0, "", f"… {dropped} more lines", {}))
    for ts, level, msg, fields in head + entries:
        if not level:
            lines.append(msg + "\n")
            continue
        extra = "".join(f" {k}={_logfmt(v)}" for k, v in fields.items())
        lines.append(
            f"ts={_ts(ts)} module={_logfmt(module.name)} target={_logfmt(shown)} "
            f"level={level} msg={_logfmt(msg)}{extra}\n"
        )
    return (
        "Logs for the probe:\n" + "".join(lines)
        + "\n\n\nMetrics that would have been returned:\n" + metrics
        + "\n\n\nModule configuration:\n" + module_yaml(module)
    )  # fmt: skip
