"""Components: small frozen dataclasses whose typed fields are parsed, validated, logged and hashed."""

import dataclasses
import hashlib
import math
import types
import typing
from functools import cache
from typing import Any, ClassVar, Literal

from .errors import SpecError
from .specs import EXCERPT_CHARS, SURROGATE, excerpt

MAX_INT = 2**63 - 1  # every int parameter fits a signed 64-bit integer (numpy, torch and MLflow store them so)


@dataclasses.dataclass(frozen=True)
class Component:
    """Base of every registered component; subclasses are `@dataclass(frozen=True)` with typed fields."""

    kind: ClassVar[str] = ""
    name: ClassVar[str] = ""

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            object.__setattr__(self, field.name, coerce(self.name, field.name, value, field_types(type(self))[field.name]))
        self.validate()

    def validate(self) -> None:
        """Check constraints between fields; raise SpecError with a clear message."""

    @classmethod
    def resolve_alias(cls, name: str, params: dict[str, Any]) -> "Component | None":
        """A component for an unregistered `name` this class understands (e.g. a bare timm model name), else None."""
        return None

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> "Component":
        """Build from keyword parameters, reporting unknown and missing ones."""
        declared = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(params) - set(declared))
        if unknown:
            raise SpecError(f"{cls.kind} '{cls.name}' has no parameter {', '.join(map(excerpt, unknown))}; expected {signature(cls)}")
        missing = [n for n, f in declared.items() if n not in params and _is_required(f)]
        if missing:
            raise SpecError(f"{cls.kind} '{cls.name}' is missing {', '.join(map(repr, missing))}; expected {signature(cls)}")
        return cls(**params)

    def params(self) -> dict[str, Any]:
        """Field values by name, in declaration order."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def spec(self) -> str:
        """Canonical spec string: parameters sorted by name, defaults filled in."""
        params = self.params()
        if not params:
            return self.name
        return f"{self.name}({', '.join(f'{k}={format_value(params[k])}' for k in sorted(params))})"

    def flat_params(self, prefix: str) -> dict[str, str]:
        """Stable flat parameter names for tracking, e.g. `source.root`."""
        return {f"{prefix}.{k}": format_value(v) for k, v in self.params().items()}

    def digest(self) -> str:
        """sha256 of the canonical spec."""
        return hashlib.sha256(self.spec().encode()).hexdigest()


def _is_required(field: dataclasses.Field) -> bool:
    return field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING


@cache
def field_types(cls: type) -> dict[str, Any]:
    """Resolved type annotations of a component class."""
    return typing.get_type_hints(cls)


def signature(cls: type[Component]) -> str:
    """Human-readable parameter list, e.g. `images_per_class(n: int, take: 'exact'|'available' = 'exact')`."""
    types_ = field_types(cls)
    parts = []
    for f in dataclasses.fields(cls):
        text = f"{f.name}: {type_name(types_[f.name])}"
        if f.default is not dataclasses.MISSING:
            text += f" = {format_value(f.default)}"
        parts.append(text)
    return f"{cls.name}({', '.join(parts)})"


def type_name(tp: Any) -> str:
    """Short readable name of an annotation."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "|".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"list[{type_name(args[0])}]"
        return f"[{', '.join(type_name(a) for a in args)}]"
    if tp is type(None):
        return "None"
    return getattr(tp, "__name__", str(tp))


def coerce(component: str, field: str, value: Any, tp: Any) -> Any:
    """Return `value` converted to the annotated type, or raise SpecError naming the field."""
    try:
        return _coerce(value, tp)
    except (TypeError, ValueError, OverflowError) as exc:
        raise SpecError(f"{component}: parameter '{field}' expects {type_name(tp)}, got {shown(value)} ({exc})") from None


def shown(value: Any) -> str:
    """A bounded one-line rendering of a parameter value for error messages (safe for ints too long to print)."""
    if isinstance(value, int) and abs(value) > MAX_INT:
        return f"an integer of {value.bit_length():,} bits"
    try:
        text = repr(value)
    except ValueError:  # a container holding an int over Python's 4300-digit limit for decimal text
        return f"a {type(value).__name__} holding an integer too long to print"
    return text if len(text) <= EXCERPT_CHARS else f"{text[:EXCERPT_CHARS]}... ({len(text):,} characters)"


def _coerce(value: Any, tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if tp is type(None):
        if value is None:
            return None
        raise TypeError("not None")
    if origin is Literal:
        if value in typing.get_args(tp) and type(value) in {type(a) for a in typing.get_args(tp)}:
            return value
        raise ValueError("not one of the allowed values")
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _coerce(value, arg)
            except (TypeError, ValueError, OverflowError):
                continue
        raise TypeError(f"{type(value).__name__} matches none of the alternatives")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"{type(value).__name__} is not a list")
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0]) for v in value)
        if len(args) != len(value):
            raise ValueError(f"needs {len(args)} items, has {len(value)}")
        return tuple(_coerce(v, a) for v, a in zip(value, args))
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise TypeError(f"{type(value).__name__} is not a bool")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            if abs(value) > MAX_INT:
                raise ValueError("ints must lie within ±(2**63 - 1)")
            return value
        raise TypeError(f"{type(value).__name__} is not an int")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ValueError("not finite")
            return float(value)
        raise TypeError(f"{type(value).__name__} is not a number")
    if tp is str:
        if isinstance(value, str):
            bad = SURROGATE.search(value)
            if bad:  # such text cannot be encoded (digests, MLflow, file names), so it is refused here
                raise ValueError(f"{bad.group()!r} at position {bad.start()} is a lone surrogate, not text")
            return value
        raise TypeError(f"{type(value).__name__} is not a str")
    raise TypeError(f"unsupported annotation {tp!r}")


def format_value(value: Any) -> str:
    """Canonical literal text of a parameter value; `ast.literal_eval` reads it back."""
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    return repr(value)
