"""The config schema seam: options declared once are read, checked, shown and redacted.

A toy section declares one option of every kind; the generic reader must build its dataclass
from valid YAML, word each kind's errors as the config does, hide its secrets and write it back
so that reading the written text gives the same value. Then a new option added to a prober's
declaration (and nothing else) must be parsed, shown at /config and the debug page, and
redacted.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from netprobe_exporter import blackbox, yamlcheck
from netprobe_exporter.config import ConfigError, parse_config
from netprobe_exporter.model import Secret
from netprobe_exporter.probes import PROBERS, tcp
from netprobe_exporter.redact import config_yaml
from netprobe_exporter.schema import (
    BOOL,
    IP_ADDRESS,
    PROBE_FILE,
    REGEX,
    REGEXES,
    SECRET_TEXT,
    STRING,
    STRINGS,
    TEXT,
    ByteSize,
    Check,
    Choice,
    Duration,
    Int,
    ListOf,
    Nested,
    Opt,
    Reading,
    Section,
    StringMap,
    at_most_one,
    require,
    soon,
)
from netprobe_exporter.yamlcheck import YAML_LOADER, Checker, is_secret_header


@dataclasses.dataclass(frozen=True, slots=True)
class Inner:
    name: str = ""
    level: int = 1


@dataclasses.dataclass(frozen=True, slots=True)
class Toy:
    flag: bool = False
    word: str = ""
    text: str = ""
    count: int = 5
    wait: float = 1.0
    size: int = 0
    pattern: re.Pattern[str] | None = None
    patterns: tuple[re.Pattern[str], ...] = ()
    words: tuple[str, ...] = ()
    color: str = "RED"
    headers: tuple[tuple[str, str], ...] = ()
    source: str | None = None
    toy_token_file: str | None = None
    toy_token: Secret | None = None
    inner: Inner = dataclasses.field(default_factory=Inner)
    inners: tuple[Inner, ...] = ()
    low: int = 0
    high: int = 0


def _order(r: Reading) -> None:
    low, high = r.values.get("low", 0), r.values.get("high", 0)
    if isinstance(low, int) and isinstance(high, int) and low > high:
        r.error("high", f"{high} is below low {low}")


INNER = Section(Inner(), (require("name", "name must be set", drop=True), Opt("name", STRING),
                          Opt("level", Int(1, 3))))  # fmt: skip
TOY = Section(
    Toy(),
    (
        Opt("flag", BOOL),
        Opt("word", STRING),
        Opt("text", TEXT),
        Opt("count", Int(1, 10)),
        Opt("wait", Duration(0.5)),
        Opt("size", ByteSize()),
        Opt("pattern", REGEX),
        Opt("patterns", REGEXES),
        Opt("words", STRINGS),
        Opt("color", Choice(("RED", "BLUE"), 'unknown color "{}"', str.upper,
                            refused={"GREEN": "green is not supported yet"})),
        Opt("headers", StringMap(secret=is_secret_header)),
        Opt("source", IP_ADDRESS),
        at_most_one("toy_token", "toy_token_file"),
        Opt("toy_token_file", PROBE_FILE, secret=True),
        Opt("toy_token", SECRET_TEXT, secret=True),
        Opt("inner", Nested(INNER)),
        Opt("inners", ListOf(Nested(INNER))),
        Opt("old_flag", BOOL, field="flag", deprecated="is deprecated: use flag",
            convert=lambda old: not old),
        Opt("low", Int(0, 100)),
        Opt("high", Int(0, 100)),
        Check(_order),
        soon("later"),
    ),
)  # fmt: skip


def _read(text: str) -> tuple[Toy | None, Checker]:
    c = Checker("t.yml")
    node = yaml.compose(text, Loader=YAML_LOADER)
    return TOY.read(c, node, "toy"), c


VALID = """\
flag: true
word: hello
text: 123
count: 7
wait: 1m30s
size: 2KiB
pattern: "^+OK"
patterns: [a+, b]
words: [x, y]
color: blue
headers: {Authorization: Bearer t0ken, X-Trace: on}
source: 127.0.0.1
toy_token: hunter2
inner: {name: one, level: 2}
inners: [{name: a}, {name: b, level: 3}]
low: 1
high: 2
"""


def test_a_section_of_every_kind_reads_valid_yaml_into_its_dataclass() -> None:
    toy, c = _read(VALID)
    assert c.errors == [] and c.warnings == []
    assert toy is not None
    assert (toy.flag, toy.word, toy.text, toy.count, toy.wait, toy.size) == (
        True, "hello", "123", 7, 90.0, 2048,
    )  # fmt: skip
    assert toy.pattern is not None and toy.pattern.search("OK")
    assert [p.pattern for p in toy.patterns] == ["a+", "b"] and toy.words == ("x", "y")
    assert toy.color == "BLUE" and toy.source == "127.0.0.1"
    assert toy.headers == (("Authorization", "Bearer t0ken"), ("X-Trace", "on"))
    assert toy.toy_token is not None and toy.toy_token.reveal() == "hunter2"
    assert toy.inner == Inner("one", 2) and toy.inners == (Inner("a", 1), Inner("b", 3))
    # what is not given keeps the dataclass's default
    empty, c = _read("{}")
    assert empty == Toy() and c.errors == []


def test_each_kind_words_its_errors_as_the_config_does() -> None:
    toy, c = _read(
        "flag: 1\nword: 2\ntext: [a]\ncount: 11\nwait: 0.1s\nsize: 12\npattern: '('\n"
        "patterns: x\nwords: [1]\ncolor: green\nheaders: [a]\nsource: example.com\n"
        "inner: {level: 9}\ninners: [{name: a, level: 0}]\nlow: 5\nhigh: 4\nlater: 1\nodd: 1\n"
    )
    assert toy is not None
    assert c.errors == [
        "t.yml:17: toy.later: is not supported yet",
        "t.yml:18: toy.odd: unknown key",
        't.yml:1: toy.flag: must be true or false, not "1"',
        't.yml:2: toy.word: must be a string, not "2"',
        "t.yml:3: toy.text: must be a string, not a list",
        "t.yml:4: toy.count: 11 is out of range 1-10",
        't.yml:5: toy.wait: "0.1s" is too short (minimum 0.5s)',
        't.yml:6: toy.size: "12" is not a size with a unit (e.g. 512B, 1KB, 10MiB)',
        't.yml:7: toy.pattern: "(" is not a valid regular expression: missing ), unterminated '
        "subpattern at position 0",
        't.yml:8: toy.patterns: must be a list, not "x"',
        't.yml:9: toy.words[0]: must be a string, not "1"',
        "t.yml:10: toy.color: green is not supported yet",
        "t.yml:11: toy.headers: must be a mapping of strings, not a list",
        't.yml:12: toy.source: "example.com" is not an IP address',
        "t.yml:13: toy.inner.name: name must be set",
        "t.yml:14: toy.inners[0].level: 0 is out of range 1-3",
        "t.yml:16: toy.high: 4 is below low 5",
    ]
    _, c = _read("color: pink\n")
    assert c.errors == ['t.yml:1: toy.color: unknown color "pink"']


def test_checks_and_aliases_run_where_declared() -> None:
    toy, c = _read("old_flag: false\n")
    assert toy is not None and toy.flag is True
    assert c.warnings == ["t.yml:1: toy.old_flag: is deprecated: use flag"]
    toy, c = _read("toy_token: a\ntoy_token_file: /etc/hostname\n")
    assert c.errors == ["t.yml:2: toy.toy_token_file: at most one of toy_token, toy_token_file "
                        "may be set"]  # fmt: skip
    assert toy is not None and toy.toy_token is None and toy.toy_token_file is None
    # a dropped list item is left out; a refused mapping reads as None
    _, c = _read("inners: [{level: 2}, {name: b}]\n")
    assert c.errors == ["t.yml:1: toy.inners[0].name: name must be set"]
    toy, c = _read("[]")
    assert toy is None and c.errors == ["t.yml:1: toy: must be a mapping, not a list"]


def test_secrets_are_withheld_from_errors_by_their_declaration() -> None:
    assert {"toy_token", "toy_token_file"} <= yamlcheck.SECRET_KEYS
    _, c = _read("toy_token: [hunter2]\n")
    assert c.errors == ["t.yml:1: toy.toy_token: must be a string, not a list"]
    _, c = _read("toy_token_file: /nonexistent/hunter2\n")
    assert c.warnings == [
        't.yml:1: toy.toy_token_file: cannot read file "<secret>" now: its probes fail until it can'
    ]


def test_the_derived_secret_keys_are_the_ones_errors_always_withheld() -> None:
    """The prober declarations (and the web config's own keys) give exactly the lists that
    used to be written out by hand."""
    keys = {"password", "password_file", "bearer_token", "bearer_token_file", "credentials",
            "credentials_file", "key_file", "client_secret", "client_secret_file",
            "secrets"}  # fmt: skip
    subtrees = keys | {"basic_auth", "authorization", "headers", "oauth2", "tls_config",
                       "proxy_connect_header", "tls_server_config", "basic_auth_users",
                       "metadata", "proxy_url", "http_config", "http_headers"}  # fmt: skip
    assert keys <= yamlcheck.SECRET_KEYS and subtrees <= yamlcheck.SECRET_SUBTREES
    ours = {"toy_token", "toy_token_file"}
    assert yamlcheck.SECRET_KEYS - ours == keys
    assert yamlcheck.SECRET_SUBTREES - ours == subtrees


def test_the_writer_redacts_and_what_it_writes_reads_back_the_same() -> None:
    toy, c = _read(VALID)
    assert toy is not None
    shown = TOY.dump(toy)
    assert shown["toy_token"] == "<secret>"
    assert shown["headers"] == {"Authorization": "<secret>", "X-Trace": "on"}
    assert (shown["wait"], shown["size"], shown["pattern"]) == ("1m30s", "2KiB", "^OK")
    assert "hunter2" not in yaml.safe_dump(shown) and "t0ken" not in yaml.safe_dump(shown)
    # without its secrets, the written section reads back to the same value
    toy = dataclasses.replace(toy, toy_token=None, headers=(("X-Trace", "on"),))
    again, c = _read(yaml.safe_dump(TOY.dump(toy)))
    assert c.errors == [] and again is not None
    assert TOY.dump(again) == TOY.dump(toy)
    assert dataclasses.replace(again, pattern=None, patterns=()) == dataclasses.replace(
        toy, pattern=None, patterns=()
    )


@dataclasses.dataclass(frozen=True, slots=True)
class TCPWithToken(tcp.TCPProbe):
    greeting: str = ""
    api_token: Secret | None = None


@pytest.fixture
def tcp_with_token() -> Iterator[None]:
    """tcp's declaration with two more options, and nothing else changed."""
    spec = PROBERS["tcp"]
    options = dataclasses.replace(
        spec.options,
        default=TCPWithToken(),
        items=(*spec.options.items, Opt("greeting", TEXT),
               Opt("api_token", SECRET_TEXT, secret=True)),
    )  # fmt: skip
    PROBERS["tcp"] = dataclasses.replace(spec, options=options)
    try:
        yield
    finally:
        PROBERS["tcp"] = spec


def test_an_option_added_to_a_prober_is_parsed_shown_and_redacted(
    tcp_with_token: None, tmp_path: Path
) -> None:
    text = (
        "modules:\n  m:\n    prober: tcp\n"
        "    tcp: {greeting: hello, api_token: s3cr3t-value, tls: true}\n"
        "targets:\n  - {address: '127.0.0.1:1', module: m}\n"
    )
    config = parse_config(text, "c.yml")
    options = config.modules["m"].options
    assert isinstance(options, TCPWithToken)
    assert options.greeting == "hello" and options.tls
    assert options.api_token is not None and options.api_token.reveal() == "s3cr3t-value"
    written = config_yaml(config)
    shown = yaml.safe_load(written)["modules"]["m"]["tcp"]
    assert shown["greeting"] == "hello" and shown["api_token"] == "<secret>"
    assert "s3cr3t-value" not in written
    debug = blackbox.module_yaml(config.modules["m"])
    assert "api_token: <secret>" in debug and "s3cr3t-value" not in debug
    with pytest.raises(ConfigError) as exc:
        parse_config("modules:\n  m: {prober: tcp, tcp: {api_token: [s3cr3t-value]}}\n", "c.yml")
    assert exc.value.errors == ["c.yml:2: modules.m.tcp.api_token: must be a string, not a list"]
