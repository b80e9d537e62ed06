"""Plugin loading: built-ins by module name, third parties from the `transferlab` entry-point group."""

import importlib
import importlib.metadata
import os
import re
from functools import cache

import pluggy

from . import hookspecs
from .api_version import check_api
from .errors import PluginError
from .registry import KIND_HOOKS, PLUGINS_ENV, Registry

DEFAULT_PLUGINS = ("transferlab_sources", "transferlab_subsets", "transferlab_wordnet", "transferlab_timm", "transferlab_probes",
                   "transferlab_studies", "transferlab_search")
ENTRY_POINT_GROUP = "transferlab"


def get_plugin_manager() -> pluggy.PluginManager:
    """The plugin manager with built-in plugins and the allowed third-party plugins registered."""
    return loaded_plugins()[0]


@cache
def loaded_plugins() -> tuple[pluggy.PluginManager, tuple[str, ...]]:
    """The plugin manager, and the installed plugins PLUGINS_ENV leaves out (e.g. "'every-other' (distribution tl_every_other)")."""
    pm = pluggy.PluginManager("transferlab")
    pm.add_hookspecs(hookspecs)
    for module in DEFAULT_PLUGINS:
        pm.register(importlib.import_module(module), name=module)
    return pm, _load_entry_points(pm, os.environ.get(PLUGINS_ENV))


def normalized(name: str) -> str:
    """A distribution or entry-point name as PEP 503 compares them: `My.Plugin`, `my_plugin` and `my-plugin` are one."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _load_entry_points(pm: pluggy.PluginManager, allowed: str | None) -> tuple[str, ...]:
    """Register the entry points PLUGINS_ENV allows (all when unset), each checked for the API it needs; return the others."""
    wanted = None if allowed is None else {normalized(n): n.strip() for n in allowed.split(",") if n.strip()}
    found, installed, unloaded = set(), set(), set()
    for dist in importlib.metadata.distributions():
        for ep in dist.entry_points.select(group=ENTRY_POINT_GROUP):
            names, shown = {normalized(ep.name), normalized(dist.name)}, f"'{ep.name}' (distribution {dist.name})"
            found |= names
            installed.add(shown)
            if wanted is not None and not names & set(wanted):
                unloaded.add(shown)
                continue
            if pm.get_plugin(ep.name) is not None:
                continue
            try:
                plugin = ep.load()
            except Exception as exc:
                raise PluginError(f"plugin '{ep.name}' (distribution {dist.name}) failed to import: {exc!r}") from exc
            check_api(ep.name, dist.name, plugin)
            pm.register(plugin, name=ep.name)
    missing = sorted(original for key, original in (wanted or {}).items() if key not in found)
    if missing:
        raise PluginError(f"{PLUGINS_ENV} names {', '.join(map(repr, missing))}, but no installed distribution provides it; installed plugins: "
                          f"{', '.join(sorted(installed)) or 'none'}")
    return tuple(sorted(unloaded))


@cache
def get_registry() -> Registry:
    """All components and cache folders registered by the loaded plugins."""
    pm, unloaded = loaded_plugins()
    registry = Registry(unloaded)
    for kind, hook in KIND_HOOKS.items():
        for impl in getattr(pm.hook, hook).get_hookimpls():
            impl.function(register=lambda cls, kind=kind, plugin=impl.plugin_name: registry.add(kind, cls, plugin))
    for impl in pm.hook.register_caches.get_hookimpls():
        impl.function(register=lambda name, holds, plugin=impl.plugin_name: registry.add_cache(name, holds, plugin))
    return registry


def reset() -> None:
    """Forget loaded plugins, so that the next call reloads them (tests, notebooks)."""
    get_registry.cache_clear()
    loaded_plugins.cache_clear()
