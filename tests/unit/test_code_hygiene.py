"""Unused parameters in the scheduler: each one a value its callers compute for nothing."""

from __future__ import annotations

import ast
from pathlib import Path

import netprobe_exporter.scheduler

SCHEDULER = Path(netprobe_exporter.scheduler.__file__)


def _unused_parameters(tree: ast.AST) -> list[str]:
    """``function:parameter`` for every parameter its body never reads (``self``, ``cls`` and
    a bare ``_`` aside: an ``_unused`` name still makes every caller compute it)."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            continue
        args = node.args
        params = [*args.posonlyargs, *args.args, *args.kwonlyargs]
        params += [a for a in (args.vararg, args.kwarg) if a is not None]
        body = node.body if isinstance(node.body, list) else [node.body]
        read = {
            n.id
            for stmt in body
            for n in ast.walk(stmt)
            if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)
        }
        name = getattr(node, "name", "<lambda>")
        for p in params:
            if p.arg not in read and p.arg not in ("self", "cls") and p.arg != "_":
                found.append(f"{name}:{p.arg}")
    return found


def test_scheduler_has_no_unused_parameters() -> None:
    tree = ast.parse(SCHEDULER.read_text(encoding="utf-8"))
    assert _unused_parameters(tree) == []


def test_the_check_sees_an_unused_parameter() -> None:
    tree = ast.parse("def f(a, b, _c):\n    return a\n\ng = lambda x: None\n")
    assert _unused_parameters(tree) == ["f:b", "f:_c", "<lambda>:x"]
