"""Target sources: where continuous-mode targets come from.

Today targets come from the config file and ``--target`` flags, optionally cut down to this
replica's shard; file_sd target files plug in here as a further source, without the scheduler or
metrics knowing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from netprobe_exporter.config import Config, Target
from netprobe_exporter.scheduler import stable_hash


class TargetSource(Protocol):
    def targets(self) -> list[Target]: ...


@dataclass(frozen=True, slots=True)
class StaticSource:
    config: Config

    def targets(self) -> list[Target]:
        return list(self.config.targets)


def static_source(config: Config) -> TargetSource:
    return StaticSource(config)


def parse_shard(text: str) -> tuple[int, int]:
    """``INDEX/COUNT`` -> (index, count); raise ValueError naming what is wrong."""
    index_text, sep, count_text = text.partition("/")
    if not sep or not index_text.isdigit() or not count_text.isdigit():
        raise ValueError(f"{text!r} is not INDEX/COUNT (e.g. 0/3)")
    index, count = int(index_text), int(count_text)
    if count < 1 or index >= count:
        raise ValueError(f"{text!r}: INDEX must be at least 0 and below COUNT, COUNT at least 1")
    return index, count


@dataclass(frozen=True, slots=True)
class ShardedSource:
    """This replica's share: targets whose stable identity hash falls in its shard.

    Every replica computes the same hash of ``address`` and ``module``, so the replicas of a
    StatefulSet probe each target exactly once between them, and a target keeps its replica
    across restarts and reloads (until COUNT changes).
    """

    inner: TargetSource
    index: int
    count: int

    def targets(self) -> list[Target]:
        return [t for t in self.inner.targets() if stable_hash(t) % self.count == self.index]
