"""CEL checks of a JSON response body (``fail_if_body_json_matches_cel`` and its negation).

The expression sees one variable, ``body``: the response body parsed as JSON. A number written
without a fraction or exponent is an int, others doubles (blackbox's Go decoder makes every
number a double, and cel-go compares doubles with ints; cel-python does not, so ``body.n == 3``
works for ``{"n": 3}`` here as there, while ``body.n == 3.0`` is an evaluation error here).

cel-python is a pure-Python tree walker, slow on big documents (hundreds of microseconds per
list element), so the JSON conversion and the evaluation run in the reactor's thread pool,
never on the reactor, and stop at the probe's deadline: a trace hook counts the evaluator's
calls and raises once the deadline has passed. The body it sees is at most
``limits.max_body_bytes`` (16 MiB by default).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import yaml
from twisted.internet import threads
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorFromThreads, IReactorThreads

from netprobe_exporter.schema import Kind
from netprobe_exporter.yamlcheck import Checker

#: the deadline is looked at every this many Python calls of the evaluator
_CHECK_EVERY = 256


@dataclass(frozen=True, slots=True)
class CELProgram:
    """A compiled expression; compared and shown by its text."""

    expression: str
    program: Any = field(compare=False, repr=False, hash=False)


def _celpy() -> Any:
    """cel-python, imported by the first CEL expression: it adds about 7 MB to a process, and
    most configs have none (each probe worker would pay it too)."""
    import celpy

    return celpy


def compile_cel(expression: str) -> CELProgram:
    """Compile ``expression``; raise ValueError saying why it does not."""
    env = _celpy().Environment()
    try:
        ast = env.compile(expression)
        return CELProgram(expression, env.program(ast))
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(first) from None


@dataclass(frozen=True, slots=True)
class CEL(Kind[CELProgram]):
    """A CEL expression, compiled when the config is read (blackbox's error wording)."""

    def read(self, c: Checker, node: yaml.Node, path: str) -> CELProgram | None:
        text = c.string(node, path)
        if text is None:
            return None
        try:
            return compile_cel(text)
        except ValueError as exc:
            c.error(node, path, f'Could not compile CEL program expression="{text}": {exc}')
            return None

    def dump(self, value: CELProgram | None) -> object:
        return None if value is None else value.expression


class _Overtime(BaseException):
    """Raised inside the evaluator at the deadline (not an Exception: nothing swallows it)."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of the CEL checks: ``failed`` with the reason, or passed."""

    failed: bool
    reason: str = ""


def check_body(
    body: bytes,
    matches: CELProgram | None,
    not_matches: CELProgram | None,
    seconds: float,
    clock: Callable[[], float] = time.monotonic,
) -> Verdict:
    """Blackbox's rules: a body that is not JSON, an evaluation error or a non-boolean result
    fails; ``matches`` true fails, ``not_matches`` false fails. Runs for at most ``seconds``."""
    deadline = clock() + seconds
    calls = 0

    def trace(frame: FrameType, event: str, arg: object) -> None:
        nonlocal calls
        calls += 1
        if calls % _CHECK_EVERY == 0 and clock() > deadline:
            raise _Overtime
        return None

    previous = sys.gettrace()
    sys.settrace(trace)
    try:
        return _check(body, matches, not_matches)
    except _Overtime:
        return Verdict(True, f"CEL evaluation stopped at the probe's deadline ({seconds:.3g}s)")
    finally:
        sys.settrace(previous)


def _check(body: bytes, matches: CELProgram | None, not_matches: CELProgram | None) -> Verdict:
    try:
        doc = json.loads(body)
    except ValueError as exc:
        return Verdict(True, f"response body is not JSON: {exc}")
    celpy = _celpy()
    activation = {"body": celpy.json_to_cel(doc)}
    for program, fail_on in ((matches, True), (not_matches, False)):
        if program is None:
            continue
        try:
            value = program.program.evaluate(activation)
        except Exception as exc:
            return Verdict(True, f"error evaluating CEL expression: {_first_line(exc)}")
        if isinstance(value, Exception):  # cel-python hands some errors back as values
            return Verdict(True, f"error evaluating CEL expression: {_first_line(value)}")
        if not isinstance(value, celpy.celtypes.BoolType):
            return Verdict(True, f"CEL evaluation result is not a boolean: {type(value).__name__}")
        if bool(value) == fail_on:
            what = "matched" if fail_on else "did not match"
            return Verdict(True, f"body {what} CEL expression {program.expression!r}")
    return Verdict(False)


def _first_line(exc: BaseException) -> str:
    text = str(exc.args[0] if exc.args else exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def check_off_reactor(
    reactor: object,
    body: bytes,
    matches: CELProgram | None,
    not_matches: CELProgram | None,
    seconds: float,
) -> Deferred[Verdict]:
    """``check_body`` in the reactor's thread pool (inline where the reactor has none: the
    in-memory reactors of unit tests)."""
    if IReactorThreads.providedBy(reactor) and IReactorFromThreads.providedBy(reactor):
        pool = IReactorThreads(reactor).getThreadPool()
        return threads.deferToThreadPool(
            IReactorFromThreads(reactor), pool, check_body, body, matches, not_matches, seconds
        )
    return succeed(check_body(body, matches, not_matches, seconds))
