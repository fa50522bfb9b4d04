"""The one exposition parser of the tests: prometheus_client's, over text format or OpenMetrics.

A hand-written regex would accept what Prometheus refuses (and the other way round); the
reference parser fails the test on anything Prometheus could not read.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_text


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


def families(text: str) -> Iterator[Metric]:
    """The metric families of an exposition; OpenMetrics when it ends with ``# EOF``."""
    if text.rstrip("\n").endswith("# EOF"):
        return parse_openmetrics(text)
    return parse_text(text)


def parse_samples(text: str) -> list[Sample]:
    """Every sample of a text-format or OpenMetrics exposition, in order; raises if unparsable."""
    return [
        Sample(s.name, dict(s.labels), float(s.value)) for f in families(text) for s in f.samples
    ]


def find(samples: Sequence[Sample], name: str, **labels: str) -> list[Sample]:
    """Samples named ``name`` whose labels include ``labels``."""
    return [
        s
        for s in samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    ]


def value(samples: Sequence[Sample], name: str, **labels: str) -> float | None:
    """The value of the single matching sample, None if there is none."""
    found = find(samples, name, **labels)
    if not found:
        return None
    assert len(found) == 1, f"{name}{labels} matches {len(found)} samples: {found}"
    return found[0].value


def required(samples: Sequence[Sample], name: str, **labels: str) -> float:
    """``value``, for a sample that must be there."""
    found = value(samples, name, **labels)
    assert found is not None, f"no sample {name}{labels}"
    return found
