"""Config sections declared once: each option's key, kind, field, secrecy and checks.

A ``Section`` lists its options (``Opt``) and checks (``Check``) in the order they are read, so
errors come in that order after the mapping's own (unknown, duplicate, unsupported keys). The
generic reader walks a YAML mapping node against the declarations, collects the values read and
builds the section's dataclass from its default with ``dataclasses.replace``: the defaults are
the dataclass's own. The writer (``/config``, the debug page) walks the same declarations, so a
value is shown as ``<secret>`` because its option says it is one; the keys of secret options
also feed ``yamlcheck``'s list of keys whose values errors never echo.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import yaml

from netprobe_exporter import yamlcheck
from netprobe_exporter.addresses import parse_host
from netprobe_exporter.durations import byte_size, format_duration
from netprobe_exporter.model import Secret
from netprobe_exporter.yamlcheck import REDACTED, Checker

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

V = TypeVar("V")
T = TypeVar("T", bound="DataclassInstance")
T_co = TypeVar("T_co", bound="DataclassInstance", covariant=True)

#: the error for a key blackbox knows that is not run yet
SOON = "is not supported yet"
_EMPTY: tuple[object, ...] = (None, (), [], "", {})


def plain(value: object) -> object:
    """A value with no declaration as plain YAML-able data (dataclasses, patterns, secrets)."""
    if isinstance(value, Secret):
        return REDACTED
    if isinstance(value, re.Pattern):
        return value.pattern
    if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out: dict[str, object] = {}
        for f in dataclasses.fields(value):
            v = plain(getattr(value, f.name))
            if v not in _EMPTY:
                out[f.name] = v
        return out
    if isinstance(value, tuple | list):
        if value and all(isinstance(x, tuple) and len(x) == 2 for x in value):
            return {str(k): plain(v) for k, v in value}  # header and label pairs
        return [plain(x) for x in value]
    return value


class Kind(Generic[V]):
    """How one option's value is read from its node and written back."""

    def read(self, c: Checker, node: yaml.Node, path: str) -> V | None:
        """The value, or None: an error was recorded, or the value means "not set"."""
        raise NotImplementedError

    def dump(self, value: V) -> object:
        return plain(value)

    def holds_secret(self) -> bool:
        """Whether a value of this kind may hold a credential (errors describe, not quote)."""
        return False


@dataclass(frozen=True, slots=True)
class Scalar(Kind[V]):
    """A kind that is one ``Checker`` reader (and optionally its own writer)."""

    reader: Callable[[Checker, yaml.Node, str], V | None]
    writer: Callable[[V], object] | None = None

    def read(self, c: Checker, node: yaml.Node, path: str) -> V | None:
        return self.reader(c, node, path)

    def dump(self, value: V) -> object:
        return plain(value) if self.writer is None else self.writer(value)


def _any(c: Checker, node: yaml.Node, path: str) -> None:
    return None


def _ip(c: Checker, node: yaml.Node, path: str) -> str | None:
    src = c.string(node, path)
    if src is None:
        return None
    try:
        if parse_host(src) == 0:
            raise ValueError
    except ValueError:
        c.error(node, path, f'"{src}" is not an IP address')
        return None
    return src


def _secret_text(c: Checker, node: yaml.Node, path: str) -> Secret | None:
    text = c.text(node, path)
    return None if text is None else Secret(text)


BOOL = Scalar(Checker.boolean)
STRING = Scalar(Checker.string)
#: any scalar, read as its text (``send: 123``)
TEXT = Scalar(Checker.text)
REGEX = Scalar(Checker.regex)
#: a file a probe reads when it runs: unreadable now is a warning
PROBE_FILE = Scalar(Checker.probe_time_file)
IP_ADDRESS = Scalar(_ip)
SECRET_TEXT = Scalar(_secret_text)
#: a key that is recognised and otherwise not looked at
ANY: Scalar[None] = Scalar(_any)


@dataclass(frozen=True, slots=True)
class Int(Kind[int]):
    lo: int
    hi: int
    #: 0 means the default (icmp's ``ttl: 0``)
    zero_unset: bool = False

    def read(self, c: Checker, node: yaml.Node, path: str) -> int | None:
        value = c.integer(node, path, self.lo, self.hi)
        return None if self.zero_unset and value == 0 else value


@dataclass(frozen=True, slots=True)
class Duration(Kind[float]):
    minimum: float = 0.0

    def read(self, c: Checker, node: yaml.Node, path: str) -> float | None:
        return c.duration(node, path, self.minimum)

    def dump(self, value: float) -> object:
        return format_duration(value)


@dataclass(frozen=True, slots=True)
class ByteSize(Kind[int]):
    """blackbox's Base2Bytes; ``nonzero``: 0B is refused."""

    nonzero: bool = False

    def read(self, c: Checker, node: yaml.Node, path: str) -> int | None:
        size = c.byte_size(node, path)
        if size == 0 and self.nonzero:
            c.error(node, path, "must be at least 1B")
            return None
        return size

    def dump(self, value: int) -> object:
        return byte_size(value)


@dataclass(frozen=True, slots=True)
class Choice(Kind[str]):
    """A string from ``values``; ``fold`` (``str.upper``) is applied before the comparison and
    kept; ``wrong`` is the error with ``{}`` for the value given; ``refused`` maps a folded
    value to its own error."""

    values: tuple[str, ...]
    wrong: str
    fold: Callable[[str], str] | None = None
    refused: Mapping[str, str] = field(default_factory=dict)

    def read(self, c: Checker, node: yaml.Node, path: str) -> str | None:
        value = c.string(node, path)
        if value is None:
            return None
        folded = value if self.fold is None else self.fold(value)
        if folded in self.refused:
            c.error(node, path, self.refused[folded])
        elif folded not in self.values:
            c.error(node, path, self.wrong.format(value))
        else:
            return folded
        return None


@dataclass(frozen=True, slots=True)
class ListOf(Kind[tuple[V, ...]]):
    """A list, each item read by ``item`` at ``path[i]``; items read as None are left out."""

    item: Kind[V]

    def read(self, c: Checker, node: yaml.Node, path: str) -> tuple[V, ...] | None:
        items = c.sequence(node, path)
        if items is None:
            return None
        out = [self.item.read(c, n, f"{path}[{i}]") for i, n in enumerate(items)]
        return tuple(x for x in out if x is not None)

    def dump(self, value: tuple[V, ...]) -> object:
        return [self.item.dump(x) for x in value]

    def holds_secret(self) -> bool:
        return self.item.holds_secret()


STRINGS = ListOf(STRING)
REGEXES = ListOf(REGEX)

Pairs = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class StringMap(Kind[Pairs]):
    """A mapping of strings, kept as pairs; ``secret`` names the keys whose values are shown
    as ``<secret>`` (``Authorization``, ``Cookie`` headers)."""

    secret: Callable[[str], bool] | None = None

    def read(self, c: Checker, node: yaml.Node, path: str) -> Pairs | None:
        found = c.string_map(node, path)
        return None if found is None else tuple(found.items())

    def dump(self, value: Pairs) -> object:
        hide = self.secret or (lambda _: False)
        return {k: REDACTED if hide(k) else v for k, v in value}

    def holds_secret(self) -> bool:
        return self.secret is not None


@dataclass(frozen=True, slots=True)
class Nested(Kind[T]):
    """A sub-section with its own declarations (``tls_config``, ``basic_auth``)."""

    section: Section[T]

    def read(self, c: Checker, node: yaml.Node, path: str) -> T | None:
        return self.section.read(c, node, path)

    def dump(self, value: T) -> object:
        return self.section.dump(value)

    def holds_secret(self) -> bool:
        return self.section.holds_secret()


@dataclass(frozen=True, slots=True)
class Inline(Kind[dict[str, object]]):
    """A sub-mapping whose options fill fields of the enclosing section (``authorization``)."""

    section: Section[DataclassInstance]

    def read(self, c: Checker, node: yaml.Node, path: str) -> dict[str, object] | None:
        return self.section.values(c, node, path)

    def holds_secret(self) -> bool:
        return self.section.holds_secret()


@dataclass(frozen=True, slots=True)
class Opt(Generic[V]):
    """One option: its YAML key, kind and the dataclass field it fills (``field`` None: the
    key is checked and not kept; default: the key itself)."""

    key: str
    kind: Kind[V]
    field: str | None = ""
    #: its value (or the file it names) is a credential: shown as ``<secret>``, never echoed
    secret: bool = False
    #: its value may hold a credential somewhere inside (``oauth2``): errors describe it
    holds_secret: bool = False
    #: recognised but refused with this error (``SOON``)
    unsupported: str | None = None
    #: accepted with this warning (an old name of another option)
    deprecated: str | None = None
    #: what the value read becomes in the field (``no_follow_redirects``: its negation)
    convert: Callable[[V], object] | None = None

    def __post_init__(self) -> None:
        if self.field == "":
            object.__setattr__(self, "field", self.key)
        if self.secret:
            yamlcheck.declare_secret(self.key)
        if self.secret or self.holds_secret or self.kind.holds_secret():
            yamlcheck.declare_secret_subtree(self.key)

    def show(self, value: V) -> object:
        if self.secret and value:
            return REDACTED
        return self.kind.dump(value)


def soon(key: str, holds_secret: bool = False) -> Opt[None]:
    """A key blackbox knows that is not run yet: naming it is an error that says so."""
    return Opt(key, ANY, field=None, holds_secret=holds_secret, unsupported=SOON)


@dataclass(slots=True)
class Reading:
    """A section being read: what checks see and may change."""

    c: Checker
    #: the section's node (the enclosing one when the section is absent), for errors
    node: yaml.Node | None
    path: str
    #: the value node of each key given
    nodes: dict[str, yaml.Node]
    #: each field's value read so far
    values: dict[str, object] = field(default_factory=dict)
    #: keys whose value was refused
    failed: set[str] = field(default_factory=set)
    #: keys a check has ruled out: not read
    skip: set[str] = field(default_factory=set)

    def at(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def error(self, key: str, what: str, on_section: bool = False) -> None:
        """An error about ``key``: at its node, or at the section's (``on_section``)."""
        node = self.node if on_section or key not in self.nodes else self.nodes[key]
        self.c.error(node, self.at(key), what)


@dataclass(frozen=True, slots=True)
class Check:
    """A check at its place among the options: it may record errors, change values, or
    return False to drop the section (a list item left out, nothing more read)."""

    run: Callable[[Reading], bool | None]


def require(key: str, what: str, drop: bool = False) -> Check:
    """``key`` must be given (the error is at the section's node); ``drop``: or nothing else
    of the section is read."""

    def run(r: Reading) -> bool:
        if key in r.nodes:
            return True
        r.error(key, what, on_section=True)
        return not drop

    return Check(run)


def at_most_one(*keys: str) -> Check:
    """At most one of ``keys``: more is an error at the second, and none of them is read."""

    def run(r: Reading) -> None:
        given = [k for k in keys if k in r.nodes]
        if len(given) > 1:
            r.error(given[1], f"at most one of {', '.join(given)} may be set")
            r.skip.update(given)

    return Check(run)


#: what a section lists, in reading order (options of any kind, and checks)
Item = Opt[Any] | Check


@dataclass(frozen=True, slots=True)
class Section(Generic[T_co]):
    """A mapping's declarations and the dataclass value its fields start from."""

    default: T_co
    items: tuple[Item, ...]
    _allowed: dict[str, str | None] = field(init=False, repr=False, compare=False)
    _by_field: dict[str, Opt[Any]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        allowed: dict[str, str | None] = {}
        by_field: dict[str, Opt[Any]] = {}
        for opt in self.options():
            allowed[opt.key] = opt.unsupported
            if isinstance(opt.kind, Inline):
                for sub in opt.kind.section.options():
                    if sub.field:
                        by_field.setdefault(sub.field, sub)
            elif opt.field and opt.deprecated is None:
                by_field.setdefault(opt.field, opt)
        object.__setattr__(self, "_allowed", allowed)
        object.__setattr__(self, "_by_field", by_field)

    def options(self) -> list[Opt[Any]]:
        return [item for item in self.items if isinstance(item, Opt)]

    def holds_secret(self) -> bool:
        return any(o.secret or o.holds_secret or o.kind.holds_secret() for o in self.options())

    def reading(
        self, c: Checker, node: yaml.Node | None, path: str, where: yaml.Node | None = None
    ) -> Reading | None:
        """Read ``node`` (None: the section is absent, ``where`` is what holds it) against the
        declarations; None when the mapping is refused or a check dropped the section."""
        if node is None:
            nodes: dict[str, yaml.Node] = {}
        else:
            found = c.mapping(node, path, self._allowed)
            if found is None:
                return None
            nodes, where = found, node
        r = Reading(c, where, path, nodes)
        for item in self.items:
            if isinstance(item, Check):
                if item.run(r) is False:
                    return None
            elif item.key in nodes:  # most options are not given: no call for them
                _read_opt(r, item)
        return r

    def values(
        self, c: Checker, node: yaml.Node | None, path: str, where: yaml.Node | None = None
    ) -> dict[str, object] | None:
        """Each field's value read (``reading``)."""
        r = self.reading(c, node, path, where)
        return None if r is None else r.values

    def build(self, r: Reading) -> T_co:
        """The section's value from what ``r`` read: the default with those fields replaced."""
        return dataclasses.replace(self.default, **r.values)

    def read(
        self, c: Checker, node: yaml.Node | None, path: str, where: yaml.Node | None = None
    ) -> T_co | None:
        """The section's value, or None (refused or dropped; the errors say why)."""
        r = self.reading(c, node, path, where)
        return None if r is None else self.build(r)

    def read_or_default(
        self, c: Checker, node: yaml.Node | None, path: str, where: yaml.Node | None = None
    ) -> T_co:
        found = self.read(c, node, path, where)
        return self.default if found is None else found

    def dump(self, value: object) -> dict[str, object]:
        """``value``'s fields as YAML-able data in field order, under the fields' names,
        secrets redacted, empty ones left out (a prober whose keys differ from its fields,
        http's ``authorization``, regroups them in its ``shown`` hook)."""
        out: dict[str, object] = {}
        if not dataclasses.is_dataclass(value) or isinstance(value, type):
            return out
        for f in dataclasses.fields(value):
            v = getattr(value, f.name)
            opt = self._by_field.get(f.name)
            shown = plain(v) if opt is None else opt.show(v)
            if shown not in _EMPTY:
                out[f.name] = shown
        return out


def _read_opt(r: Reading, opt: Opt[Any]) -> None:
    key = opt.key
    if key in r.skip or opt.unsupported is not None:
        return
    node = r.nodes[key]
    before = len(r.c.errors)
    value = opt.kind.read(r.c, node, r.at(key))
    if len(r.c.errors) > before:
        r.failed.add(key)
        return
    if value is None:
        return
    if opt.deprecated is not None:
        r.c.warn(node, r.at(key), opt.deprecated)
    if isinstance(opt.kind, Inline) and isinstance(value, dict):
        r.values.update(value)
    elif opt.field:
        r.values[opt.field] = value if opt.convert is None else opt.convert(value)
