"""The plugin contract: every hook receives a `register` callback that takes a component class."""

import pluggy

hookspec = pluggy.HookspecMarker("transferlab")
hookimpl = pluggy.HookimplMarker("transferlab")


@hookspec
def register_sources(register):
    """Register datasets usable as pretraining source or transfer target."""


@hookspec
def register_policies(register):
    """Register subset policies."""


@hookspec
def register_backbones(register):
    """Register backbone builders."""


@hookspec
def register_tasks(register):
    """Register transfer tasks."""


@hookspec
def register_studies(register):
    """Register named study grids."""


@hookspec
def register_spaces(register):
    """Register search spaces: what an Optuna search may vary about a pretraining (classes, images, labels, length)."""
