"""Project layout and the README's quick start, which CI runs verbatim."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    """The shell commands in the README's quick-start block."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```(?:sh|bash|console)\n(.*?)```", text, re.S).group(1)
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


def test_platform_is_a_source_root_not_a_package():
    assert not (ROOT / "platform" / "__init__.py").exists()
    assert (ROOT / "platform" / "transferlab" / "__init__.py").exists()
    import platform

    assert hasattr(platform, "python_version")  # the standard module, not our folder


def test_builtin_plugins_are_top_level_packages():
    assert {p.name for p in (ROOT / "plugins").iterdir() if (p / "__init__.py").exists()} >= {"transferlab_sources", "transferlab_subsets"}


def test_ci_runs_exactly_the_readme_test_command():
    setup, tests = readme_commands()[:2]
    assert "pip install" in setup and "pytest" in tests
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert tests.strip() in ci_lines
    assert tests.startswith("bash tests/setup.sh && ")  # the command sets up what it needs on a fresh machine ...
    assert not [line for line in ci_lines if line != tests.strip() and re.search(r"apt-get|pip install", line)]  # ... so CI adds nothing
