"""Target sources: where continuous-mode targets come from.

Targets come from the config file and ``--target`` flags, then from ``target_files``, optionally
cut down to this replica's shard; the scheduler and metrics never know which.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from netprobe_exporter.config import Config, Target
from netprobe_exporter.scheduler import stable_hash


class TargetSource(Protocol):
    def targets(self) -> list[Target]: ...


@dataclass(frozen=True, slots=True)
class StaticSource:
    """The config's targets, then those of target files that the config does not list itself."""

    config: Config
    files: Sequence[Target] = ()

    def targets(self) -> list[Target]:
        out = list(self.config.targets)
        if self.files:
            seen = {t.key for t in out}
            out.extend(t for t in self.files if t.key not in seen)
        return out


def static_source(config: Config, files: Sequence[Target] = ()) -> TargetSource:
    return StaticSource(config, files)


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
