"""The registry of components by kind and name, filled by plugin hooks."""

import dataclasses
import difflib
from collections.abc import Iterator

from .components import Component, signature
from .errors import PluginError, SpecError
from .specs import EXCERPT_CHARS, Call, excerpt, parse_chain, parse_one

SUBSET = "subset"  # the source a source spec `BASE | POLICY | ...` stands for (transferlab.subset_source)

KIND_HOOKS = {
    "source": "register_sources",
    "policy": "register_policies",
    "backbone": "register_backbones",
    "task": "register_tasks",
    "study": "register_studies",
    "space": "register_spaces",
}


@dataclasses.dataclass(frozen=True)
class Entry:
    """A registered component class and the plugin that registered it."""

    kind: str
    name: str
    cls: type[Component]
    plugin: str


class Registry:
    """Component classes by kind and name; the single place spec strings become objects."""

    def __init__(self):
        self._entries: dict[str, dict[str, Entry]] = {kind: {} for kind in KIND_HOOKS}

    def add(self, kind: str, cls: type, plugin: str) -> None:
        """Register `cls` under its `name`; a name taken by another plugin is an error naming both."""
        if not (isinstance(cls, type) and issubclass(cls, Component) and dataclasses.is_dataclass(cls)):
            raise PluginError(f"plugin '{plugin}' registered {cls!r} as a {kind}, but it is not a Component dataclass")
        if cls.kind != kind:
            raise PluginError(f"plugin '{plugin}' registered {cls.__name__} (a {cls.kind or 'component without kind'}) as a {kind}")
        if not cls.name.isidentifier():
            raise PluginError(f"plugin '{plugin}' registered {kind} {cls.__name__} with invalid name {cls.name!r}")
        taken = self._entries[kind].get(cls.name)
        if taken is not None and taken.cls is not cls:
            raise PluginError(f"{kind} '{cls.name}' is registered by two plugins: '{taken.plugin}' ({taken.cls.__module__}.{taken.cls.__qualname__}) and '{plugin}' ({cls.__module__}.{cls.__qualname__})")
        self._entries[kind][cls.name] = Entry(kind, cls.name, cls, plugin)

    def entries(self, kind: str | None = None) -> Iterator[Entry]:
        """Registered entries, by kind then name."""
        for k in [kind] if kind else KIND_HOOKS:
            yield from sorted(self._entries[k].values(), key=lambda e: e.name)

    def get(self, kind: str, name: str) -> type[Component]:
        """The class registered as `name`, or a SpecError naming the closest registered names."""
        entries = self._entries[kind]
        if name in entries:
            return entries[name].cls
        close = difflib.get_close_matches(name, entries, n=3, cutoff=0.5) if len(name) <= EXCERPT_CHARS else []
        hint = f"did you mean {' or '.join(map(repr, close))}? " if close else ""
        raise SpecError(f"unknown {kind} {excerpt(name)}: {hint}registered: {', '.join(sorted(entries)) or 'none'}")

    def build(self, kind: str, call: Call) -> Component:
        """Instantiate a parsed call; positional values fill fields in declaration order; unknown names may be aliases."""
        if call.name not in self._entries[kind] and not call.args:
            for entry in self.entries(kind):
                component = entry.cls.resolve_alias(call.name, dict(call.kwargs))
                if component is not None:
                    return component
        return build(self.get(kind, call.name), call)

    def parse(self, kind: str, text: str) -> Component:
        """One component of `kind` from a spec string; for a source, `BASE | POLICY | ...` is sugar for
        `subset(source='BASE', policy='POLICY | ...', seed=0)`, each part parsed (and refused) as itself."""
        if kind != "source":
            return self.build(kind, parse_one(text))
        base, *steps = parse_chain(text)
        if not steps:
            return self.build(kind, base)
        source, chain = self.build(kind, base), [self.build("policy", step) for step in steps]
        return self.build(kind, Call(SUBSET, kwargs=(("source", source.spec()), ("policy", " | ".join(p.spec() for p in chain)))))

    def parse_chain(self, kind: str, text: str) -> list[Component]:
        """Components of `kind` from a `|` chain."""
        return [self.build(kind, call) for call in parse_chain(text)]


def build(cls: type[Component], call: Call) -> Component:
    """Instantiate `cls` from a parsed call; positional values fill fields in declaration order."""
    names = [f.name for f in dataclasses.fields(cls)]
    if len(call.args) > len(names):
        raise SpecError(f"{cls.kind} '{cls.name}' takes {len(names)} parameters, got {len(call.args)} positional; expected {signature(cls)}")
    params = dict(zip(names, call.args))
    for key, value in call.kwargs:
        if key in params:
            raise SpecError(f"{cls.kind} '{cls.name}': parameter '{key}' given twice; expected {signature(cls)}")
        params[key] = value
    return cls.from_params(params)
