"""tests/setup.sh, which the README's test command runs first, and the tests that must run without WordNet."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "setup.sh"
INSTALL = "apt-get install -y -qq --no-install-recommends"

# Stand-ins for the system, driven by files in $STATE: `ensurepip`, `wordnet` and PostgreSQL's initdb (at INITDB, which
# $TRANSFERLAB_POSTGRES_BIN points setup.sh at) mark what is installed. Each logs its call.
INITDB = "postgresql/15/bin/initdb"
FAKES = {
    "id": 'echo "$FAKE_UID"',
    "apt-get": 'echo "apt-get $*" >> "$LOG"\n'
               'case " $* " in *" python3-venv "*) touch "$STATE/ensurepip";; esac\n'
               'case " $* " in *" wordnet-base "*) touch "$STATE/wordnet";; esac\n'
               f'case " $* " in *" postgresql "*) mkdir -p "$(dirname "$STATE/{INITDB}")"; touch "$STATE/{INITDB}";; esac',
    "python3": 'case "$*" in\n'
               '  "-c import ensurepip") [ -e "$STATE/ensurepip" ];;\n'
               '  "-m venv .venv") echo "python3 $*" >> "$LOG"; mkdir -p .venv/bin; cp "$STATE/python" "$STATE/pip" .venv/bin;;\n'
               '  *) exit 99;;\n'
               'esac',
    "python": 'case "$*" in\n'  # the venv's python
              '  *find_wordnet*) [ -e "$STATE/wordnet" ];;\n'
              '  *nltk.downloader*) echo "nltk.downloader" >> "$LOG"; exit 1;;\n'
              '  *) exit 99;;\n'
              'esac',
    "pip": 'echo "pip $*" >> "$LOG"',
}
SYSTEM_TOOLS = ("bash", "dirname", "mkdir", "cp", "touch")  # the real programs setup.sh and the fakes run


def write_script(path: Path, body: str) -> None:
    path.write_text(f"#!/usr/bin/env bash\n{body}\n")
    path.chmod(0o755)


@pytest.fixture
def sandbox(tmp_path):
    """A checkout holding only tests/setup.sh, with fake id, apt-get and python3 on PATH; returns run(uid, *installed)."""
    (tmp_path / "tests").mkdir()
    shutil.copy(SCRIPT, tmp_path / "tests" / "setup.sh")
    state, bin_dir = tmp_path / "state", tmp_path / "bin"
    state.mkdir()
    bin_dir.mkdir()
    for name, body in FAKES.items():
        write_script((state if name in ("python", "pip") else bin_dir) / name, body)
    log = tmp_path / "log"
    for tool in SYSTEM_TOOLS:  # PATH holds only these and the fakes: this machine's own initdb, say, must not count
        (bin_dir / tool).symlink_to(shutil.which(tool))
    env = {"PATH": str(bin_dir), "STATE": str(state), "LOG": str(log), "HOME": str(tmp_path),
           "TRANSFERLAB_POSTGRES_BIN": f"{state}/postgresql/*/bin"}

    def run(uid: int, *installed: str) -> tuple[subprocess.CompletedProcess, list[str]]:
        for name in installed:
            (state / name).parent.mkdir(parents=True, exist_ok=True)
            (state / name).touch()
        log.write_text("")
        done = subprocess.run(["bash", "tests/setup.sh"], cwd=tmp_path, env={**env, "FAKE_UID": str(uid)}, capture_output=True, text=True)
        return done, log.read_text().splitlines()

    return run


def test_setup_script_is_valid_bash():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


def test_as_root_on_debian_it_installs_exactly_what_is_missing_once(sandbox):
    done, calls = sandbox(0)
    assert done.returncode == 0, done.stderr
    assert calls == ["apt-get update -qq", f"{INSTALL} python3-venv", f"{INSTALL} postgresql", "python3 -m venv .venv",
                     "pip install -q --disable-pip-version-check -e .[test]", f"{INSTALL} wordnet-base wordnet-sense-index"]
    done, calls = sandbox(0)  # again: all there, so only pip checks the install
    assert done.returncode == 0 and calls == ["pip install -q --disable-pip-version-check -e .[test]"]


def test_as_root_it_installs_nothing_when_all_is_there(sandbox):
    done, calls = sandbox(0, "ensurepip", "wordnet", INITDB)
    assert done.returncode == 0 and not [c for c in calls if c.startswith("apt-get")]


def test_not_root_it_tries_nltks_downloader_then_says_what_to_do_in_one_line(sandbox):
    done, calls = sandbox(1000, "ensurepip")
    assert done.returncode == 1 and not [c for c in calls if c.startswith("apt-get")] and "nltk.downloader" in calls
    assert done.stdout == "" and len(done.stderr.splitlines()) == 1
    assert done.stderr.startswith("tests/setup.sh: the tests need WordNet 3.0: run this as root on Debian")
    assert "wordnet-base" in done.stderr and "TRANSFERLAB_WORDNET_DIR" in done.stderr


def without_wordnet(tmp_path: Path) -> dict[str, str]:
    """This environment with every place transferlab finds WordNet emptied: nltk's data (NLTK_DATA, ~), the database folder."""
    for name in ("home", "nltk_data", "no_wordnet"):
        (tmp_path / name).mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    return {**env, "HOME": str(tmp_path / "home"), "NLTK_DATA": str(tmp_path / "nltk_data"),
            "TRANSFERLAB_WORDNET_DIR": str(tmp_path / "no_wordnet")}


def test_the_real_downloader_unable_to_reach_its_server_gives_the_one_line_error(sandbox, tmp_path):
    """transferlab's own WordNet lookup and nltk's downloader, run by the venv's python, pointed at a closed port."""
    venv = tmp_path / ".venv" / "bin"
    venv.mkdir(parents=True)
    write_script(venv / "python", f'exec "{sys.executable}" "$@"')
    write_script(venv / "pip", ":")
    unreachable = "http://127.0.0.1:9"
    env = {**without_wordnet(tmp_path), "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}", "FAKE_UID": "1000",
           "STATE": str(tmp_path / "state"), "LOG": str(tmp_path / "log"),
           "NLTK_DOWNLOAD_URL": f"{unreachable}/index.xml", "http_proxy": unreachable, "https_proxy": unreachable}
    (tmp_path / "state" / "ensurepip").touch()
    done = subprocess.run(["bash", "tests/setup.sh"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and len(done.stderr.splitlines()) == 1, done.stderr
    assert "the tests need WordNet 3.0" in done.stderr and f"reach {unreachable}/index.xml" in done.stderr
    assert not list((tmp_path / "nltk_data").iterdir())


REFUSE_WORDNET = """
import sys, pytest
from transferlab_wordnet import access
def refuse():
    raise AssertionError("a test that needs no WordNet loaded it")
access.load_wordnet = refuse
sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", "tests/test_tree_policies.py"]))
"""


def test_the_tests_that_need_no_wordnet_pass_without_it(tmp_path):
    """coarsen and split on the synthetic and folder trees, in a fresh process where loading WordNet fails."""
    done = subprocess.run([sys.executable, "-c", REFUSE_WORDNET], cwd=ROOT, env=without_wordnet(tmp_path), capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:]
    passed = int(re.search(r"(\d+) passed", done.stdout).group(1))
    assert passed >= 17 and " skipped" not in done.stdout
