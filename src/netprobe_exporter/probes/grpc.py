"""The grpc prober: recognised in a module (so a whole blackbox.yml loads), not run yet."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from netprobe_exporter import probes
from netprobe_exporter.model import Options
from netprobe_exporter.probes import ProberSpec
from netprobe_exporter.schema import ANY, Opt, Section


@dataclass(frozen=True, slots=True)
class GRPCProbe(Options):
    runnable: ClassVar[bool] = False


#: key names only, so typos still show
OPTIONS = Section(
    GRPCProbe(),
    tuple(
        Opt(key, ANY, field=None)
        for key in ("service", "tls", "tls_config", "ip_protocol_fallback", "preferred_ip_protocol")
    ),
)


PROBER = probes.register(
    ProberSpec(
        name="grpc",
        options=OPTIONS,
        check_address=lambda address: None,
        probe=None,
    )
)
