"""The plugin contract: built-ins, third-party entry points, the allow-list variable, name clashes."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from transferlab import plugins

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
    """Run the installed console script with `site` first on the path (then the code under test, if PYTHONPATH names it)."""
    environ = os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))} | env
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
    assert out.returncode == 2 and "Traceback" not in out.stderr
    error = out.stderr.strip()
    assert error.startswith("Error: unknown policy 'every_other': registered: all, ") and error.endswith(
        "; installed plugins not loaded because TRANSFERLAB_PLUGINS leaves them out: 'every-other' (distribution tl_every_other)")
    for allowed in ("every-other", "tl_every_other", "TL.Every_Other", "tl--every-other"):  # names compare as PEP 503 normalizes them
        listed = cli(["plugins", "--json"], site, TRANSFERLAB_PLUGINS=allowed)
        assert listed.returncode == 0 and "every_other" in {r["name"] for r in json.loads(listed.stdout)}, (allowed, listed.stderr)
    missing = cli(["plugins"], site, TRANSFERLAB_PLUGINS="no-such-plugin")
    assert missing.returncode == 2 and missing.stderr.strip() == ("Error: TRANSFERLAB_PLUGINS names 'no-such-plugin', but no installed distribution "
                                                                  "provides it; installed plugins: 'every-other' (distribution tl_every_other)")


def test_two_plugins_with_one_name_are_listed_as_a_problem_and_the_name_refused_naming_both(site):
    install_plugin(site, "tl_clash", "tl_clash", CLASH, "clash")
    clash = ("policy 'images_per_class' is registered by 2 plugins: 'transferlab_subsets' (transferlab_subsets.image_policies.ImagesPerClass) "
             "and 'clash' (tl_clash.Mine); rename all but one, or leave the others out with TRANSFERLAB_PLUGINS")
    listed = cli(["plugins", "--json"], site)
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [r for r in rows if "problem" in r] == [{"kind": "policy", "name": "images_per_class", "plugins": ["transferlab_subsets", "clash"],
                                                    "problem": clash}]
    listed_policies = {r["name"] for r in rows if r["kind"] == "policy" and "problem" not in r}
    assert "every_other" in listed_policies and "images_per_class" not in listed_policies
    table = cli(["plugins"], site, COLUMNS="400")
    assert table.returncode == 0 and "problems: 1 registrations refused" in table.stdout and "'clash' (tl_clash.Mine)" in table.stdout
    used = cli(["subset", "--policy", "images_per_class(n=2)"], site)
    assert used.returncode == 2 and used.stderr.strip() == f"Error: policy 'images_per_class' cannot be used: {clash}"


def test_in_process_loading_and_reset(site, monkeypatch):
    monkeypatch.syspath_prepend(str(site))
    plugins.reset()
    names = {e.name for e in plugins.get_registry().entries("policy")}
    assert "every_other" in names
    monkeypatch.setenv("TRANSFERLAB_PLUGINS", "")
    plugins.reset()
    assert "every_other" not in {e.name for e in plugins.get_registry().entries("policy")}
