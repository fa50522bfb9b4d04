"""Target sources and sharding: every target probed by exactly one replica."""

from __future__ import annotations

import pytest

from netprobe_exporter.config import Config, Target
from netprobe_exporter.sources import ShardedSource, parse_shard, static_source

TARGETS = tuple(Target(f"10.1.{i // 200}.{i % 200}:443", "tcp_connect", 15.0) for i in range(3000))


def test_shards_partition_the_targets_evenly_and_stably() -> None:
    source = static_source(Config(targets=TARGETS))
    shares = [ShardedSource(source, i, 3).targets() for i in range(3)]
    seen = [t.key for share in shares for t in share]
    assert sorted(seen) == sorted(t.key for t in TARGETS)  # each target exactly once
    assert all(900 <= len(share) <= 1100 for share in shares), [len(s) for s in shares]
    # the same answer in another process or run: nothing depends on Python's hash seed
    again = ShardedSource(static_source(Config(targets=TARGETS[::-1])), 1, 3).targets()
    assert {t.key for t in again} == {t.key for t in shares[1]}


def test_a_target_keeps_its_shard_when_others_come_and_go() -> None:
    first = {t.key for t in ShardedSource(static_source(Config(targets=TARGETS)), 0, 4).targets()}
    fewer = ShardedSource(static_source(Config(targets=TARGETS[:1000])), 0, 4).targets()
    assert {t.key for t in fewer} <= first


@pytest.mark.parametrize(
    ("text", "expected"), [("0/1", (0, 1)), ("2/3", (2, 3)), ("0/12", (0, 12))]
)
def test_parse_shard(text: str, expected: tuple[int, int]) -> None:
    assert parse_shard(text) == expected


@pytest.mark.parametrize("text", ["3/3", "1/0", "-1/2", "a/b", "1", "1/2/3", ""])
def test_bad_shards_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_shard(text)
