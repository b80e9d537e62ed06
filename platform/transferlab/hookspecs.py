"""The plugin contract: every hook receives a `register` callback; component hooks register classes, `register_caches` folders.

Each hook is called once per process, the first time the registry is needed (`transferlab.get_registry()`; every CLI
command but `--version`), in the main thread, after every plugin is imported. A hook must only call `register`: no
data is read and nothing heavy imported then (torch and timm load when a component first needs them), so that
`transferlab plugins` starts fast. A plugin module may declare the plugin API version it needs, `TRANSFERLAB_API =
"1.0"` (see transferlab.api_version): a plugin whose major version differs, or whose minor version is newer than this
transferlab's, is refused at load with a PluginError.
"""

import pluggy

hookspec = pluggy.HookspecMarker("transferlab")
hookimpl = pluggy.HookimplMarker("transferlab")


@hookspec
def register_sources(register):
    """Register datasets usable as pretraining source or transfer target.

    :param register: a callable taking one component class, ``register(cls)``; call it once per class, a subclass of
        ``transferlab.Source`` (``build_index``, ``load``; optionally ``build_tree``, ``label``, ``check``).
        The class must be decorated with ``@dataclasses.dataclass(frozen=True)`` itself (the fields of an undecorated
        subclass would be lost), set its own ``name`` (an identifier, unique among the Source classes of all plugins) and
        override the base's methods with the base's parameters (names, kinds and order; extra ones need defaults). A class
        that breaks these rules, or a name two plugins register, is no error at load: ``transferlab plugins`` lists it
        under problems, and using the name raises PluginError naming the plugins.
    """


@hookspec
def register_policies(register):
    """Register subset policies.

    :param register: a callable taking one component class, ``register(cls)``; call it once per class, a subclass of
        ``transferlab.Policy`` (``apply``; optionally ``prepare``).
        The class must be decorated with ``@dataclasses.dataclass(frozen=True)`` itself (the fields of an undecorated
        subclass would be lost), set its own ``name`` (an identifier, unique among the Policy classes of all plugins) and
        override the base's methods with the base's parameters (names, kinds and order; extra ones need defaults). A class
        that breaks these rules, or a name two plugins register, is no error at load: ``transferlab plugins`` lists it
        under problems, and using the name raises PluginError naming the plugins.
    """


@hookspec
def register_backbones(register):
    """Register backbone builders.

    :param register: a callable taking one component class, ``register(cls)``; call it once per class, a subclass of
        ``transferlab.Backbone`` (``build``; optionally ``check``).
        The class must be decorated with ``@dataclasses.dataclass(frozen=True)`` itself (the fields of an undecorated
        subclass would be lost), set its own ``name`` (an identifier, unique among the Backbone classes of all plugins) and
        override the base's methods with the base's parameters (names, kinds and order; extra ones need defaults). A class
        that breaks these rules, or a name two plugins register, is no error at load: ``transferlab plugins`` lists it
        under problems, and using the name raises PluginError naming the plugins.
    """


@hookspec
def register_tasks(register):
    """Register transfer tasks.

    :param register: a callable taking one component class, ``register(cls)``; call it once per class, a subclass of
        ``transferlab.Task`` (``run``; optionally ``check``).
        The class must be decorated with ``@dataclasses.dataclass(frozen=True)`` itself (the fields of an undecorated
        subclass would be lost), set its own ``name`` (an identifier, unique among the Task classes of all plugins) and
        override the base's methods with the base's parameters (names, kinds and order; extra ones need defaults). A class
        that breaks these rules, or a name two plugins register, is no error at load: ``transferlab plugins`` lists it
        under problems, and using the name raises PluginError naming the plugins.
    """


@hookspec
def register_studies(register):
    """Register named study grids.

    :param register: a callable taking one component class, ``register(cls)``; call it once per class, a subclass of
        ``transferlab.Study`` (``cells``).
        The class must be decorated with ``@dataclasses.dataclass(frozen=True)`` itself (the fields of an undecorated
        subclass would be lost), set its own ``name`` (an identifier, unique among the Study classes of all plugins) and
        override the base's methods with the base's parameters (names, kinds and order; extra ones need defaults). A class
        that breaks these rules, or a name two plugins register, is no error at load: ``transferlab plugins`` lists it
        under problems, and using the name raises PluginError naming the plugins.
    """


@hookspec
def register_spaces(register):
    """Register search spaces: what an Optuna search may vary about a pretraining (classes, images, labels, length).

    :param register: a callable taking one component class, ``register(cls)``; call it once per class, a subclass of
        ``transferlab.SearchSpace`` (``suggest``, ``describe``; optionally ``check``).
        The class must be decorated with ``@dataclasses.dataclass(frozen=True)`` itself (the fields of an undecorated
        subclass would be lost), set its own ``name`` (an identifier, unique among the SearchSpace classes of all plugins) and
        override the base's methods with the base's parameters (names, kinds and order; extra ones need defaults). A class
        that breaks these rules, or a name two plugins register, is no error at load: ``transferlab plugins`` lists it
        under problems, and using the name raises PluginError naming the plugins.
    """


@hookspec
def register_caches(register):
    """Register the cache folders a plugin writes, so that ``transferlab cache`` shows their size and ``transferlab cache
    --clear NAME`` frees them. The plugin writes under ``transferlab.cache.cache_dir(NAME)`` and must rebuild what it
    needs when the folder is gone (cleared caches are rebuilt on demand); nothing it cannot rebuild belongs there.

    :param register: a callable ``register(name, holds)``: ``name`` is the folder's name, an identifier not taken by
        transferlab's own folders (images, features, synthetic, index, checkpoints, locks, nltk_data) or another plugin's;
        ``holds`` is one line saying what it holds, shown by ``transferlab cache``. A name that is taken or no identifier
        is listed under problems by ``transferlab plugins`` and not registered (the first registration keeps it).
    """
