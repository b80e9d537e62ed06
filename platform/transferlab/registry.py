"""The registry of components by kind and name, filled by plugin hooks."""

import dataclasses
import difflib
from collections.abc import Iterator

from .cache import CLEARABLE, KEPT
from .component_checks import check_component
from .components import Component, signature
from .errors import PluginError, SpecError
from .specs import EXCERPT_CHARS, Call, excerpt, parse_chain, parse_one

PLUGINS_ENV = "TRANSFERLAB_PLUGINS"  # comma-separated third-party plugins to load; empty loads none
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


@dataclasses.dataclass(frozen=True)
class Problem:
    """A registration refused: the kind and name it claimed ('' when it has none usable), the plugins involved, and why."""

    kind: str
    name: str
    plugins: tuple[str, ...]
    message: str


@dataclasses.dataclass(frozen=True)
class CacheKind:
    """A cache folder a plugin registered: `cache_dir(name)` holds it, `transferlab cache --clear NAME` frees it."""

    name: str
    holds: str
    plugin: str


class Registry:
    """Component classes by kind and name; the single place spec strings become objects.

    A registration that breaks the contract (see component_checks), or a name two classes claim, is no error at load, so
    that `transferlab plugins` can list it: it is kept as a Problem, and using its name raises PluginError."""

    def __init__(self, unloaded: tuple[str, ...] = ()):
        self._entries: dict[str, dict[str, Entry]] = {kind: {} for kind in KIND_HOOKS}
        self._broken: dict[str, dict[str, Problem]] = {kind: {} for kind in KIND_HOOKS}
        self._claims: dict[str, dict[str, list[tuple[str, type]]]] = {kind: {} for kind in KIND_HOOKS}
        self._problems: list[Problem] = []
        self._caches: dict[str, CacheKind] = {}
        self.unloaded = unloaded  # installed plugins that PLUGINS_ENV leaves out, e.g. "'every-other' (distribution tl_every_other)"

    def add(self, kind: str, cls: type, plugin: str) -> None:
        """Register `cls` under its `name`; a class that breaks the contract, or a name two classes claim, becomes a Problem."""
        claimed = cls.__dict__.get("name") if isinstance(cls, type) else None
        name = claimed if isinstance(claimed, str) and claimed.isidentifier() else ""
        try:
            check_component(kind, cls, plugin)
            problem = None
        except PluginError as exc:
            problem = Problem(kind, name, (plugin,), str(exc))
        if not name:
            self._problems.append(problem)
            return
        claims = self._claims[kind].setdefault(name, [])
        if any(c is cls for _, c in claims):
            return
        claims.append((plugin, cls))
        if problem:
            self._refuse(problem)
        if len(claims) > 1:
            who = [f"'{p}' ({c.__module__}.{c.__qualname__})" for p, c in claims]
            self._refuse(Problem(kind, name, tuple(p for p, _ in claims),
                                 f"{kind} '{name}' is registered by {len(claims)} plugins: {', '.join(who[:-1])} and {who[-1]}; "
                                 f"rename all but one, or leave the others out with {PLUGINS_ENV}"))
        elif not problem:
            self._entries[kind][name] = Entry(kind, name, cls, plugin)

    def _refuse(self, problem: Problem) -> None:
        """Record a problem; its name, if any, cannot be used from now on (the latest problem of a name is what `get` says)."""
        self._problems.append(problem)
        self._broken[problem.kind][problem.name] = problem
        self._entries[problem.kind].pop(problem.name, None)

    def add_cache(self, name: str, holds: str, plugin: str) -> None:
        """Register a plugin's cache folder; a name that is no identifier, or is taken, becomes a Problem (the first keeps it)."""
        if not (isinstance(name, str) and name.isidentifier()):
            self._problems.append(Problem("cache", "", (plugin,), f"plugin '{plugin}' registered a cache named {name!r}, which is not an identifier"))
            return
        owner = "transferlab" if name in CLEARABLE or name in KEPT else getattr(self._caches.get(name), "plugin", None)
        if owner is not None:
            self._problems.append(Problem("cache", name, (owner, plugin), f"cache '{name}' is registered by two plugins: '{owner}' and '{plugin}'"))
        else:
            self._caches[name] = CacheKind(name, str(holds), plugin)

    def caches(self) -> dict[str, CacheKind]:
        """The plugins' cache folders by name."""
        return dict(self._caches)

    def problems(self) -> list[Problem]:
        """Every registration refused, in the order the plugins registered."""
        return list(self._problems)

    def entries(self, kind: str | None = None) -> Iterator[Entry]:
        """Registered entries, by kind then name."""
        for k in [kind] if kind else KIND_HOOKS:
            yield from sorted(self._entries[k].values(), key=lambda e: e.name)

    def get(self, kind: str, name: str) -> type[Component]:
        """The class registered as `name`; a PluginError for a name whose registration was refused; else a SpecError naming
        the closest registered names, and the installed plugins left out by PLUGINS_ENV."""
        if name in self._broken[kind]:
            raise PluginError(f"{kind} '{name}' cannot be used: {self._broken[kind][name].message}")
        entries = self._entries[kind]
        if name in entries:
            return entries[name].cls
        close = difflib.get_close_matches(name, entries, n=3, cutoff=0.5) if len(name) <= EXCERPT_CHARS else []
        hint = f"did you mean {' or '.join(map(repr, close))}? " if close else ""
        unloaded = f"; installed plugins not loaded because {PLUGINS_ENV} leaves them out: {', '.join(self.unloaded)}" if self.unloaded else ""
        raise SpecError(f"unknown {kind} {excerpt(name)}: {hint}registered: {', '.join(sorted(entries)) or 'none'}{unloaded}")

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
