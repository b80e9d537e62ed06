"""What registration checks (frozen dataclass, own identifier name, the base's signatures, clashes), the plugin API version,
plugin cache folders, and the preconditions a source, backbone and task check before any MLflow run."""

import dataclasses
import json
import sys
from typing import ClassVar

import pytest
from click.testing import CliRunner
from mlflow import MlflowClient

from test_plugins import install_plugin
from tiny_specs import BACKBONE, SOURCE, TARGET
from transferlab import PluginError, Policy, SearchSpace, Source, SpecError, Study, plugins
from transferlab.api_version import API_VERSION
from transferlab.backbones import Backbone
from transferlab.cache import cache_dir
from transferlab.cli import cli
from transferlab.registry import Registry
from transferlab.tasks import Task
from transferlab_subsets.image_policies import ImagesPerClass

pytest_plugins = ["mlflow_store"]  # fixtures: empty_store, store
HERE = __name__  # the module the classes below are defined in, as messages name them


@dataclasses.dataclass(frozen=True)
class Keep(Policy):
    """A valid policy."""

    name = "keep"
    n: int = 1

    def apply(self, subset, tree, seeds, verbose: bool = False):  # an extra parameter with a default is fine
        return subset


class Forgot(Keep):  # no @dataclass: its field would vanish
    name = "forgot"
    extra: int = 2
    note: ClassVar[str] = "a class variable, not a field"


class Plain(Keep):  # no @dataclass and no fields: still refused, since the next field added would vanish
    name = "plain"


@dataclasses.dataclass(frozen=True)
class Nameless(Policy):
    def apply(self, subset, tree, seeds):
        return subset


@dataclasses.dataclass(frozen=True)
class Inherits(Keep):
    """Forgot to set its own name."""


@dataclasses.dataclass(frozen=True)
class Dashed(Policy):
    name = "my-policy"

    def apply(self, subset, tree, seeds):
        return subset


@dataclasses.dataclass(frozen=True)
class NotRun(Task):
    name = "not_run"
    run = "a string"


def refusal(kind: str, cls, plugin: str = "p") -> str:
    """The one problem registering `cls` records."""
    registry = Registry()
    registry.add(kind, cls, plugin)
    [problem] = registry.problems()
    assert problem.plugins == (plugin,) and list(registry.entries(kind)) == []
    return problem.message


def test_a_valid_class_registers_and_the_same_class_twice_is_harmless():
    registry = Registry()
    registry.add("policy", Keep, "p")
    registry.add("policy", Keep, "p")
    assert registry.get("policy", "keep") is Keep and registry.problems() == []


@pytest.mark.parametrize("kind, cls, message", [
    ("policy", object, "plugin 'p' registered <class 'object'> as a policy, but it is not a Component subclass (a frozen dataclass "
                       "deriving from transferlab's policy base class)"),
    ("source", Keep, f"plugin 'p': source class {HERE}.Keep is a policy, registered as a source"),
    ("policy", Forgot, f"plugin 'p': policy class {HERE}.Forgot is not a dataclass: its fields 'extra' would be ignored; decorate it "
                       "with @dataclasses.dataclass(frozen=True)"),
    ("policy", Plain, f"plugin 'p': policy class {HERE}.Plain is not a dataclass; decorate it with @dataclasses.dataclass(frozen=True)"),
    ("policy", Nameless, f"plugin 'p': policy class {HERE}.Nameless has no name of its own; set a class attribute such as name = 'my_policy'"),
    ("policy", Inherits, f"plugin 'p': policy class {HERE}.Inherits has no name of its own (it inherits 'keep'); set a class attribute "
                         "such as name = 'my_policy'"),
    ("task", NotRun, f"plugin 'p': task class {HERE}.NotRun: run is not a method; Task defines run(self, ctx)"),
    ("policy", Dashed, f"plugin 'p': policy class {HERE}.Dashed has name 'my-policy', which is not an identifier (letters, digits and _, "
                       "not starting with a digit)"),
])
def test_a_class_that_breaks_the_contract_is_refused_with_the_reason(kind, cls, message):
    assert refusal(kind, cls) == message


def test_a_refused_class_with_a_usable_name_raises_on_use():
    registry = Registry()
    registry.add("policy", Forgot, "p")
    with pytest.raises(PluginError) as refused:
        registry.parse("policy", "forgot(extra=3)")
    assert str(refused.value) == f"policy 'forgot' cannot be used: plugin 'p': policy class {HERE}.Forgot is not a dataclass: its fields " \
                                 "'extra' would be ignored; decorate it with @dataclasses.dataclass(frozen=True)"


def wrong(base: type, name: str, method: str, params: str):
    """A frozen dataclass of `base`'s kind named `name` whose `method` takes `params`."""
    namespace: dict = {}
    exec(f"def {method}({params}):\n    pass", namespace)
    cls = type(f"Wrong{base.__name__}", (base,), {"name": name, method: namespace[method], "__module__": HERE})
    return dataclasses.dataclass(frozen=True)(cls)


@pytest.mark.parametrize("base, method, params, expected", [
    (Policy, "apply", "self, subset", "Policy.apply(self, subset, tree, seeds)"),
    (Source, "load", "self, samples", "Source.load(self, samples, size=None)"),
    (Source, "check", "self, root", "Source.check(self)"),
    (Task, "run", "self, context", "Task.run(self, ctx)"),
    (Task, "check", "self", "Task.check(self, target)"),
    (Backbone, "build", "self, resolution, num_classes", "Backbone.build(self, num_classes, resolution)"),
    (Backbone, "check", "self, training, strict", "Backbone.check(self, training)"),
    (Study, "cells", "self, source", "Study.cells(self, source, target)"),
    (SearchSpace, "suggest", "self, ctx, trial", "SearchSpace.suggest(self, trial, ctx)"),
    (Policy, "validate", "self, strict", "Component.validate(self)"),
])
def test_a_method_overridden_with_other_parameters_is_refused_showing_both_signatures(base, method, params, expected):
    cls = wrong(base, "wrong", method, params)
    assert refusal(base.kind, cls) == (f"plugin 'p': {base.kind} class {HERE}.Wrong{base.__name__}: {method}({params}) does not match "
                                       f"{expected}; keep the base's parameters, names and order (extra ones need defaults)")


@pytest.mark.parametrize("params", ["self, subset, tree, seeds, extra=1", "self, *args, **kwargs", "self, subset, tree, seeds, *more"])
def test_compatible_overrides_register(params):
    registry = Registry()
    registry.add("policy", wrong(Policy, "fine", "apply", params), "p")
    assert registry.problems() == [] and registry.get("policy", "fine").name == "fine"


def test_a_name_two_plugins_register_is_listed_once_per_clash_and_refused_naming_all():
    registry = Registry()
    registry.add("policy", ImagesPerClass, "transferlab_subsets")
    clones = [dataclasses.dataclass(frozen=True)(type(f"Clone{i}", (Keep,), {"name": "images_per_class", "__module__": HERE})) for i in (1, 2)]
    registry.add("policy", clones[0], "a")
    registry.add("policy", clones[1], "b")
    first = ("policy 'images_per_class' is registered by 2 plugins: 'transferlab_subsets' (transferlab_subsets.image_policies.ImagesPerClass) "
             f"and 'a' ({HERE}.Clone1); rename all but one, or leave the others out with TRANSFERLAB_PLUGINS")
    last = ("policy 'images_per_class' is registered by 3 plugins: 'transferlab_subsets' (transferlab_subsets.image_policies.ImagesPerClass), "
            f"'a' ({HERE}.Clone1) and 'b' ({HERE}.Clone2); rename all but one, or leave the others out with TRANSFERLAB_PLUGINS")
    assert [p.message for p in registry.problems()] == [first, last] and registry.problems()[1].plugins == ("transferlab_subsets", "a", "b")
    assert list(registry.entries("policy")) == []
    with pytest.raises(PluginError) as used:
        registry.get("policy", "images_per_class")
    assert str(used.value) == f"policy 'images_per_class' cannot be used: {last}"


def test_a_broken_class_claiming_a_taken_name_is_a_clash_too():
    registry = Registry()
    registry.add("policy", Keep, "a")
    registry.add("policy", dataclasses.dataclass(frozen=True)(type("Other", (Keep,), {"name": "keep", "__module__": HERE,
                                                                                          "apply": lambda self, subset: subset})), "b")
    assert [p.message.split(":")[0] for p in registry.problems()] == ["plugin 'b'", "policy 'keep' is registered by 2 plugins"]
    with pytest.raises(PluginError, match="registered by 2 plugins: 'a'"):
        registry.get("policy", "keep")


def test_cache_folders_a_plugin_registers_are_checked():
    registry = Registry()
    registry.add_cache("embeddings", "text embeddings", "a")
    registry.add_cache("embeddings", "other", "b")
    registry.add_cache("images", "mine", "c")
    registry.add_cache("../up", "escapes", "d")
    assert [c.plugin for c in registry.caches().values()] == ["a"]
    assert [p.message for p in registry.problems()] == [
        "cache 'embeddings' is registered by two plugins: 'a' and 'b'", "cache 'images' is registered by two plugins: 'transferlab' and 'c'",
        "plugin 'd' registered a cache named '../up', which is not an identifier"]


# ---- installed plugins: the API version, the listing, cache folders ------------------------------------------------

def plugin_code(api: str | None = None, extra: str = "") -> str:
    declared = f"TRANSFERLAB_API = {api!r}\n" if api is not None else ""
    return f'''
"""A third-party plugin."""
import dataclasses
from transferlab import Policy, hookimpl
{declared}

@dataclasses.dataclass(frozen=True)
class Mine(Policy):
    """Keeps everything."""

    name = "mine"

    def apply(self, subset, tree, seeds):
        return subset


@hookimpl
def register_policies(register):
    register(Mine)
{extra}'''


def load(tmp_path, monkeypatch, code: str):
    site = tmp_path / "site"
    install_plugin(site, "tl_mine", "tl_mine", code, "mine")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delitem(sys.modules, "tl_mine", raising=False)  # another test's tl_mine
    plugins.reset()
    return plugins.get_registry()


@pytest.mark.parametrize("api", [None, "1", "1.0", API_VERSION])
def test_a_plugin_needing_this_api_loads(tmp_path, monkeypatch, api):
    assert load(tmp_path, monkeypatch, plugin_code(api)).get("policy", "mine").name == "mine"


@pytest.mark.parametrize("api, message", [
    ("2", "plugin 'mine' (distribution tl_mine) needs transferlab plugin API 2, but this transferlab provides API 1.0: upgrade transferlab, "
          "or leave the plugin out with TRANSFERLAB_PLUGINS"),
    ("1.1", "plugin 'mine' (distribution tl_mine) needs transferlab plugin API 1.1, but this transferlab provides API 1.0: upgrade "
            "transferlab, or leave the plugin out with TRANSFERLAB_PLUGINS"),
    ("0.9", "plugin 'mine' (distribution tl_mine) needs transferlab plugin API 0.9, but this transferlab provides API 1.0: install a "
            "version of the plugin made for it, or leave the plugin out with TRANSFERLAB_PLUGINS"),
    ("one", "plugin 'mine' (distribution tl_mine) declares TRANSFERLAB_API = 'one'; it must be a version string such as '1' or '1.0'"),
])
def test_a_plugin_needing_another_api_is_refused_at_load_naming_both_versions(tmp_path, monkeypatch, api, message):
    with pytest.raises(PluginError) as refused:
        load(tmp_path, monkeypatch, plugin_code(api))
    assert str(refused.value) == message
    assert API_VERSION == "1.0"


def test_the_plugins_command_lists_refused_registrations_and_succeeds(tmp_path, monkeypatch):
    broken = plugin_code(extra='''

class Lost(Mine):
    name = "lost"
    n: int = 1


@hookimpl
def register_tasks(register):
    register(Lost)
''')
    load(tmp_path, monkeypatch, broken)
    listed = CliRunner().invoke(cli, ["plugins", "--json"])
    assert listed.exit_code == 0, listed.output
    problems = [r for r in json.loads(listed.stdout) if "problem" in r]
    assert problems == [{"kind": "task", "name": "lost", "plugins": ["mine"], "problem": "plugin 'mine': task class tl_mine.Lost is a policy, "
                         "registered as a task"}]
    table = CliRunner().invoke(cli, ["plugins"], terminal_width=300)
    assert table.exit_code == 0 and "problems: 1 registrations refused" in table.stdout and "tl_mine.Lost is a policy" in table.stdout


CACHING = plugin_code(extra='''

@hookimpl
def register_caches(register):
    register("tl_embeddings", "embeddings of tl_mine")
''')


def test_a_plugin_cache_folder_is_shown_and_cleared(tmp_path, monkeypatch):
    load(tmp_path, monkeypatch, CACHING)
    (cache_dir("tl_embeddings") / "e.npy").write_bytes(b"x" * 200_000)
    (cache_dir("features") / "f.npy").write_bytes(b"y" * 1000)
    shown = CliRunner().invoke(cli, ["cache", "--json"])
    assert shown.exit_code == 0, shown.output
    folders = {f["folder"]: f for f in json.loads(shown.stdout)["folders"]}
    assert folders["tl_embeddings"]["holds"] == "embeddings of tl_mine (plugin mine)" and folders["tl_embeddings"]["files"] == 1
    assert folders["tl_embeddings"]["bytes"] == 200_000
    refused = CliRunner().invoke(cli, ["cache", "--clear", "tl_embeddings", "--clear", "nope"])
    assert refused.exit_code == 2 and refused.stderr.strip() == ("Error: cannot clear 'nope': clearable caches are images, features, synthetic, "
                                                                 "index, tl_embeddings (checkpoints and locks are kept for resuming runs)")
    assert (cache_dir("tl_embeddings") / "e.npy").exists()
    cleared = CliRunner().invoke(cli, ["cache", "--clear", "tl_embeddings"])
    assert cleared.exit_code == 0 and "cleared tl_embeddings: 1 files" in cleared.output
    assert not (cache_dir("tl_embeddings") / "e.npy").exists() and (cache_dir("features") / "f.npy").exists()


def test_without_the_plugin_its_cache_folder_cannot_be_cleared(tmp_path, monkeypatch):
    load(tmp_path, monkeypatch, CACHING)
    monkeypatch.setenv("TRANSFERLAB_PLUGINS", "")
    plugins.reset()
    refused = CliRunner().invoke(cli, ["cache", "--clear", "tl_embeddings"])
    assert refused.exit_code == 2 and "cannot clear 'tl_embeddings'" in refused.stderr


# ---- preconditions: checked before any MLflow run ------------------------------------------------------------------

CHECKED = '''
"""Components whose checks refuse: a source without its root, a backbone that trains at 16 px only, a task that takes no target."""
import dataclasses
from pathlib import Path
from transferlab import Backbone, DataError, Source, SpecError, Task, hookimpl


@dataclasses.dataclass(frozen=True)
class Rooted(Source):
    """Images under root."""

    name = "rooted"
    root: str

    def check(self):
        if not Path(self.root).is_dir():
            raise DataError(f"rooted: root {self.root!r} does not exist")

    def build_index(self):
        raise AssertionError("index built before check")


@dataclasses.dataclass(frozen=True)
class Picky(Backbone):
    """Trains at 16 px only."""

    name = "picky"

    def check(self, training):
        if training.resolution != 16:
            raise SpecError(f"picky: trains at 16 px only, got {training.resolution}")

    def build(self, num_classes, resolution):
        raise AssertionError("built before check")


@dataclasses.dataclass(frozen=True)
class Choosy(Task):
    """Runs on no target."""

    name = "choosy"

    def check(self, target):
        raise DataError(f"choosy: will not run on {target.name}")

    def run(self, ctx):
        raise AssertionError("ran before check")


@hookimpl
def register_sources(register):
    register(Rooted)


@hookimpl
def register_backbones(register):
    register(Picky)


@hookimpl
def register_tasks(register):
    register(Choosy)
'''

TRAINING = "train(steps=2, batch_size=16, resolution=16)"
BASE = {"--source": SOURCE, "--target": TARGET, "--backbone": BACKBONE, "--training": TRAINING}
COMMANDS = {"pretrain": ["pretrain"], "run": ["run"], "study": ["study", "fixed_budget", "--seeds", "1"],
            "search": ["search", "--budget", "40", "--trials", "1", "--space", "allocation(steps=(2,))"]}
TASK_OPTION = {"run": "--tasks", "study": "--tasks", "search": "--task"}
ROOTLESS = "rooted(root='/no/such/folder')"


def command(name: str, **options: str) -> list[str]:
    given = {k: v for k, v in {**BASE, **{f"--{k}": v for k, v in options.items()}}.items() if name != "pretrain" or k != "--target"}
    return COMMANDS[name] + [x for kv in given.items() for x in kv]


CASES = [
    *[(name, {"source": ROOTLESS}, "rooted: root '/no/such/folder' does not exist") for name in COMMANDS],
    *[(name, {"target": ROOTLESS}, "rooted: root '/no/such/folder' does not exist") for name in ("run", "study", "search")],
    *[(name, {"backbone": "picky", "training": "train(steps=2, batch_size=16, resolution=24)"}, "picky: trains at 16 px only, got 24")
      for name in COMMANDS],
    *[(name, {TASK_OPTION[name].lstrip("-"): "choosy"}, "choosy: will not run on synthetic") for name in ("run", "study", "search")],
    ("pretrain", {"backbone": "vit_tiny_patch16_224", "training": "train(steps=2, batch_size=16, resolution=40)"},
     "backbone timm(drop_path_rate=0.0, drop_rate=0.0, model='vit_tiny_patch16_224', small_stem='auto') cannot train at 40 px: its "
     "patches are 16 px, so the last 8 px of every image would be ignored; use a multiple of 16, such as 32 or 48"),
]


@pytest.mark.parametrize("name, options, message", CASES, ids=[f"{c[0]}-{'-'.join(c[1])}-{c[2].split(':')[0]}" for c in CASES])
def test_a_failed_precondition_stops_every_command_before_any_run(store, tmp_path, monkeypatch, name, options, message):
    load(tmp_path, monkeypatch, CHECKED)
    result = CliRunner().invoke(cli, command(name, **options))
    assert result.exit_code == 2 and result.stderr.strip() == f"Error: {message}", result.output
    client = MlflowClient()
    assert client.search_runs([e.experiment_id for e in client.search_experiments()]) == []


def test_the_default_backbone_check_is_one_image_at_the_training_resolution():
    from transferlab.training_spec import Training

    convnext = plugins.get_registry().parse("backbone", "convnext_atto")
    with pytest.raises(SpecError, match="cannot take 16 px images: a forward pass of one fails"):
        convnext.check(Training(resolution=16))
    convnext.check(Training(resolution=64))
