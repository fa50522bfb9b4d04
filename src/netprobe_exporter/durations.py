"""Duration strings in Prometheus syntax (``1h30m``, ``500ms``), plus Go's (``1.5s``, ``250us``).

blackbox.yml files use Go durations for ``timeout`` and Prometheus durations elsewhere; accepting
both in every field means a config copied from either tool parses.
"""

from __future__ import annotations

import re

_UNITS = {
    "y": 365 * 86400.0,
    "w": 7 * 86400.0,
    "d": 86400.0,
    "h": 3600.0,
    "m": 60.0,
    "s": 1.0,
    "ms": 1e-3,
    "us": 1e-6,
    "µs": 1e-6,
    "ns": 1e-9,
}
#: Go's time.Duration limit, about 292 years
MAX_SECONDS = 2**63 / 1e9
_ORDER = ["y", "w", "d", "h", "m", "s", "ms", "us", "µs", "ns"]
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|us|µs|ns|y|w|d|h|m|s)")


def parse_duration(text: str) -> float:
    """Return seconds for ``text``; raise ValueError if it is not a duration."""
    s = text.strip()
    if s == "0":
        return 0.0
    if not s:
        raise ValueError("empty duration")
    pos = 0
    total = 0.0
    last_rank = -1
    while pos < len(s):
        m = _PART.match(s, pos)
        if m is None:
            raise ValueError(f"{text!r} is not a duration")
        unit = m.group(2)
        rank = _ORDER.index(unit)
        if rank <= last_rank:
            raise ValueError(f"{text!r} is not a duration (units out of order)")
        last_rank = rank
        total += float(m.group(1)) * _UNITS[unit]
        pos = m.end()
    if not total < MAX_SECONDS:
        raise ValueError(f"{text!r} is too long (at most 292 years, as in Go)")
    return total


def format_duration(seconds: float) -> str:
    """Render seconds back in Prometheus style, for messages and /config."""
    if seconds == 0:
        return "0s"
    ms = round(seconds * 1000)
    if ms % 1000:
        return f"{ms}ms"
    out = []
    rest = ms // 1000
    for unit, size in (("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size:
            out.append(f"{rest // size}{unit}")
            rest %= size
    return "".join(out)
