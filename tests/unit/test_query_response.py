"""query_response's newer keys (``expect_bytes``, ``labels``), the unix prober's options and
targets, and the TLS label values, in memory: configs as blackbox 0.28's CONFIGURATION.md
writes them, conversations over a StringTransport on a MemoryReactorClock."""

from __future__ import annotations

import textwrap
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

from netprobe_exporter import blackbox
from netprobe_exporter.config import ConfigError, parse_config, target_address_error
from netprobe_exporter.model import ProbeResult
from netprobe_exporter.probes import ProbeFailure, tcp, unix
from netprobe_exporter.probes.tls import cipher_name, go_serial


def _config(text: str) -> Any:
    return parse_config(textwrap.dedent(text), "c.yml")


def _errors(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        _config(text)
    return info.value.errors


def _steps(yaml_steps: str, prober: str = "tcp") -> tuple[tcp.QueryResponse, ...]:
    body = textwrap.indent(textwrap.dedent(yaml_steps), " " * 8)
    cfg = _config(
        f"modules:\n  m:\n    prober: {prober}\n    {prober}:\n      query_response:\n{body}"
    )
    return cfg.modules["m"].options.query_response  # type: ignore[no-any-return]


# options


def test_expect_bytes_labels_and_unix_parse_as_documented() -> None:
    steps = _steps(
        """\
        - expect: "^SSH-2.0-(\\\\S+)"
          labels:
            - name: version
              value: "${1}"
        - expect_bytes: "\\x00\\x01ok"
          send: "x"
        """
    )
    assert steps[0].labels == (tcp.Label("version", "${1}"),)
    assert steps[1].expect_bytes == b"\x00\x01ok"
    unix_steps = _steps('- expect_bytes: "ok"\n- starttls: true\n', prober="unix")
    assert [s.expect_bytes for s in unix_steps] == [b"ok", b""]
    assert unix_steps[1].starttls


def test_expect_and_expect_bytes_are_mutually_exclusive() -> None:
    found = _errors(
        "modules:\n  m:\n    prober: tcp\n    tcp:\n      query_response:\n"
        '        - {expect: "a", expect_bytes: "b"}\n'
    )
    assert found == [
        "c.yml:6: modules.m.tcp.query_response[0].expect_bytes: "
        "at most one of expect, expect_bytes may be set"
    ]


@pytest.mark.parametrize(
    ("labels", "problem"),
    [
        ('[{name: "1bad", value: x}]', 'labels[0].name: "1bad" is not a valid label name'),
        ('[{name: "__x", value: x}]', 'labels[0].name: "__x" is not a valid label name'),
        ("[{value: x}]", "labels[0].name: a label needs a name"),
        ("[{name: a, value: x}, {name: a, value: y}]", 'labels: label "a" is given twice'),
    ],
)
def test_bad_labels_are_refused(labels: str, problem: str) -> None:
    found = _errors(
        "modules:\n  m:\n    prober: tcp\n    tcp:\n      query_response:\n"
        f'        - {{expect: "a", labels: {labels}}}\n'
    )
    assert len(found) == 1 and found[0].endswith(problem), found


def test_labels_without_expect_warn() -> None:
    cfg = _config(
        "modules:\n  m:\n    prober: tcp\n    tcp:\n      query_response:\n"
        "        - {send: a, labels: [{name: a, value: b}]}\n"
    )
    assert any("labels take effect only with expect" in w for w in cfg.warnings), cfg.warnings


def test_expect_bytes_is_bounded() -> None:
    long = "x" * (tcp.MAX_EXPECT_BYTES + 1)
    found = _errors(
        "modules:\n  m:\n    prober: tcp\n    tcp:\n      query_response:\n"
        f'        - {{expect_bytes: "{long}"}}\n'
    )
    assert len(found) == 1 and "more than the 65536 allowed" in found[0], found


# unix targets


@pytest.mark.parametrize(
    ("address", "problem"),
    [
        ("/run/app.sock", None),
        ("relative/app.sock", None),
        ("@abstract-name", None),
        ("", "it is empty"),
        ("/run/a\0b", "NUL"),
        ("unix:///run/app.sock", "is a URL"),
        ("/" + "x" * 107, "at most 107 bytes, this one has 108"),
        ("@" + "x" * 107, None),
    ],
)
def test_unix_targets_are_paths(address: str, problem: str | None) -> None:
    found = unix.check_address(address)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found


def test_a_unix_module_refuses_a_url_target_in_the_config() -> None:
    cfg = _config("modules:\n  u: {prober: unix}\n")
    assert target_address_error("/run/x.sock", cfg.modules["u"]) is None
    error = target_address_error("unix:///run/x.sock", cfg.modules["u"])
    assert error is not None and "a unix target is the socket's path" in error


# conversations in memory


def _converse(
    steps: tuple[tcp.QueryResponse, ...], chunks: list[bytes], later: list[bytes] | None = None
) -> tuple[ProbeResult, tcp.TCPDetails, BaseException | None, StringTransport]:
    """Run ``steps`` against a peer that sent ``chunks`` and closed (``later``: sends those,
    then closes, once the steps are under way)."""
    clock = MemoryReactorClock()
    proto = tcp._Conversation(clock)
    transport = StringTransport()
    proto.makeConnection(transport)
    for c in chunks:
        proto.dataReceived(c)
    if later is None:
        proto.connectionLost(Failure(ConnectionDone()))
    result = ProbeResult(False, "error", 0.0)
    details = tcp.TCPDetails(dialed=True)
    result.details = details

    async def body() -> None:
        for step in steps:
            await tcp._step(step, proto, None, False, details, result)

    errors: list[BaseException] = []
    d = Deferred.fromCoroutine(body())
    d.addErrback(lambda f: errors.append(f.value))
    for _ in range(10):
        clock.advance(0)
    if later is not None:
        for c in later:
            proto.dataReceived(c)
            clock.advance(0)
        proto.connectionLost(Failure(ConnectionDone()))
        for _ in range(10):
            clock.advance(0)
    assert d.called, "the steps did not finish"
    return result, details, errors[0] if errors else None, transport


def test_expect_bytes_sees_the_exact_bytes_crlf_included_after_a_line() -> None:
    steps = _steps('- expect: "^hello$"\n- expect_bytes: "a\\r\\nb"\n- expect: "^c$"\n')
    _, details, error, _ = _converse(steps, [b"hello\r\na\r", b"\nbc\n"])
    assert error is None
    assert not details.failed_due_to_bytes


def test_expect_bytes_waits_for_bytes_still_to_come() -> None:
    steps = _steps('- expect_bytes: "\\x00\\x01\\x02\\x03"\n- send: "done"\n')
    _, _, error, transport = _converse(steps, [b"\x00"], later=[b"\x01\x02", b"\x03"])
    assert error is None
    assert transport.value() == b"done\n"


def test_expect_bytes_mismatch_and_shortfall() -> None:
    steps = _steps('- expect_bytes: "abcd"\n')
    result, details, error, _ = _converse(steps, [b"abXd"])
    assert isinstance(error, ProbeFailure) and "bytes did not match" in str(error)
    assert details.failed_due_to_bytes
    assert "probe_failed_due_to_bytes 1\n" in blackbox.render(result)
    _, details, error, _ = _converse(steps, [b"ab"])
    assert isinstance(error, ProbeFailure) and "fewer than the 4 expected" in str(error)
    assert not details.failed_due_to_bytes


def test_an_unterminated_last_line_keeps_its_bytes() -> None:
    steps = _steps('- expect: "^x$"\n- expect_bytes: "tail"\n')
    _, _, error, _ = _converse(steps, [b"x\ntail"])
    assert error is None
    steps = _steps('- expect_bytes: "tail\\n"\n')  # no newline came: a shortfall, not a match
    _, _, error, _ = _converse(steps, [b"tail"])
    assert isinstance(error, ProbeFailure)


def test_labels_expand_the_match_into_probe_expect_info() -> None:
    steps = _steps(
        """\
        - expect: "^(?P<proto>\\\\w+)/(\\\\d+)"
          labels:
            - {name: proto, value: "${proto}"}
            - {name: version, value: "v$2"}
            - {name: fixed, value: "x"}
        """
    )
    result, details, error, _ = _converse(steps, [b"junk\nSMTP/2 hello\n"])
    assert error is None
    assert details.expect_info == [(("proto", "SMTP"), ("version", "v2"), ("fixed", "x"))]
    text = blackbox.render(result)
    assert "# TYPE probe_expect_info gauge\n" in text
    assert 'probe_expect_info{fixed="x",proto="SMTP",version="v2"} 1\n' in text


# TLS label values as Go writes them


@pytest.mark.parametrize(
    ("serial", "shown"),
    [(0x0A, "0a"), (0x0102, "0102"), (0x1F2E3D, "1f2e3d"), (0, ""), (-0x05, "05")],
)
def test_serial_numbers_are_the_bytes_in_hex(serial: int, shown: str) -> None:
    assert go_serial(serial) == shown


@pytest.mark.parametrize(
    ("openssl", "go"),
    [
        ("TLS_AES_128_GCM_SHA256", "TLS_AES_128_GCM_SHA256"),
        ("ECDHE-RSA-AES128-GCM-SHA256", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"),
        ("ECDHE-ECDSA-CHACHA20-POLY1305", "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"),
        ("DHE-RSA-AES128-GCM-SHA256", "0x009E"),  # not one of Go's: its id
        (None, ""),
    ],
)
def test_cipher_names_are_gos(openssl: str | None, go: str) -> None:
    assert cipher_name(openssl) == go


def test_probe_policy_sees_a_unix_path_as_a_name_without_address() -> None:
    from netprobe_exporter.policy import ProbePolicy, parse_rule

    path = "/run/app.sock"
    networks = ProbePolicy(allow=(parse_rule("127.0.0.0/8"),))
    assert networks.check(path, "") == "/run/app.sock matches no allow rule"
    assert ProbePolicy(allow=(parse_rule("*"),)).check(path, "") is None
    assert ProbePolicy(deny=(parse_rule("0.0.0.0/0"),)).check(path, "") is None
    assert networks.check("a.test", "10.0.0.1") == "a.test (10.0.0.1) matches no allow rule"
