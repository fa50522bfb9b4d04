"""Frames between the main process and its probe workers: a 4-byte length, then a JSON array.

JSON, not pickle: a worker runs probers against untrusted peers, so what it sends is data the
main process checks, never code it runs. Lengths are bounded by the reader (a worker's frames
are small batches; the main process's target lists may be large), and a frame that is too
long, not UTF-8 JSON or not an array raises ``FrameError``: the reader then drops the sender.
"""

from __future__ import annotations

import json
import struct
from typing import Any

_LENGTH = struct.Struct(">I")
HEADER = _LENGTH.size

#: a worker's frames: result batches and log events stay far below this
WORKER_FRAME_LIMIT = 8 * 1024 * 1024
#: the main process's frames: a config file (at most MAX_FILE_BYTES) or a target list
MAIN_FRAME_LIMIT = 512 * 1024 * 1024

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=True).encode


class FrameError(Exception):
    """A frame that cannot be decoded (its text says why, never its content)."""


def encode(message: list[Any]) -> bytes:
    """One frame: the message as compact JSON after its length."""
    body = _dumps(message).encode()
    return _LENGTH.pack(len(body)) + body


class FrameDecoder:
    """Splits a byte stream into messages; keeps at most one partial frame. Frames over
    ``raw_above`` bytes come out undecoded, for ``decode_body`` elsewhere (a thread)."""

    __slots__ = ("_buffer", "limit", "raw_above")

    def __init__(self, limit: int, raw_above: int | None = None) -> None:
        self.limit = limit
        self.raw_above = limit if raw_above is None else raw_above
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Any]:
        """The complete messages ``data`` finishes (decoded, or the bytes of a big one);
        raise FrameError on the first bad one."""
        buf = self._buffer
        buf += data
        start = 0
        end = len(buf)
        out: list[Any] = []
        try:
            while end - start >= HEADER:
                (size,) = _LENGTH.unpack_from(buf, start)
                if size > self.limit:
                    raise FrameError(f"frame of {size} bytes, more than the {self.limit} allowed")
                if end - start - HEADER < size:
                    break
                body = bytes(buf[start + HEADER : start + HEADER + size])
                start += HEADER + size
                out.append(body if size > self.raw_above else decode_body(body))
        finally:
            del buf[:start]
        return out

    @property
    def pending(self) -> int:
        """Bytes of a frame not complete yet (a stream that ends here was cut short)."""
        return len(self._buffer)


def decode_body(body: bytes) -> list[Any]:
    """One frame's message; FrameError if it is not a JSON array starting with its kind."""
    try:
        message = json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise FrameError(f"frame is not JSON ({type(exc).__name__})") from None
    if not isinstance(message, list) or not message or not isinstance(message[0], str):
        raise FrameError("frame is not an array starting with its kind")
    return message
