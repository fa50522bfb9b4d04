"""Typed reading of composed YAML nodes, collecting ``file:line: key: what`` errors.

Validation walks the node tree (``yaml.compose``) rather than constructed Python objects, so every
error names the line it comes from, and alias "bombs" are never expanded.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable
from typing import Any

import yaml

from netprobe_exporter.durations import parse_duration

NULL = "tag:yaml.org,2002:null"
STR = "tag:yaml.org,2002:str"
INT = "tag:yaml.org,2002:int"
BOOL = "tag:yaml.org,2002:bool"

_constructor = yaml.SafeLoader("")


def _event_loader() -> type:
    """A loader that composes in Python over libyaml's parser events.

    libyaml's own composer builds the whole node graph in one C call that holds the GIL from
    start to end (1.2 s for a 2.3 MB config), so a reload parsing in a thread would stall the
    reactor that long. Here each event is a short C call and the composing is Python, which
    yields the GIL every switch interval: about twice the CPU, none of the stall. Without
    libyaml, the pure-Python loader (slower still) behaves the same way.
    """
    try:
        from yaml._yaml import CParser
    except ImportError:
        return yaml.SafeLoader
    from yaml.composer import Composer
    from yaml.constructor import SafeConstructor
    from yaml.resolver import Resolver

    class EventLoader(Composer, CParser, SafeConstructor, Resolver):
        def __init__(self, stream: str | bytes) -> None:
            CParser.__init__(self, stream)
            Composer.__init__(self)
            SafeConstructor.__init__(self)
            Resolver.__init__(self)

    return EventLoader


#: the loader every config and target file is composed with (Python composer, C parser)
YAML_LOADER: type = _event_loader()
_BYTES = re.compile(r"^(\d+)(B|KB|KiB|MB|MiB|GB|GiB|TB|TiB|PB|PiB)$")
_BYTE_UNITS = {"B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}


def compile_go_regex(text: str) -> re.Pattern[str]:
    """Compile a Go (RE2) regular expression with Python's ``re``.

    The syntaxes agree on what blackbox configs use, with two differences handled here: RE2
    accepts a repeated anchor (blackbox's own example has ``^+OK``), which ``re`` rejects, and
    RE2's ``\\z`` (end of text) is ``\\Z`` in ``re``.
    """
    out: list[str] = []
    i = 0
    in_class = False
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            out.append("\\Z" if nxt == "z" and not in_class else ch + nxt)
            i += 2
            continue
        if in_class:
            in_class = ch != "]"
        elif ch == "[":
            in_class = True
            if text[i + 1 : i + 2] == "]" or text[i + 1 : i + 3] == "^]":
                out.append(text[i : i + 2 + (text[i + 1] == "^")])
                i += 2 + (text[i + 1] == "^")
                continue
        elif ch in "^$" and i + 1 < len(text) and text[i + 1] in "+*?":
            # x+ of an anchor is the anchor; x* and x? of one match anywhere
            out.append(ch if text[i + 1] == "+" else "")
            i += 2
            while i < len(text) and text[i] in "+*?":
                i += 1
            continue
        out.append(ch)
        i += 1
    return re.compile("".join(out))


def release(root: yaml.Node) -> None:
    """Free a node graph one node at a time.

    Dropping the root of a big document frees it in one C-level cascade that holds the GIL
    (about 0.1 s for 50,000 targets' nodes), which stalls the reactor while a reload parses in
    a thread; taken apart here, each step frees a node or two and the GIL can switch between
    steps. A node shared by aliases is emptied on its first visit, so each edge is seen once.
    """
    stack: list[yaml.Node] = [root]
    while stack:
        node = stack.pop()
        value = node.value
        if isinstance(value, list):
            node.value = []
            for item in value:
                if isinstance(item, tuple):
                    stack.extend(item)
                else:
                    stack.append(item)


def is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == NULL


#: keys whose values are secrets, or name files holding them: never echoed in errors or pages.
#: The web config's own are here; every option declared secret (``schema.Opt``) adds its key.
SECRET_KEYS: set[str] = {"key_file"}
REDACTED = "<secret>"
_SECRET_HEADER_WORDS = ("auth", "cookie", "token", "secret", "key", "password", "session")


def is_secret_header(name: str) -> bool:
    """Header names whose values are credentials (Authorization, Cookie, X-Api-Key …)."""
    lowered = name.lower()
    return any(word in lowered for word in _SECRET_HEADER_WORDS)


def is_secret_path(path: str) -> bool:
    """Whether the value at ``path`` (``modules.m.http.basic_auth.password``) is a secret."""
    parent, _, last = path.rpartition(".")
    return last in SECRET_KEYS or (parent.endswith(".headers") and is_secret_header(last))


#: keys whose whole value may hold a credential, wherever it sits: a value of the wrong kind
#: under one (``basic_auth: "bob:hunter2"``, a token pasted in place of a mapping) is the
#: credential itself, so errors there describe the kind of value, never the value. The web
#: config's own are here; each declared option that is or holds a secret adds its key.
SECRET_SUBTREES: set[str] = {"key_file", "tls_server_config", "basic_auth_users"}


def declare_secret(key: str) -> None:
    """``key``'s value (or the file it names) is a credential wherever it appears."""
    SECRET_KEYS.add(key)
    SECRET_SUBTREES.add(key)


def declare_secret_subtree(key: str) -> None:
    """``key``'s value may hold a credential somewhere inside it."""
    SECRET_SUBTREES.add(key)


_INDEX = re.compile(r"\[\d+\]")


def is_secret_subtree(path: str) -> bool:
    """Whether ``path`` is, or is below, a key of SECRET_SUBTREES."""
    return any(part in SECRET_SUBTREES for part in _INDEX.sub("", path).split("."))


#: an HTTP token (RFC 9110): what header names, user names and config keys are made of
_KEY_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z@-]{1,128}$")


def key_path(path: str, key: str) -> str:
    """``path.key`` for an error, the key withheld where it may be a credential: under a
    secret-holding key, one that is no plausible name (``basic_auth: {bob:hunter2}`` is a
    mapping whose only key is ``bob:hunter2``)."""
    if is_secret_subtree(path) and not _KEY_NAME.match(key):
        return f"{path}.<a key of {len(key)} characters>"
    return f"{path}.{key}" if path else key


def is_readable_file(name: str) -> bool:
    return os.path.isfile(name) and os.access(name, os.R_OK)


def unreadable_reason(name: str) -> str:
    """Why ``name`` cannot be read, in words (for an error that may not show ``name``)."""
    if not os.path.lexists(name):
        folder = os.path.dirname(name) or "."
        return "no such file" if os.path.isdir(folder) else "no such directory"
    if not os.path.isfile(name):
        return "not a regular file"
    return "permission denied"


def did_you_mean(key: str, known: Iterable[str]) -> str:
    """`` (did you mean "interval"?)`` for a key close to a known one, else nothing."""
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.7)
    return f' (did you mean "{close[0]}"?)' if close else ""


_KINDS = {NULL: "empty", STR: "a string", INT: "a number", BOOL: "true or false",
          "tag:yaml.org,2002:float": "a number"}  # fmt: skip


def kind(node: yaml.Node) -> str:
    """What sort of value ``node`` is (``a string``, ``a list``), without its content."""
    if isinstance(node, yaml.ScalarNode):
        return _KINDS.get(node.tag, "a scalar")
    return "a list" if isinstance(node, yaml.SequenceNode) else "a mapping"


_SHOWN = 64


def show(node: yaml.Node, path: str) -> str:
    """``node`` for an error about the value at ``path``: quoted, or only its kind where the
    value may be a credential (under a key of SECRET_SUBTREES)."""
    if not isinstance(node, yaml.ScalarNode) or is_secret_subtree(path):
        return kind(node)
    text = str(node.value)
    if len(text) > _SHOWN:  # an error line is no place for a whole pasted file
        return f'"{text[:_SHOWN]}…" ({len(text)} characters)'
    return f'"{text}"'


def scalar(node: yaml.Node) -> Any:
    return _constructor.construct_object(node, deep=True)


def _withhold(node: yaml.Node | None, path: str, what: str) -> str:
    """Errors and warnings go to logs: a secret's value (or file path) must not."""
    if is_secret_path(path) and isinstance(node, yaml.ScalarNode) and node.value:
        return what.replace(str(node.value), REDACTED)
    return what


class Checker:
    """Reads values out of nodes; each reader returns None (and records why) on bad input."""

    def __init__(self, filename: str, base_dir: str | None = None) -> None:
        self.filename = filename
        self.base_dir = base_dir  # where relative file names point (None: the working dir)
        self.errors: list[str] = []
        self.warnings: list[str] = []

    def _where(self, node: yaml.Node | None, path: str, what: str) -> str:
        line = node.start_mark.line + 1 if node is not None else 0
        where = f"{self.filename}:{line}" if line else self.filename
        return f"{where}: {path}: {what}" if path else f"{where}: {what}"

    def error(self, node: yaml.Node | None, path: str, what: str) -> None:
        self.errors.append(self._where(node, path, _withhold(node, path, what)))

    def warn(self, node: yaml.Node | None, path: str, what: str) -> None:
        self.warnings.append(self._where(node, path, _withhold(node, path, what)))

    def mapping(
        self, node: yaml.Node, path: str, allowed: dict[str, str | None]
    ) -> dict[str, yaml.Node] | None:
        """``{key: value_node}``; unknown and duplicate keys are errors.

        ``allowed`` maps each key to None when supported, or to the reason it is not (yet).
        """
        if is_null(node):
            return {}
        if not isinstance(node, yaml.MappingNode):
            self.error(node, path, f"must be a mapping, not {show(node, path)}")
            return None
        out: dict[str, yaml.Node] = {}
        for knode, vnode in node.value:
            key = knode.value if isinstance(knode, yaml.ScalarNode) else None
            if not isinstance(key, str):
                self.error(knode, path, "keys must be strings")
                continue
            sub = key_path(path, key)
            if key not in allowed:
                self.error(knode, sub, "unknown key" + did_you_mean(key, allowed))
            elif allowed[key] is not None:
                self.error(knode, sub, str(allowed[key]))
            elif key in out:
                self.error(knode, sub, "duplicate key")
            else:
                out[key] = vnode
        return out

    def string(self, node: yaml.Node, path: str) -> str | None:
        if not isinstance(node, yaml.ScalarNode) or node.tag != STR:
            self.error(node, path, f"must be a string, not {show(node, path)}")
            return None
        return str(node.value)

    def text(self, node: yaml.Node, path: str) -> str | None:
        """A scalar read as text, whatever YAML type it resolved to (e.g. ``send: 123``)."""
        if not isinstance(node, yaml.ScalarNode) or node.tag == NULL:
            self.error(node, path, f"must be a string, not {show(node, path)}")
            return None
        return str(node.value)

    def boolean(self, node: yaml.Node, path: str) -> bool | None:
        if isinstance(node, yaml.ScalarNode) and node.tag == BOOL:
            return bool(scalar(node))
        self.error(node, path, f"must be true or false, not {show(node, path)}")
        return None

    def integer(self, node: yaml.Node, path: str, lo: int, hi: int) -> int | None:
        if isinstance(node, yaml.ScalarNode) and node.tag == INT:
            value = int(scalar(node))
            if lo <= value <= hi:
                return value
            self.error(node, path, f"{value} is out of range {lo}-{hi}")
            return None
        self.error(node, path, f"must be an integer, not {show(node, path)}")
        return None

    def duration(self, node: yaml.Node, path: str, minimum: float = 0.0) -> float | None:
        if not isinstance(node, yaml.ScalarNode):
            self.error(node, path, f"must be a duration, not {show(node, path)}")
            return None
        try:
            value = parse_duration(str(node.value))
        except ValueError as exc:
            too_long = "too long" in str(exc)
            self.error(node, path, str(exc) if too_long else f'"{node.value}" is not a duration')
            return None
        if value < minimum or (minimum > 0 and value <= 0):
            self.error(node, path, f'"{node.value}" is too short (minimum {minimum:g}s)')
            return None
        return value

    def byte_size(self, node: yaml.Node, path: str) -> int | None:
        """blackbox's Base2Bytes: ``3B``, ``1KB`` (= 1 KiB), ``10MiB``; a unit is required."""
        m = _BYTES.match(str(node.value)) if isinstance(node, yaml.ScalarNode) else None
        if m is None:
            self.error(
                node, path, f"{show(node, path)} is not a size with a unit (e.g. 512B, 1KB, 10MiB)"
            )
            return None
        return int(m.group(1)) * _BYTE_UNITS[m.group(2)[0]]

    def sequence(self, node: yaml.Node, path: str) -> list[yaml.Node] | None:
        if is_null(node):
            return []
        if not isinstance(node, yaml.SequenceNode):
            self.error(node, path, f"must be a list, not {show(node, path)}")
            return None
        return list(node.value)

    def strings(self, node: yaml.Node, path: str) -> tuple[str, ...] | None:
        items = self.sequence(node, path)
        if items is None:
            return None
        out = [self.string(item, f"{path}[{i}]") for i, item in enumerate(items)]
        return None if None in out else tuple(s for s in out if s is not None)

    def string_map(self, node: yaml.Node, path: str) -> dict[str, str] | None:
        if is_null(node):
            return {}
        if not isinstance(node, yaml.MappingNode):
            self.error(node, path, f"must be a mapping of strings, not {show(node, path)}")
            return None
        out: dict[str, str] = {}
        for knode, vnode in node.value:
            key = str(knode.value) if isinstance(knode, yaml.ScalarNode) else ""
            value = self.text(vnode, key_path(path, key))
            if key and value is not None:
                out[key] = value
        return out

    def regex(self, node: yaml.Node, path: str) -> re.Pattern[str] | None:
        text = self.text(node, path)
        if text is None:
            return None
        try:
            return compile_go_regex(text)
        except re.error as exc:
            self.error(node, path, f'"{text}" is not a valid regular expression: {exc}')
            return None

    def regexes(self, node: yaml.Node, path: str) -> tuple[re.Pattern[str], ...] | None:
        items = self.sequence(node, path)
        if items is None:
            return None
        out = [self.regex(item, f"{path}[{i}]") for i, item in enumerate(items)]
        return None if None in out else tuple(p for p in out if p is not None)

    def probe_time_file(self, node: yaml.Node, path: str) -> str | None:
        """A file a probe reads when it runs (as blackbox does): one that cannot be read now is
        a warning, and the probes of its module fail, saying so, until it can."""
        name = self.string(node, path)
        if not name:
            return None  # empty: not set, as in blackbox
        if not is_readable_file(name):
            self.warn(node, path, f'cannot read file "{name}" now: its probes fail until it can')
        return name

    def readable_file(self, node: yaml.Node, path: str) -> str | None:
        name = self.string(node, path)
        if name is None:
            return None
        if self.base_dir is not None and name:
            name = os.path.join(self.base_dir, name)  # an absolute name stays as it is
        if not is_readable_file(name):
            reason = unreadable_reason(name)
            if is_secret_path(path):
                # the name itself is withheld (it may say whose key it is); its directory is
                # what the operator needs to go and look
                folder = os.path.dirname(name) or "."
                self.error(node, path, f'cannot read the file it names in "{folder}": {reason}')
            else:
                self.error(node, path, f'cannot read file "{name}": {reason}')
            return None
        return name
