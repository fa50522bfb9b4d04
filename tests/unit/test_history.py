"""The /probe history: blackbox's count bound and kept failures, plus a byte bound."""

from __future__ import annotations

import pytest

from netprobe_exporter import cli
from netprobe_exporter.history import ProbeHistory, kept_size


def add(
    h: ProbeHistory, success: bool, text: str = "", target: str = "t", module: str = "m"
) -> int:
    return h.add(0.0, module, target, success, "success" if success else "timeout", 0.1, "",
                 text or f"log {h._next_id}").id  # fmt: skip


def ids(h: ProbeHistory) -> list[int]:
    return [r.id for r in h.newest_first()]


def test_the_newest_limit_are_kept() -> None:
    h = ProbeHistory(limit=3)
    for _ in range(5):
        add(h, True)
    assert ids(h) == [4, 3, 2]


def test_failures_that_age_out_are_kept_up_to_limit_more() -> None:
    h = ProbeHistory(limit=3)
    for _ in range(3):
        add(h, False)  # ids 0-2
    for _ in range(3):
        add(h, True)  # 3-5 push the failures out of the recent ones
    assert ids(h) == [5, 4, 3, 2, 1, 0]
    for _ in range(4):
        add(h, False)  # 6-9: 3, 4, 5 age out as successes and are gone; then 6 ages out
    assert ids(h) == [9, 8, 7, 6, 2, 1]
    assert h.by_id(0) is None and h.by_id(1) is not None


def test_zero_keeps_nothing() -> None:
    h = ProbeHistory(limit=0)
    add(h, False)
    assert not h.enabled and len(h) == 0 and h.by_id(0) is None


def test_by_target_is_the_newest_of_that_target_and_module() -> None:
    h = ProbeHistory(limit=10)
    add(h, True, target="a", module="tcp")
    add(h, False, target="a", module="http")
    add(h, True, target="b", module="tcp")
    hit = h.by_target("a")
    assert hit is not None and hit.id == 1
    hit = h.by_target("a", "tcp")
    assert hit is not None and hit.id == 0
    assert h.by_target("a", "dns") is None and h.by_target("c") is None


def test_a_masked_target_finds_its_record_and_shown_never_has_the_password() -> None:
    h = ProbeHistory(limit=10)
    add(h, True, target="https://u:secret@x.example/")
    hit = h.by_target("https://u:xxxxx@x.example/")
    assert hit is not None and "secret" not in hit.shown


def test_bytes_are_bounded_dropping_old_successes_before_failures() -> None:
    h = ProbeHistory(limit=100, max_bytes=1000)
    add(h, False, "f" * 300)  # 0
    add(h, True, "s" * 300)  # 1
    add(h, True, "s" * 300)  # 2
    add(h, False, "f" * 300)  # 3: 1200 bytes, the oldest success goes
    assert ids(h) == [3, 2, 0] and h.bytes == 900
    add(h, False, "f" * 300)  # 4: then 2, the last success
    assert ids(h) == [4, 3, 0] and h.bytes == 900
    add(h, False, "f" * 300)  # 5: only failures left: the oldest failure goes
    assert ids(h) == [5, 4, 3] and h.bytes == 900
    add(h, True, "x" * 5000)  # larger than the bound alone: kept as the only entry
    assert ids(h) == [6] and h.bytes == 5000


def test_the_log_is_made_only_when_read_and_counted_by_its_estimated_size() -> None:
    made: list[int] = []

    def page() -> str:
        made.append(1)
        return "Logs for the probe:\n"

    h = ProbeHistory(limit=10, max_bytes=10_000)
    record = h.add(0.0, "m", "t", True, "success", 0.1, "", page, kept_size(3, 100))
    assert made == [] and h.bytes == kept_size(3, 100)
    assert record.text == "Logs for the probe:\n" and made == [1]
    for _ in range(5):  # 5 more of the same size: past 10,000 bytes the oldest go
        h.add(0.0, "m", "t", True, "success", 0.1, "", page, kept_size(3, 100))
    assert h.bytes <= 10_000 and len(h) == 10_000 // kept_size(3, 100)


def test_the_history_limit_flag_defaults_to_blackbox_s_100(
    capsys: pytest.CaptureFixture[str],
) -> None:
    parser = cli.build_parser()
    assert parser.parse_args([]).history_limit == 100
    assert parser.parse_args(["--history.limit=0"]).history_limit == 0
    with pytest.raises(SystemExit) as exit_:
        parser.parse_args(["--history.limit=-3"])
    assert exit_.value.code == cli.EXIT_CONFIG
    assert "--history.limit: '-3' is not a whole number of entries" in capsys.readouterr().err
