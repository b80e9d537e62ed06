"""The public surface: everything a plugin needs comes from `transferlab` (its `__all__`); built-in plugins import nothing else of ours."""

import ast
import importlib
import subprocess
import sys
import types
from pathlib import Path

import pytest

import transferlab
from transferlab import plugins

PLUGINS_DIR = Path(__file__).resolve().parents[1] / "plugins"
OURS = ("transferlab", *plugins.DEFAULT_PLUGINS)


def private_imports(path: Path, package: str) -> list[str]:
    """`line: text` for each import in a plugin module that reaches past a public surface: a `transferlab.*` submodule, a name
    not in `transferlab.__all__`, another plugin's submodule or a name not in its `__all__`, or a relative import out of its package."""
    problems = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                top, _, rest = alias.name.partition(".")
                if top in OURS and rest and top != package:
                    problems.append(f"{node.lineno}: import {alias.name}")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                if node.level > 1:
                    problems.append(f"{node.lineno}: from {'.' * node.level}{node.module or ''} (outside its package)")
                continue
            top, _, rest = node.module.partition(".")
            if top not in OURS or top == package:
                continue
            if rest:
                problems.append(f"{node.lineno}: from {node.module} import ...")
                continue
            public = set(importlib.import_module(top).__all__)
            problems += [f"{node.lineno}: from {top} import {a.name} (not in {top}.__all__)" for a in node.names if a.name not in public]
    return problems


def plugin_modules() -> list[tuple[Path, str]]:
    """Every module of every built-in plugin, with its package name."""
    return [(path, path.relative_to(PLUGINS_DIR).parts[0]) for path in sorted(PLUGINS_DIR.rglob("*.py"))]


def test_builtin_plugins_import_only_the_public_surface():
    assert {package for _, package in plugin_modules()} == set(plugins.DEFAULT_PLUGINS)
    problems = {f"{path.relative_to(PLUGINS_DIR)}:{p}" for path, package in plugin_modules() for p in private_imports(path, package)}
    assert not problems, "built-in plugins reach past the public surface:\n" + "\n".join(sorted(problems))


@pytest.mark.parametrize("line, flagged", [
    ("from transferlab.cache import cache_dir", "from transferlab.cache import ..."),
    ("import transferlab.tasks", "import transferlab.tasks"),
    ("from transferlab import Policy, registry_internals", "registry_internals (not in transferlab.__all__)"),
    ("from transferlab_wordnet.hierarchy import wordnet_tree", "from transferlab_wordnet.hierarchy import ..."),
    ("from transferlab_wordnet import WordnetLevel", "WordnetLevel (not in transferlab_wordnet.__all__)"),
    ("from ..transferlab_wordnet import access", "(outside its package)"),
])
def test_the_import_check_flags_each_way_past_the_surface(tmp_path, line, flagged):
    module = tmp_path / "mod.py"
    module.write_text(f"import numpy\nfrom transferlab import Policy\nfrom .sibling import helper\n{line}\n")
    problems = private_imports(module, "transferlab_sources")
    assert len(problems) == 1 and problems[0].startswith("4: ") and flagged in problems[0], problems


def test_every_public_name_resolves_and_is_documented_where_it_lives():
    for name in transferlab.__all__:
        value = getattr(transferlab, name)
        if isinstance(value, (type, types.FunctionType)):
            assert value.__doc__, f"transferlab.{name} has no docstring"
    assert sorted(set(transferlab.__all__)) == sorted(transferlab.__all__), "a name is listed twice"
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        transferlab.nonexistent  # noqa: B018


def test_policies_is_only_the_function_and_the_base_class_module_is_policy():
    assert isinstance(transferlab.policies, types.FunctionType)
    assert [p.spec() for p in transferlab.policies("random_classes(k=3) | images_per_class(n=2)")] == [
        "random_classes(k=3)", "images_per_class(n=2, take='exact')"]
    assert importlib.import_module("transferlab.policy").Policy is transferlab.Policy
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("transferlab.policies")


def test_file_source_is_part_of_the_core():
    from transferlab_sources.image_folder import ImageFolder

    assert issubclass(ImageFolder, transferlab.FileSource) and transferlab.FileSource.__module__ == "transferlab.file_source"


def test_the_surface_imports_torch_only_when_a_torch_name_is_used():
    code = ("import sys, transferlab; assert 'torch' not in sys.modules, 'import transferlab loaded torch'; "
            "from transferlab import Backbone, Task, batches; assert 'torch' in sys.modules; print(Backbone.kind, Task.kind, batches.__name__)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["backbone", "task", "batches"]
