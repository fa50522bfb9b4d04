"""The grpc prober: recognised in a module (so a whole blackbox.yml loads), not run yet."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from netprobe_exporter import probes
from netprobe_exporter.model import Options
from netprobe_exporter.probes import ProberSpec

if TYPE_CHECKING:
    import yaml

    from netprobe_exporter.yamlcheck import Checker

_KEYS = ("service", "tls", "tls_config", "ip_protocol_fallback", "preferred_ip_protocol")


@dataclass(frozen=True, slots=True)
class GRPCProbe(Options):
    runnable: ClassVar[bool] = False


def parse(c: Checker, node: yaml.Node | None, path: str, where: yaml.Node) -> GRPCProbe:
    """Key names only, so typos still show."""
    if node is not None:
        c.mapping(node, path, dict.fromkeys(_KEYS))
    return GRPCProbe()


PROBER = probes.register(
    ProberSpec(
        name="grpc",
        parse=parse,
        check_address=lambda address: None,
        probe=None,
        default=GRPCProbe(),
    )
)
