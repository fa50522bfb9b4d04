"""The icmp prober when this host allows no ICMP socket at all."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.testing import MemoryReactorClock

from netprobe_exporter.probes import icmp as icmp_prober


def test_no_icmp_socket_allowed_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Neither an unprivileged datagram socket nor a raw one: say how to allow one."""
    real = icmp_prober.socket.socket

    def refuse(family: int, kind: int, proto: int = 0) -> Any:
        if proto in (icmp_prober.socket.IPPROTO_ICMP, icmp_prober.socket.IPPROTO_ICMPV6):
            raise PermissionError(13, "Permission denied")
        return real(family, kind, proto)

    monkeypatch.setattr(icmp_prober.socket, "socket", refuse)
    with pytest.raises(OSError) as info:
        icmp_prober.IcmpSocket(MemoryReactorClock(), icmp_prober.socket.AF_INET, None)
    assert "ping_group_range" in str(info.value) and "CAP_NET_RAW" in str(info.value)
