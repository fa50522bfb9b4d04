"""Listen address forms and the self-probe address derived from them."""

from __future__ import annotations

from netprobe_exporter.app import self_probe_address, split_listen_address


def test_listen_address_forms() -> None:
    assert split_listen_address(":9716") == ("", 9716)
    assert split_listen_address("127.0.0.1:0") == ("127.0.0.1", 0)
    assert split_listen_address("[::]:9716") == ("::", 9716)
    assert split_listen_address("[::1]:80") == ("::1", 80)
    assert self_probe_address("", 9716) == "127.0.0.1:9716"
    assert self_probe_address("::", 9716) == "[::1]:9716"
    assert self_probe_address("::1", 1) == "[::1]:1"
    assert self_probe_address("10.1.2.3", 1) == "10.1.2.3:1"
