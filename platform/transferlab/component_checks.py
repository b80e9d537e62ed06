"""What a registered component class must be: a frozen dataclass of its kind, with its own name and the base's method signatures."""

import inspect
import re
import typing

from .components import Component
from .errors import PluginError

CLASSVAR = re.compile(r"^(?:typing\.)?ClassVar\b")  # how dataclasses reads a ClassVar written as a string annotation


def check_component(kind: str, cls: object, plugin: str) -> None:
    """A PluginError naming the plugin and the class unless `cls` can be registered as a `kind`."""
    if not (isinstance(cls, type) and issubclass(cls, Component)):
        raise PluginError(f"plugin '{plugin}' registered {cls!r} as a {kind}, but it is not a Component subclass "
                          f"(a frozen dataclass deriving from transferlab's {kind} base class)")
    what = f"plugin '{plugin}': {kind} class {cls.__module__}.{cls.__qualname__}"
    if cls.kind != kind:
        raise PluginError(f"{what} is a {cls.kind or 'component without kind'}, registered as a {kind}")
    if "__dataclass_fields__" not in cls.__dict__:
        fields = undeclared_fields(cls)
        lost = f": its fields {', '.join(map(repr, fields))} would be ignored" if fields else ""
        raise PluginError(f"{what} is not a dataclass{lost}; decorate it with @dataclasses.dataclass(frozen=True)")
    if "name" not in cls.__dict__ or not cls.name:
        inherited = f" (it inherits {cls.name!r})" if cls.name else ""
        raise PluginError(f"{what} has no name of its own{inherited}; set a class attribute such as name = 'my_{kind}'")
    if not isinstance(cls.name, str) or not cls.name.isidentifier():
        raise PluginError(f"{what} has name {cls.name!r}, which is not an identifier (letters, digits and _, not starting with a digit)")
    problem = signature_problem(cls)
    if problem:
        raise PluginError(f"{what}: {problem}")


def undeclared_fields(cls: type) -> list[str]:
    """Names the class annotates itself that are not ClassVars: fields a missing @dataclass leaves out."""
    return [name for name, tp in inspect.get_annotations(cls).items() if not is_classvar(tp)]


def is_classvar(tp: object) -> bool:
    """Whether an annotation, object or string, is a ClassVar."""
    return bool(CLASSVAR.match(tp)) if isinstance(tp, str) else tp is typing.ClassVar or typing.get_origin(tp) is typing.ClassVar


def kind_base(cls: type) -> type:
    """The class that defines the kind (Source, Policy, ...): the first in the MRO, from Component down, to set `kind`."""
    return next(c for c in reversed(cls.__mro__) if c.__dict__.get("kind") == cls.kind)


def signature_problem(cls: type) -> str | None:
    """The first method of the kind's base class (or of Component) that `cls` overrides with parameters its callers cannot pass."""
    for base in dict.fromkeys((kind_base(cls), Component)):
        for name, raw in base.__dict__.items():
            if name.startswith("_") or not isinstance(raw, (classmethod, staticmethod)) and not inspect.isfunction(raw):
                continue
            want, have = getattr(base, name), getattr(cls, name)
            if getattr(have, "__func__", have) is getattr(want, "__func__", want):  # not overridden (a classmethod binds anew)
                continue
            if not callable(have):
                return f"{name} is not a method; {base.__name__} defines {name}{shown(want)}"
            if not compatible(inspect.signature(want), inspect.signature(have)):
                return (f"{name}{shown(have)} does not match {base.__name__}.{name}{shown(want)}; "
                        "keep the base's parameters, names and order (extra ones need defaults)")
    return None


def compatible(want: inspect.Signature, have: inspect.Signature) -> bool:
    """Whether every call the base's signature allows also suits `have`: the same leading parameters (names, kinds), then
    only parameters with defaults; `*args, **kwargs` take anything."""
    kinds = {p.kind for p in have.parameters.values()}
    if {inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD} <= kinds:
        return True
    wanted, had = list(want.parameters.values()), list(have.parameters.values())
    if [(p.name, p.kind) for p in wanted] != [(p.name, p.kind) for p in had[:len(wanted)]]:
        return False
    return all(p.default is not inspect.Parameter.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in had[len(wanted):])


def shown(method) -> str:
    """A method's parameter list without annotations, e.g. `(self, subset, tree, seeds)`."""
    params = [p.replace(annotation=inspect.Parameter.empty) for p in inspect.signature(method).parameters.values()]
    return str(inspect.Signature(params))
