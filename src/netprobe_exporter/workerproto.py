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

import ipaddress
import math
from typing import Any

from netprobe_exporter.frames import FrameError
from netprobe_exporter.model import (
    MAX_ADDRESSES,
    MAX_LOG_LINES,
    RESULTS,
    Details,
    ProbeResult,
    SeriesSink,
)
from netprobe_exporter.probe_endpoint import Outcome
from netprobe_exporter.probes.all import PROBERS

_CODE = {name: i for i, name in enumerate(RESULTS)}
HISTOGRAM, GAUGE, INFO, COUNTER = 0, 1, 2, 3
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
    """Records what a result's details write, as rows ``[kind, family, value(, label)]``.

    ``infos`` is the target's info values as this worker last recorded them, so that ``info``
    returns the value it replaces as the store's sink does (a prober counts changes by it; a
    target stays with one worker, and a restarted worker starts from none).
    """

    __slots__ = ("calls", "infos")

    def __init__(self, infos: dict[str, str] | None = None) -> None:
        self.calls: list[list[Any]] = []
        self.infos = {} if infos is None else infos

    def histogram(self, family: str, value: float, label: int = 0) -> None:
        self.calls.append([HISTOGRAM, family, value, label])

    def gauge(self, family: str, value: float) -> None:
        self.calls.append([GAUGE, family, value])

    def counter(self, family: str, value: float, label: int = 0) -> None:
        self.calls.append([COUNTER, family, value, label])

    def info(self, family: str, label_value: str) -> str | None:
        kept = label_value[:MAX_TEXT]
        self.calls.append([INFO, family, kept])
        before = self.infos.get(family)
        self.infos[family] = kept
        return before


def encode_result(
    target_id: int,
    result: ProbeResult,
    infos: dict[str, str] | None = None,
    address_infos: dict[str, dict[str, str]] | None = None,
) -> list[Any]:
    """``[id, success, result code, duration, connect, ip, detail, calls]`` for one probe, and
    with every_address a ninth value: ``[[ip, row without its id], …]``. ``infos`` is the
    target's info values as last recorded (see ``RecordingSink``), ``address_infos`` each
    address's (those of addresses no longer probed are dropped from it)."""
    calls: list[list[Any]] | int = 0
    if result.details is not None:
        sink = RecordingSink(infos)
        result.details.observe(sink, result)
        calls = sink.calls
    row = [
        target_id,
        1 if result.success else 0,
        _CODE.get(result.result, _CODE["error"]),
        result.duration,
        result.connect_duration,
        result.ip,
        result.detail[:MAX_TEXT],
        calls,
    ]
    if result.addresses is not None:
        kept = {} if address_infos is None else address_infos
        row.append(
            [[ip, encode_result(0, child, kept.setdefault(ip, {}))[1:]]
             for ip, child in result.addresses[:MAX_ADDRESSES]]
        )  # fmt: skip
        if address_infos is not None:
            probed = {ip for ip, _ in result.addresses}
            for ip in [ip for ip in address_infos if ip not in probed]:
                del address_infos[ip]
    return row


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
            elif kind == COUNTER:
                out.counter(family, value, label)
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
        elif kind == COUNTER and len(row) == 4:
            label = row[3]
            if type(label) is not int or not 0 <= label < labels:
                raise FrameError("a counter call has an invalid label")
            out.append((COUNTER, family, _number(row[2], "counter increment"), label))
        elif kind == INFO and len(row) == 3:
            out.append((INFO, family, _text(row[2], "info value"), 0))
        else:
            raise FrameError("a result call has an unknown kind")
    return out


def decode_result(row: object) -> tuple[int, ProbeResult]:
    """The target id and result of one encoded row; FrameError if any value is wrong."""
    if isinstance(row, list) and len(row) == 9:
        target_id, result = decode_result(row[:8])
        result.addresses = _addresses(row[8])
        return target_id, result
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
        ip=None if ip is None else _address(ip),
        detail=_text(detail, "detail"),
        details=None if calls == 0 else Replay(_calls(calls)),
    )
    return target_id, result


def _address(value: object) -> str:
    """An IP address from a frame (it becomes a label value), in its one spelling."""
    text = _text(value, "address")
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise FrameError("a result's address is not an IP address") from None


def _addresses(rows: object) -> list[tuple[str, ProbeResult]]:
    """Each address's result of an every_address probe (bounded, never nested)."""
    if not isinstance(rows, list) or len(rows) > MAX_ADDRESSES:
        raise FrameError(f"a result's addresses are not a list of at most {MAX_ADDRESSES}")
    out: list[tuple[str, ProbeResult]] = []
    for item in rows:
        if not isinstance(item, list) or len(item) != 2 or not isinstance(item[1], list):
            raise FrameError("a result's address is not [ip, result]")
        ip = _address(item[0])
        if len(item[1]) != 7:
            raise FrameError("an address's result is not a list of 7 values")
        out.append((ip, decode_result([0, *item[1]])[1]))
    return out


def _jsonable(value: object) -> object:
    """A note's field as JSON carries it: numbers, text, flags; anything else as its text."""
    if value is None or type(value) in (str, bool, int):
        return value
    if type(value) is float and math.isfinite(value):
        return value
    return str(value)


def encode_outcome(request_id: int, o: Outcome) -> list[Any]:
    """``["p", id, kind, body, success, result, duration, detail, log, dropped, dropped at,
    log bytes]``: a rendered ``/probe`` answer and what the history keeps of it."""
    log = None
    if o.log is not None:
        log = [[ts, level, msg, {k: _jsonable(v) for k, v in fields.items()}]
               for ts, level, msg, fields in o.log]  # fmt: skip
    return ["p", request_id, o.kind, o.body, 1 if o.success else 0, o.result[:MAX_TEXT],
            o.duration, o.detail[:MAX_TEXT], log, o.log_dropped, o.log_dropped_at,
            o.log_bytes]  # fmt: skip


def count(value: object, what: str = "a count") -> int:
    """A non-negative integer from a frame; FrameError naming ``what`` otherwise."""
    if type(value) is not int or value < 0:
        raise FrameError(f"{what} is not a non-negative integer")
    return value


def _log_entry(row: object) -> tuple[float, str, str, dict[str, object]]:
    if not isinstance(row, list) or len(row) != 4:
        raise FrameError("a /probe log entry is not a list of 4 values")
    ts, level, msg, fields = row
    if type(level) is not str or type(msg) is not str or not isinstance(fields, dict):
        raise FrameError("a /probe log entry needs a level, a message and fields")
    if not all(type(k) is str for k in fields):
        raise FrameError("a /probe log entry's field names must be strings")
    if any(v is not None and type(v) not in (str, bool, int, float) for v in fields.values()):
        raise FrameError("a /probe log entry's fields must be numbers, text or flags")
    return _number(ts, "log time"), level, msg, fields


def decode_outcome(message: list[Any]) -> tuple[int, Outcome]:
    """The request id and answer of a ``p`` frame; FrameError if any value is wrong."""
    if len(message) == 4:  # unavailable / failed: no probe result
        _, request_id, kind, body = message
        if type(request_id) is not int or type(kind) is not str or type(body) is not str:
            raise FrameError("a /probe answer needs an id, a kind and a text")
        return request_id, Outcome(kind, body)
    if len(message) != 12:
        raise FrameError("a /probe answer is not a list of 12 values")
    _, request_id, kind, body, ok, result, duration, detail, log, dropped, at, size = message
    if type(request_id) is not int or type(kind) is not str or type(body) is not str:
        raise FrameError("a /probe answer needs an id, a kind and a text")
    if ok not in (0, 1):
        raise FrameError("a /probe answer has an invalid success")
    if log is not None and (not isinstance(log, list) or len(log) > MAX_LOG_LINES + 1):
        raise FrameError(f"a /probe answer's log is not a list of at most {MAX_LOG_LINES}")
    entries = None if log is None else tuple(_log_entry(row) for row in log)
    return request_id, Outcome(
        kind, body, ok == 1, _text(result, "result"), _number(duration, "duration"),
        _text(detail, "detail"), entries, count(dropped, "a /probe answer's dropped count"),
        count(at, "a /probe answer's drop position"), count(size, "a /probe answer's log size"),
    )  # fmt: skip
