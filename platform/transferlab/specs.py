"""Spec strings: `name`, `name(k=v, ...)` and chains `a | b(k=v)`; values are Python literals."""

import ast
import dataclasses
import re
from typing import Any

from .errors import SpecError

MAX_SPEC_CHARS = 10_000  # longer text is refused before parsing: the parser's time, memory and recursion grow with it
MAX_CHAIN_STEPS = 200  # steps of one `|` chain; no study needs more, and deeper trees exhaust the recursion limit
EXCERPT_CHARS = 60  # what error messages show of a spec or value
SURROGATE = re.compile("[\ud800-\udfff]")  # what Python makes of bytes that are not UTF-8 (argv, file names)
CALLS_SIDE_BY_SIDE = re.compile(r"(?<=\))\s*(?=[A-Za-z_])|(?<=\w)\s+(?=[A-Za-z_])")  # `a(k=1) b`, `a(k=1)b`, `a b`: calls side by side


@dataclasses.dataclass(frozen=True)
class Call:
    """One parsed `name(args, k=v)` before it is matched to a component."""

    name: str
    args: tuple[Any, ...] = ()
    kwargs: tuple[tuple[str, Any], ...] = ()


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """`repr` of text cut to about `limit` characters (with its length when cut): printable, escaped, one line."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text):,} characters)"


def parse_chain(text: str) -> list[Call]:
    """Parse `a | b(k=v) | ...` into calls, left to right."""
    source, tree = _parse(text)
    calls = []
    node = tree.body
    while isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        if len(calls) + 2 > MAX_CHAIN_STEPS:  # this node's two sides and the steps already taken
            raise SpecError(f"spec {excerpt(source)} chains more than {MAX_CHAIN_STEPS} steps; at most {MAX_CHAIN_STEPS} are allowed")
        calls.append(_call(node.right, source))
        node = node.left
    calls.append(_call(node, source))
    return calls[::-1]


def parse_one(text: str) -> Call:
    """Parse a single `name(k=v)`; a chain is an error."""
    calls = parse_chain(text)
    if len(calls) > 1:
        raise SpecError(f"expected one component, got a chain of {len(calls)}: {excerpt(text)}")
    return calls[0]


def _parse(text: str) -> tuple[str, ast.Expression]:
    """The stripped text and its expression tree; every way the text can be refused is a SpecError."""
    if not isinstance(text, str) or not text.strip():
        raise SpecError("empty spec: expected `name` or `name(key=value, ...)`")
    source = text.strip()
    if len(source) > MAX_SPEC_CHARS:
        raise SpecError(f"spec {excerpt(source)} is too long: at most {MAX_SPEC_CHARS:,} characters")
    bad = SURROGATE.search(source)
    if bad:
        raise SpecError(f"spec {excerpt(source)} holds a byte that is not UTF-8 ({bad.group()!r} at column {bad.start() + 1}); "
                        "spec strings must be UTF-8 text")
    try:
        return source, ast.parse(source, mode="eval")
    except SyntaxError as exc:
        where = f" at column {exc.offset}" if exc.offset else ""
        raise SpecError(f"malformed spec {excerpt(source)}: {exc.msg}{where}{chain_hint(source)}") from None
    except (RecursionError, MemoryError):
        raise SpecError(f"malformed spec {excerpt(source)}: nested too deeply (or a chain far over {MAX_CHAIN_STEPS} steps)") from None
    except ValueError as exc:  # e.g. a NUL character (Python 3.11 raises ValueError, later versions SyntaxError)
        raise SpecError(f"malformed spec {excerpt(source)}: {exc}") from None


def chain_hint(source: str) -> str:
    """A hint for calls written side by side without `|` (`a(k=1) b`), when putting `|` between them makes a valid spec."""
    chained = CALLS_SIDE_BY_SIDE.sub(" | ", source)
    if chained == source:
        return ""
    try:
        ast.parse(chained, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return ""
    return f"; to chain components, put `|` between them: {excerpt(chained)}"


def _segment(source: str, node: ast.AST) -> str:
    """A bounded excerpt of the text of `node` (never `ast.unparse`, which recurses and may print megabytes)."""
    return excerpt(ast.get_source_segment(source, node) or "")


def _call(node: ast.AST, source: str) -> Call:
    if isinstance(node, ast.Name):
        return Call(node.id)
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
        raise SpecError(f"malformed spec {excerpt(source)}: expected `name` or `name(key=value, ...)` at {_segment(source, node)}")
    args = tuple(_literal(a, source) for a in node.args)
    kwargs = []
    for kw in node.keywords:
        if kw.arg is None:
            raise SpecError(f"malformed spec {excerpt(source)}: `**` is not allowed")
        if kw.arg in dict(kwargs):
            raise SpecError(f"malformed spec {excerpt(source)}: parameter '{kw.arg}' given twice")
        kwargs.append((kw.arg, _literal(kw.value, source, kw.arg)))
    return Call(node.func.id, args, tuple(kwargs))


def _literal(node: ast.AST, source: str, key: str | None = None) -> Any:
    if isinstance(node, ast.Starred):
        raise SpecError(f"malformed spec {excerpt(source)}: `*` is not allowed")
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        raise SpecError(f"malformed spec {excerpt(source)}: {_segment(source, node)} is not a Python literal{quote_hint(node, source, key)}") from None


def quote_hint(node: ast.AST, source: str, key: str | None) -> str:
    """A hint for text written without quotes (`root=data`, `root=data/train`, `classes=[tench]`), else ''."""
    names = [n.id for n in ast.walk(node) if isinstance(n, ast.Name)]
    text = ast.get_source_segment(source, node) or ""
    if names and isinstance(node, ast.List | ast.Tuple | ast.Set | ast.Dict):  # an item of a list: quote that item
        return f"; text goes in quotes: {names[0]!r}"
    if not names or any(q in text for q in "'\"") or any(isinstance(n, ast.Call) for n in ast.walk(node)):
        return ""
    return f"; text goes in quotes: {excerpt((f'{key}=' if key else '') + repr(text))}"
