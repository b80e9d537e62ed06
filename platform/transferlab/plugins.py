"""Plugin loading: built-ins by module name, third parties from the `transferlab` entry-point group."""

import importlib
import importlib.metadata
import os
from functools import cache

import pluggy

from . import hookspecs
from .errors import PluginError
from .registry import KIND_HOOKS, Registry

DEFAULT_PLUGINS = ("transferlab_sources", "transferlab_subsets", "transferlab_wordnet", "transferlab_timm", "transferlab_probes",
                   "transferlab_studies", "transferlab_search")
ENTRY_POINT_GROUP = "transferlab"
PLUGINS_ENV = "TRANSFERLAB_PLUGINS"  # comma-separated third-party plugins to load; empty loads none


@cache
def get_plugin_manager() -> pluggy.PluginManager:
    """The plugin manager with built-in plugins and the allowed third-party plugins registered."""
    pm = pluggy.PluginManager("transferlab")
    pm.add_hookspecs(hookspecs)
    for module in DEFAULT_PLUGINS:
        pm.register(importlib.import_module(module), name=module)
    _load_entry_points(pm, os.environ.get(PLUGINS_ENV))
    return pm


def _load_entry_points(pm: pluggy.PluginManager, allowed: str | None) -> None:
    wanted = None if allowed is None else {n.strip() for n in allowed.split(",") if n.strip()}
    found = set()
    for dist in importlib.metadata.distributions():
        for ep in dist.entry_points.select(group=ENTRY_POINT_GROUP):
            found.update({ep.name, dist.name})
            if wanted is not None and not wanted & {ep.name, dist.name}:
                continue
            if pm.get_plugin(ep.name) is not None:
                continue
            try:
                plugin = ep.load()
            except Exception as exc:
                raise PluginError(f"plugin '{ep.name}' (distribution {dist.name}) failed to import: {exc!r}") from exc
            pm.register(plugin, name=ep.name)
    missing = sorted((wanted or set()) - found)
    if missing:
        raise PluginError(f"{PLUGINS_ENV} names {', '.join(map(repr, missing))}, but no installed distribution provides it; installed plugins: {', '.join(sorted(found)) or 'none'}")


@cache
def get_registry() -> Registry:
    """All components registered by the loaded plugins."""
    pm = get_plugin_manager()
    registry = Registry()
    for kind, hook in KIND_HOOKS.items():
        for impl in getattr(pm.hook, hook).get_hookimpls():
            impl.function(register=lambda cls, kind=kind, plugin=impl.plugin_name: registry.add(kind, cls, plugin))
    return registry


def reset() -> None:
    """Forget loaded plugins, so that the next call reloads them (tests, notebooks)."""
    get_registry.cache_clear()
    get_plugin_manager.cache_clear()
