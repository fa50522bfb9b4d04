"""What the main process and a probe worker say to each other, in ``frames`` (JSON arrays).

Main to worker:

- ``["config", filename | None, text | None, max_inflight, max_body_bytes]``: the config bytes
  the main process parsed (None: the embedded default); the worker parses its modules only.
- ``["targets", [[id, address, module, interval], ...]]``: exactly the targets it probes now.
- ``["probe", id, module, target, hostname, timeout, debug, started]``: a checked ``/probe``
  request; ``["cancel", id]`` when its client went away.

Worker to main:

- ``["b", results, lags, skipped, inflight]``: a batch of results (``encode_result``), the
  scheduler lag of each probe started, slots skipped and probes running now.
- ``["h", inflight]``: a heartbeat (a worker silent for long is hung).
- ``["l", level, message, fields]``: one log event, logged again by the main process.
- ``["p", id, kind, body]``: a ``/probe`` answer, rendered (``probe_endpoint.outcome``), or
  ``unavailable`` (the main process probes itself) or ``failed`` (a 500).

A result carries the core ``ProbeResult`` fields and the calls its details made on a recording
``SeriesSink``, so the main process replays them into the target's series without knowing the
prober. The main process checks every value it stores: a bad one is a ``FrameError``.
"""

from __future__ import annotations

import math
from typing import Any

from netprobe_exporter.frames import FrameError
from netprobe_exporter.model import RESULTS, Details, ProbeResult, SeriesSink
from netprobe_exporter.probes.all import PROBERS

_CODE = {name: i for i, name in enumerate(RESULTS)}
HISTOGRAM, GAUGE, INFO = 0, 1, 2
#: the families a result may feed, with the number of label values of each
_FAMILIES: dict[str, int] = {
    f.name: max(len(f.label_values), 1) for spec in PROBERS.values() for f in spec.families
}
#: a result's detail text or info label value is cut to this many characters
MAX_TEXT = 4096
LEVELS = ("debug", "info", "warn", "error", "critical")
#: ``/probe`` answers besides probe_endpoint's METRICS, DEBUG and REFUSED
UNAVAILABLE, FAILED = "unavailable", "failed"


class RecordingSink(SeriesSink):
    """Records what a result's details write, as rows ``[kind, family, value(, label)]``."""

    __slots__ = ("calls",)

    def __init__(self) -> None:
        self.calls: list[list[Any]] = []

    def histogram(self, family: str, value: float, label: int = 0) -> None:
        self.calls.append([HISTOGRAM, family, value, label])

    def gauge(self, family: str, value: float) -> None:
        self.calls.append([GAUGE, family, value])

    def info(self, family: str, label_value: str) -> None:
        self.calls.append([INFO, family, label_value[:MAX_TEXT]])


def encode_result(target_id: int, result: ProbeResult) -> list[Any]:
    """``[id, success, result code, duration, connect, ip, detail, calls]`` for one probe."""
    calls: list[list[Any]] | int = 0
    if result.details is not None:
        sink = RecordingSink()
        result.details.observe(sink, result)
        calls = sink.calls
    return [
        target_id,
        1 if result.success else 0,
        _CODE.get(result.result, _CODE["error"]),
        result.duration,
        result.connect_duration,
        result.ip,
        result.detail[:MAX_TEXT],
        calls,
    ]


class Replay(Details):
    """Details that write what a worker's recording sink recorded."""

    __slots__ = ("calls",)

    def __init__(self, calls: list[tuple[int, str, Any, int]]) -> None:
        self.calls = calls

    def observe(self, out: SeriesSink, result: ProbeResult) -> None:
        for kind, family, value, label in self.calls:
            if kind == HISTOGRAM:
                out.histogram(family, value, label)
            elif kind == GAUGE:
                out.gauge(family, value)
            else:
                out.info(family, value)


def _number(value: object, what: str) -> float:
    if (type(value) is float or type(value) is int) and math.isfinite(value) and value >= 0:
        return float(value)
    raise FrameError(f"result {what} is not a non-negative number")


def _text(value: object, what: str) -> str:
    if type(value) is not str or len(value) > MAX_TEXT:
        raise FrameError(f"result {what} is not a string of at most {MAX_TEXT} characters")
    return value


def _calls(rows: object) -> list[tuple[int, str, Any, int]]:
    if not isinstance(rows, list):
        raise FrameError("result calls are not a list")
    out: list[tuple[int, str, Any, int]] = []
    for row in rows:
        if not isinstance(row, list) or len(row) < 3:
            raise FrameError("a result call is not a list")
        kind, family = row[0], row[1]
        labels = _FAMILIES.get(family) if type(family) is str else None
        if labels is None:
            raise FrameError("a result call names an unknown family")
        if kind == HISTOGRAM and len(row) == 4:
            label = row[3]
            if type(label) is not int or not 0 <= label < labels:
                raise FrameError("a histogram call has an invalid label")
            out.append((HISTOGRAM, family, _number(row[2], "histogram value"), label))
        elif kind == GAUGE and len(row) == 3:
            value = row[2]
            if type(value) is not float and type(value) is not int:
                raise FrameError("a gauge call has no number")
            out.append((GAUGE, family, float(value), 0))
        elif kind == INFO and len(row) == 3:
            out.append((INFO, family, _text(row[2], "info value"), 0))
        else:
            raise FrameError("a result call has an unknown kind")
    return out


def decode_result(row: object) -> tuple[int, ProbeResult]:
    """The target id and result of one encoded row; FrameError if any value is wrong."""
    if not isinstance(row, list) or len(row) != 8:
        raise FrameError("a result is not a list of 8 values")
    target_id, ok, code, duration, connect, ip, detail, calls = row
    if type(target_id) is not int or ok not in (0, 1) or type(code) is not int:
        raise FrameError("a result has an invalid id, success or code")
    if not 0 <= code < len(RESULTS):
        raise FrameError("a result has an unknown result code")
    result = ProbeResult(
        success=ok == 1,
        result=RESULTS[code],
        duration=_number(duration, "duration"),
        connect_duration=None if connect is None else _number(connect, "connect duration"),
        ip=None if ip is None else _text(ip, "ip"),
        detail=_text(detail, "detail"),
        details=None if calls == 0 else Replay(_calls(calls)),
    )
    return target_id, result
