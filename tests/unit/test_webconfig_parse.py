"""The web config file: its errors and the dummy hash that evens out unknown users."""

from __future__ import annotations

import bcrypt
import pytest
from twisted.internet.testing import MemoryReactor
from twisted.web.resource import Resource

from netprobe_exporter import webconfig
from netprobe_exporter.config import ConfigError
from netprobe_exporter.webconfig import parse_web_config


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("basic_auth_users:\n  u: plain\n", "w.yml:2: basic_auth_users.u: must be a bcrypt hash"),
        ("tls_server_config:\n  key_file: /nope\n", "tls_server_config.cert_file: missing"),
        ("tls_server_config:\n  cert_file: /etc/hostname\n  key_file: /etc/hostname\n"
         "  client_auth_type: Sometimes\n", '"Sometimes" is not one of'),
        ("bogus: 1\n", "w.yml:1: bogus: unknown key"),
    ],
)  # fmt: skip
def test_bad_web_configs_name_the_key(text: str, error: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_web_config(text, "w.yml")
    assert any(error in e for e in info.value.errors), info.value.errors


def test_the_dummy_hash_has_the_highest_configured_cost(monkeypatch: pytest.MonkeyPatch) -> None:
    users = {
        "a": bcrypt.hashpw(b"a", bcrypt.gensalt(5)),
        "b": bcrypt.hashpw(b"b", bcrypt.gensalt(6)),
    }
    guard = webconfig.Guard(Resource(), MemoryReactor(), webconfig.WebConfig(users=users))
    cost = guard._dummy_cost
    assert cost == 6
    checked: list[bytes] = []
    real = bcrypt.checkpw

    def checkpw(password: bytes, hashed: bytes) -> bool:
        checked.append(hashed)
        return real(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", checkpw)
    assert webconfig._check(b"x", None, cost, []) is False  # an unknown user
    assert webconfig._check(b"x", None, cost, [True]) is False  # the client went away: no check
    assert [webconfig.hash_cost(h) for h in checked] == [6]
