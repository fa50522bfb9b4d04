"""The frame codec between the main process and probe workers, and the result encoding."""

from __future__ import annotations

import struct

import pytest

from netprobe_exporter.frames import FrameDecoder, FrameError, decode_body, encode
from netprobe_exporter.metrics import TargetSeries
from netprobe_exporter.model import ProbeResult, Target
from netprobe_exporter.probes.connect import ConnectInfo
from netprobe_exporter.probes.tcp import TCPDetails
from netprobe_exporter.workerproto import decode_result, encode_result


def test_frames_round_trip_whatever_the_chunking() -> None:
    messages = [["b", [[1, 1, 0, 0.5, None, "127.0.0.1", "", 0]], [0.001], 0, 3], ["h", 0]]
    stream = b"".join(encode(m) for m in messages)
    for step in (1, 3, 7, len(stream)):
        decoder = FrameDecoder(1024)
        got = []
        for i in range(0, len(stream), step):
            got.extend(decoder.feed(stream[i : i + step]))
        assert got == messages
        assert decoder.pending == 0


def test_a_truncated_frame_waits_and_is_pending() -> None:
    frame = encode(["h", 1])
    decoder = FrameDecoder(1024)
    assert decoder.feed(frame[:-1]) == []
    assert decoder.pending == len(frame) - 1


def test_an_oversized_frame_is_refused_before_it_is_buffered() -> None:
    decoder = FrameDecoder(100)
    with pytest.raises(FrameError, match="more than the 100 allowed"):
        decoder.feed(struct.pack(">I", 101))


@pytest.mark.parametrize(
    "body",
    [b"not json", b"\xff\xfe", b"{}", b"[]", b"[1, 2]", b'"text"', b"[" * 100_000],
)
def test_garbage_is_a_frame_error(body: bytes) -> None:
    decoder = FrameDecoder(1 << 20)
    with pytest.raises(FrameError):
        decoder.feed(struct.pack(">I", len(body)) + body)


def test_a_result_replayed_feeds_the_series_as_the_result_itself_does() -> None:
    details = TCPDetails(connect=ConnectInfo(handshake_rtt=0.003))
    result = ProbeResult(True, "success", 0.25, connect_duration=0.125, ip="127.0.0.1",
                         details=details)  # fmt: skip
    message = FrameDecoder(1 << 20).feed(encode(["b", [encode_result(7, result)]]))[0]
    target_id, back = decode_result(message[1][0])
    assert target_id == 7
    target = Target("127.0.0.1:1", "tcp_connect", 1.0)
    direct, replayed = TargetSeries(target), TargetSeries(target)
    direct.observe(result, 10.0)
    replayed.observe(back, 10.0)
    assert replayed.histograms is not None and direct.histograms is not None
    assert replayed.histograms.keys() == direct.histograms.keys() != set()
    for name, hists in direct.histograms.items():
        assert [h.counts for h in replayed.histograms[name]] == [h.counts for h in hists]
    assert (replayed.results, replayed.up, replayed.ip) == (direct.results, 1.0, "127.0.0.1")
    assert replayed.connect.counts == direct.connect.counts


@pytest.mark.parametrize(
    "row",
    [
        "x",
        [1, 1, 0, 0.1, None, None, ""],  # too short
        ["1", 1, 0, 0.1, None, None, "", 0],  # id not an int
        [1, 2, 0, 0.1, None, None, "", 0],  # success not 0 or 1
        [1, 1, 99, 0.1, None, None, "", 0],  # unknown result code
        [1, 1, 0, -1.0, None, None, "", 0],  # negative duration
        [1, 1, 0, "0.1", None, None, "", 0],  # duration a string
        [1, 1, 0, float("inf"), None, None, "", 0],
        [1, 1, 0, 0.1, None, 5, "", 0],  # ip not a string
        [1, 1, 0, 0.1, None, None, "x" * 10_000, 0],  # detail too long
        [1, 1, 0, 0.1, None, None, "", [[0, "no_such_family", 0.1, 0]]],
        [1, 1, 0, 0.1, None, None, "", [[9, "netprobe_connect_duration_seconds", 0.1, 0]]],
        [1, 1, 0, 0.1, None, None, "", "calls"],
    ],
)
def test_a_bad_result_is_a_frame_error(row: object) -> None:
    with pytest.raises(FrameError):
        decode_result(row)


def test_big_frames_come_out_undecoded_for_later() -> None:
    big = ["targets", [[i, f"127.0.0.1:{i}", "tcp_connect", 1.0] for i in range(100)]]
    decoder = FrameDecoder(1 << 20, raw_above=256)
    small, raw = decoder.feed(encode(["h", 0]) + encode(big))
    assert small == ["h", 0]
    assert isinstance(raw, bytes) and decode_body(raw) == big
