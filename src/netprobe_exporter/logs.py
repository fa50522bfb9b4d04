"""Logging: one line per event, logfmt (default) or JSON, through ``twisted.logger``.

Our own events carry their fields as keyword arguments (``log.info("probe failed", target=…,
module=…)``) and their format string is the message itself. Events from Twisted's own modules
(factory start/stop chatter) are shown only at debug level unless they are warnings or worse.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import IO, Any

from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    formatEvent,
    globalLogBeginner,
)
from zope.interface import provider

LEVELS = {
    "debug": LogLevel.debug,
    "info": LogLevel.info,
    "warn": LogLevel.warn,
    "error": LogLevel.error,
}
_NAMES = {
    LogLevel.debug: "debug",
    LogLevel.info: "info",
    LogLevel.warn: "warn",
    LogLevel.error: "error",
    LogLevel.critical: "error",
}
_OURS = "netprobe_exporter"


#: escapes inside a quoted logfmt value: one event stays one line, whatever it carries
_LOGFMT_ESCAPES = {
    **{c: f"\\u{c:04x}" for c in (*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029)},
    ord("\\"): "\\\\",
    ord('"'): '\\"',
    ord("\n"): "\\n",
    ord("\r"): "\\r",
    ord("\t"): "\\t",
}
_LOGFMT_QUOTE = frozenset(' ="\\')


def logfmt_value(value: Any) -> str:
    """A value as logfmt writes it: bare if it can be, else quoted with control characters,
    quotes and backslashes escaped (``\\n``, ``\\t``, ``\\u001b``, as go-logfmt does).

    The one escaper for every logfmt line we write: the exporter's log and /probe's debug page.
    """
    text = value if isinstance(value, str) else str(value)
    if text and text.isprintable() and _LOGFMT_QUOTE.isdisjoint(text):
        return text
    return '"' + text.translate(_LOGFMT_ESCAPES) + '"'


def event_fields(event: dict[str, Any]) -> dict[str, Any]:
    """Flatten a twisted.logger event into ordered ``key: value`` fields."""
    level = event.get("log_level", LogLevel.info)
    ns = event.get("log_namespace", "") or ""
    ts = event.get("log_time", time.time())
    fields: dict[str, Any] = {
        "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z",
        "level": _NAMES.get(level, "info"),
    }
    if ns.startswith(_OURS):
        fields["msg"] = event.get("log_format") or ""
        for key, value in event.items():
            if not key.startswith("log_") and key not in fields and key != "message":
                fields[key] = value
    else:
        fields["msg"] = formatEvent(event)
        fields["source"] = ns
    failure = event.get("log_failure")
    if failure is not None:
        fields["err"] = failure.getErrorMessage()
        if not ns.startswith(_OURS) or level >= LogLevel.error:
            fields["trace"] = failure.getTraceback()
    return fields


def format_logfmt(event: dict[str, Any]) -> str:
    return " ".join(f"{k}={logfmt_value(v)}" for k, v in event_fields(event).items()) + "\n"


def format_json(event: dict[str, Any]) -> str:
    return json.dumps(event_fields(event), default=str) + "\n"


def make_observer(level: str, fmt: str, stream: IO[str]) -> ILogObserver:
    formatter: Callable[[dict[str, Any]], str] = format_json if fmt == "json" else format_logfmt

    @provider(ILogObserver)
    def write(event: dict[str, Any]) -> None:
        ns = event.get("log_namespace", "") or ""
        foreign_chatter = (
            not ns.startswith(_OURS) and event.get("log_level", LogLevel.info) < LogLevel.warn
        )
        if foreign_chatter and LEVELS[level] > LogLevel.debug:
            return
        try:
            stream.write(formatter(event))
            stream.flush()
        except Exception:  # a log line must never take the process down
            pass

    predicate = LogLevelFilterPredicate(defaultLogLevel=LEVELS[level])
    return FilteringLogObserver(write, [predicate])


def setup(level: str, fmt: str, stream: IO[str] = sys.stderr) -> None:
    globalLogBeginner.beginLoggingTo(
        [make_observer(level, fmt, stream)], redirectStandardIO=False, discardBuffer=True
    )
