"""Target sources: where continuous-mode targets come from.

Today targets come from the config file and ``--target`` flags; file_sd target files and
sharding plug in here as further sources/filters without the scheduler or metrics knowing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from netprobe_exporter.config import Config, Target


class TargetSource(Protocol):
    def targets(self) -> list[Target]: ...


@dataclass(frozen=True, slots=True)
class StaticSource:
    config: Config

    def targets(self) -> list[Target]:
        return list(self.config.targets)


def static_source(config: Config) -> TargetSource:
    return StaticSource(config)
