"""The plugin contract: built-ins, third-party entry points, the allow-list variable, name clashes."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from transferlab import PluginError, plugins
from transferlab.registry import Registry

EVERY_OTHER = '''
"""A third-party plugin: keeps every other image of each class."""
import dataclasses
from transferlab import Policy, hookimpl


@dataclasses.dataclass(frozen=True)
class EveryOther(Policy):
    """Keep every second training image."""

    name = "every_other"
    offset: int = 0

    def apply(self, subset, tree, seeds):
        return subset.keep_samples(subset.samples[self.offset::2])


@hookimpl
def register_policies(register):
    register(EveryOther)
'''

CLASH = '''
"""A third-party plugin that reuses a built-in policy name."""
import dataclasses
from transferlab import Policy, hookimpl


@dataclasses.dataclass(frozen=True)
class Mine(Policy):
    """Not the built-in one."""

    name = "images_per_class"

    def apply(self, subset, tree, seeds):
        return subset


@hookimpl
def register_policies(register):
    register(Mine)
'''


def install_plugin(site: Path, dist: str, module: str, code: str, entry_name: str) -> None:
    """Lay out a distribution the way pip would: a module plus `<dist>-0.1.dist-info` with an entry point."""
    site.mkdir(exist_ok=True)
    (site / f"{module}.py").write_text(textwrap.dedent(code))
    info = site / f"{dist}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[transferlab]\n{entry_name} = {module}\n")


def cli(args: list[str], site: Path, **env: str) -> subprocess.CompletedProcess:
    """Run the installed console script with `site` on the path."""
    environ = os.environ | {"PYTHONPATH": str(site)} | env
    script = Path(sys.executable).with_name("transferlab")
    return subprocess.run([str(script), *args], capture_output=True, text=True, env=environ, timeout=120)


@pytest.fixture
def site(tmp_path):
    site = tmp_path / "site"
    install_plugin(site, "tl_every_other", "tl_every_other", EVERY_OTHER, "every-other")
    return site


def test_third_party_policy_is_listed_and_usable_from_the_cli(site):
    listed = cli(["plugins", "--json"], site)
    assert listed.returncode == 0, listed.stderr
    rows = {(r["kind"], r["name"]): r for r in json.loads(listed.stdout)}
    assert rows[("policy", "every_other")]["plugin"] == "every-other"
    assert rows[("policy", "images_per_class")]["plugin"] == "transferlab_subsets"
    assert rows[("source", "synthetic")]["plugin"] == "transferlab_sources"
    base = json.loads(cli(["subset", "--source", "synthetic(train=10, val=2, test=2)", "--policy", "images_per_class(n=6)", "--json"], site).stdout)
    out = cli(["subset", "--source", "synthetic(train=10, val=2, test=2)", "--policy", "images_per_class(n=6) | every_other(offset=1)", "--json"], site)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["num_samples"] == base["num_samples"] // 2
    assert summary["policy"] == "images_per_class(n=6, take='exact') | every_other(offset=1)"


def test_allow_list_variable_limits_third_party_plugins(site):
    out = cli(["subset", "--policy", "every_other"], site, TRANSFERLAB_PLUGINS="")
    assert out.returncode == 2 and "unknown policy 'every_other'" in out.stderr and "Traceback" not in out.stderr
    assert cli(["plugins", "--json"], site, TRANSFERLAB_PLUGINS="every-other").returncode == 0
    assert cli(["plugins", "--json"], site, TRANSFERLAB_PLUGINS="tl_every_other").returncode == 0
    missing = cli(["plugins"], site, TRANSFERLAB_PLUGINS="no-such-plugin")
    assert missing.returncode == 2 and "'no-such-plugin'" in missing.stderr and "every-other" in missing.stderr


def test_two_plugins_with_one_name_is_an_error_naming_both(site):
    install_plugin(site, "tl_clash", "tl_clash", CLASH, "clash")
    out = cli(["plugins"], site)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "policy 'images_per_class' is registered by two plugins" in out.stderr
    assert "'transferlab_subsets'" in out.stderr and "'clash'" in out.stderr


def test_in_process_loading_and_reset(site, monkeypatch):
    monkeypatch.syspath_prepend(str(site))
    plugins.reset()
    names = {e.name for e in plugins.get_registry().entries("policy")}
    assert "every_other" in names
    monkeypatch.setenv("TRANSFERLAB_PLUGINS", "")
    plugins.reset()
    assert "every_other" not in {e.name for e in plugins.get_registry().entries("policy")}


def test_registry_checks_what_is_registered():
    registry = Registry()
    with pytest.raises(PluginError, match="not a Component dataclass"):
        registry.add("policy", object, "p")
    from transferlab_subsets.image_policies import ImagesPerClass
    with pytest.raises(PluginError, match="as a source"):
        registry.add("source", ImagesPerClass, "p")
    registry.add("policy", ImagesPerClass, "p")
    registry.add("policy", ImagesPerClass, "p")  # the same class twice is harmless
