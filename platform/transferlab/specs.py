"""Spec strings: `name`, `name(k=v, ...)` and chains `a | b(k=v)`; values are Python literals."""

import ast
import dataclasses
from typing import Any

from .errors import SpecError


@dataclasses.dataclass(frozen=True)
class Call:
    """One parsed `name(args, k=v)` before it is matched to a component."""

    name: str
    args: tuple[Any, ...] = ()
    kwargs: tuple[tuple[str, Any], ...] = ()


def parse_chain(text: str) -> list[Call]:
    """Parse `a | b(k=v) | ...` into calls, left to right."""
    tree = _parse(text)
    calls = []
    node = tree.body
    while isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        calls.append(_call(node.right, text))
        node = node.left
    calls.append(_call(node, text))
    return calls[::-1]


def parse_one(text: str) -> Call:
    """Parse a single `name(k=v)`; a chain is an error."""
    calls = parse_chain(text)
    if len(calls) > 1:
        raise SpecError(f"expected one component, got a chain of {len(calls)}: {text!r}")
    return calls[0]


def _parse(text: str) -> ast.Expression:
    if not isinstance(text, str) or not text.strip():
        raise SpecError("empty spec: expected `name` or `name(key=value, ...)`")
    try:
        return ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise SpecError(f"malformed spec {text!r}: {exc.msg} at column {exc.offset}") from None


def _call(node: ast.AST, text: str) -> Call:
    if isinstance(node, ast.Name):
        return Call(node.id)
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
        raise SpecError(f"malformed spec {text!r}: expected `name` or `name(key=value, ...)` at {ast.unparse(node)!r}")
    args = tuple(_literal(a, text) for a in node.args)
    kwargs = []
    for kw in node.keywords:
        if kw.arg is None:
            raise SpecError(f"malformed spec {text!r}: `**` is not allowed")
        if kw.arg in dict(kwargs):
            raise SpecError(f"malformed spec {text!r}: parameter '{kw.arg}' given twice")
        kwargs.append((kw.arg, _literal(kw.value, text)))
    return Call(node.func.id, args, tuple(kwargs))


def _literal(node: ast.AST, text: str) -> Any:
    if isinstance(node, ast.Starred):
        raise SpecError(f"malformed spec {text!r}: `*` is not allowed")
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        raise SpecError(f"malformed spec {text!r}: {ast.unparse(node)!r} is not a Python literal") from None
