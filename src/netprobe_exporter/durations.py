"""Duration strings in Prometheus syntax (``1h30m``, ``500ms``), plus Go's (``1.5s``, ``250us``).

blackbox.yml files use Go durations for ``timeout`` and Prometheus durations elsewhere; accepting
both in every field means a config copied from either tool parses.
"""

from __future__ import annotations

import re
from fractions import Fraction
from functools import lru_cache

#: nanoseconds per unit: sums are exact, so "1751ms" is 1.751, not 1.7510000000000001
_UNITS = {
    "y": 365 * 86400 * 10**9,
    "w": 7 * 86400 * 10**9,
    "d": 86400 * 10**9,
    "h": 3600 * 10**9,
    "m": 60 * 10**9,
    "s": 10**9,
    "ms": 10**6,
    "us": 10**3,
    "µs": 10**3,
    "ns": 1,
}
#: Go's time.Duration limit, about 292 years
MAX_SECONDS = 2**63 / 1e9
_ORDER = ["y", "w", "d", "h", "m", "s", "ms", "us", "µs", "ns"]
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|us|µs|ns|y|w|d|h|m|s)")


@lru_cache(maxsize=1024)
def parse_duration(text: str) -> float:
    """Return seconds for ``text``; raise ValueError if it is not a duration.

    Cached: a big config repeats a few durations (``interval: 1h``) tens of thousands of times,
    and the exact sum costs ~40 µs each. Errors are not cached; they are rare."""
    s = text.strip()
    if s == "0":
        return 0.0
    if not s:
        raise ValueError("empty duration")
    pos = 0
    nanos = Fraction(0)
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
        nanos += Fraction(m.group(1)) * _UNITS[unit]
        pos = m.end()
    if not nanos < 2**63:
        raise ValueError(f"{text!r} is too long (at most 292 years, as in Go)")
    return float(nanos / 10**9)


def format_duration(seconds: float) -> str:
    """Render seconds back in Prometheus style, for messages and /config."""
    if seconds == 0:
        return "0s"
    ns = round(seconds * 10**9)
    if ns % 10**6:  # below a millisecond's precision: whole micro- or nanoseconds, not rounded
        return f"{ns // 1000}us" if ns % 1000 == 0 else f"{ns}ns"
    ms = ns // 10**6
    if ms % 1000:
        return f"{ms}ms"
    out = []
    rest = ms // 1000
    for unit, size in (("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size:
            out.append(f"{rest // size}{unit}")
            rest %= size
    return "".join(out)


def byte_size(n: int) -> str:
    """A size the config parser reads back: ``10MiB``, ``1536B``."""
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n and n % size == 0:
            return f"{n // size}{unit}"
    return f"{n}B"
