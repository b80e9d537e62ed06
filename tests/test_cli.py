"""The command line: outputs, JSON, and user errors as one line with exit code 2."""

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from transferlab.cli import cli

SOURCE = "synthetic(train=12, val=2, test=2)"


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


def test_plugins_lists_every_kind_with_parameters():
    out = invoke("plugins")
    assert out.exit_code == 0
    assert "images_per_class" in out.output and "synthetic" in out.output and "transferlab_subsets" in out.output
    rows = json.loads(invoke("plugins", "--json").output)
    sig = {(r["kind"], r["name"]): r["signature"] for r in rows}  # a study and a policy may share a name
    assert sig[("policy", "images_per_class")] == "images_per_class(n: int, take: 'exact'|'available' = 'exact')"
    assert sig[("study", "images_per_class")].startswith("images_per_class(fractions: list[float] = [0.38461538461538464, ")
    titles = [line.strip() for line in out.output.splitlines() if line.strip() in {"sources", "policies", "policys", "studies", "studys", "tasks"}]
    assert titles == ["sources", "policies", "tasks", "studies"]


LIGHT_COMMANDS = [["plugins"], ["subset", "--source", SOURCE], ["classes", "--source", SOURCE], ["tree", "--source", SOURCE]]


def test_commands_without_a_network_do_not_import_torch_timm_mlflow_or_matplotlib(tmp_path):
    """What makes them start in well under a second (benchmarks/bench_startup.py times them): checked in a fresh process."""
    script = ("import json, sys\nfrom transferlab.cli import cli\nheavy = {}\n"
              f"for args in {LIGHT_COMMANDS!r}:\n"
              "    cli(args, standalone_mode=False)\n"
              "    heavy[args[0]] = sorted(m for m in ('torch', 'timm', 'mlflow', 'matplotlib', 'nltk') if m in sys.modules)\n"
              "from transferlab_wordnet.class_list import read_wnids\n"
              "assert len(read_wnids('imagenet-1k')) == 1000\n"  # `--classes imagenet-1k` reads timm's table without importing timm
              "heavy['class_list'] = sorted(m for m in ('torch', 'timm') if m in sys.modules)\n"
              "print('HEAVY', json.dumps(heavy))")
    env = os.environ | {"TRANSFERLAB_CACHE": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    heavy = json.loads(done.stdout.rsplit("HEAVY ", 1)[1])
    assert heavy == {"plugins": [], "subset": [], "classes": [], "tree": [], "class_list": []}


@pytest.mark.parametrize("umask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750)])
def test_files_the_platform_writes_have_plain_permissions_under_the_umask(tmp_path, umask, file_mode, dir_mode):
    from transferlab.cache import cache_root

    old = os.umask(umask)
    try:
        saved = invoke("subset", "--source", SOURCE, "--save", str(tmp_path / "m"))
        sheet = invoke("show", SOURCE, "--out", str(tmp_path / "sheet.png"))
    finally:
        os.umask(old)
    assert saved.exit_code == 0 and sheet.exit_code == 0, saved.output + sheet.output
    written = [tmp_path / "m" / "manifest.json", tmp_path / "m" / "manifest.npz", tmp_path / "sheet.png", *(cache_root() / "synthetic").glob("*.npy")]
    assert len(written) > 3 and {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in written} == {p.name: oct(file_mode) for p in written}
    assert oct(stat.S_IMODE((tmp_path / "m").stat().st_mode)) == oct(dir_mode)


def test_subset_prints_counts_and_digest(tmp_path):
    out = invoke("subset", "--source", SOURCE, "--policy", "random_classes(k=5) | images_per_class(n=4)", "--seed", "3", "--save", str(tmp_path / "m"))
    assert out.exit_code == 0, out.output
    data = json.loads(invoke("subset", "--source", SOURCE, "--policy", "random_classes(k=5) | images_per_class(n=4)", "--seed", "3", "--json").output)
    assert data["num_classes"] == 5 and data["num_samples"] == 20
    assert [c["count"] for c in data["classes"]] == [4] * 5
    assert data["digest"] in out.output and "5 classes, 20 training images" in out.output
    assert json.loads((tmp_path / "m" / "manifest.json").read_text())["digest"] == data["digest"]
    other_seed = json.loads(invoke("subset", "--source", SOURCE, "--policy", "random_classes(k=5) | images_per_class(n=4)", "--json").output)
    assert other_seed["digest"] != data["digest"]


@pytest.mark.parametrize("args, message", [
    (["--policy", "images_per_clas(n=3)"], "did you mean 'images_per_class'"),
    (["--policy", "images_per_class(n=3"], "malformed spec"),
    (["--policy", "images_per_class(count=3)"], "has no parameter 'count'"),
    (["--policy", "images_per_class"], "is missing 'n'"),
    (["--policy", "images_per_class(n='many')"], "parameter 'n' expects int"),
    (["--policy", "images_per_class(n=1000)"], "asks for 1000 images per class"),
    (["--source", "synthtic"], "did you mean 'synthetic'"),
])
def test_user_errors_exit_2_without_traceback(args, message):
    if "--source" not in args:
        args = ["--source", SOURCE, *args]
    out = CliRunner().invoke(cli, ["subset", *args])
    assert out.exit_code == 2
    assert message in out.stderr and out.stdout == ""
    assert "Traceback" not in out.output


def test_spec_errors_come_before_any_data_work(monkeypatch):
    from transferlab_sources.synthetic import Synthetic

    monkeypatch.setattr(Synthetic, "build_index", lambda self: pytest.fail("data was touched"))
    out = invoke("subset", "--source", SOURCE, "--policy", "images_per_class(n=1) | nope")
    assert out.exit_code == 2 and "unknown policy 'nope'" in out.stderr


def test_module_and_console_script_both_run():
    module = subprocess.run([sys.executable, "-m", "transferlab", "--help"], capture_output=True, text=True, timeout=60)
    script = subprocess.run([str(Path(sys.executable).with_name("transferlab")), "--version"], capture_output=True, text=True, timeout=60)
    assert module.returncode == 0 and "subset" in module.stdout
    assert script.returncode == 0 and "version" in script.stdout


def test_cache_lists_folders_with_disk_use_and_clears_only_rebuildable_ones():
    from transferlab.cache import cache_dir

    (cache_dir("features") / "f.npy").write_bytes(b"x" * 300_000)
    with open(cache_dir("images") / "sparse.npy", "wb") as f:  # an image cache of which little is decoded yet
        f.truncate(50 * 2**20)
    (cache_dir("checkpoints") / "run.pt").write_bytes(b"y" * 1000)
    out = invoke("cache", "--json")
    assert out.exit_code == 0, out.output
    folders = {f["folder"]: f for f in json.loads(out.output)["folders"]}
    assert (folders["images"]["files"], folders["images"]["bytes"]) == (1, 50 * 2**20) and folders["images"]["disk_bytes"] < 2**20
    assert folders["features"]["files"] == 1 and folders["features"]["disk_bytes"] >= 300_000
    assert "kept" in folders["checkpoints"]["holds"] and "images" in invoke("cache").output
    total = json.loads(out.output)["total"]
    assert total == {key: sum(f[key] for f in folders.values()) for key in ("files", "disk_bytes", "bytes")} and total["files"] >= 3
    [footer] = [line for line in invoke("cache").output.splitlines() if "total" in line]
    assert f"{total['files']} " in footer and f"{total['bytes'] / 2**20:,.1f} MiB" in footer

    refused = invoke("cache", "--clear", "features", "--clear", "checkpoints")  # nothing is deleted when one kind is refused
    assert refused.exit_code == 2 and "cannot clear 'checkpoints': clearable caches are images, features" in refused.output
    assert (cache_dir("features") / "f.npy").exists() and (cache_dir("checkpoints") / "run.pt").exists()

    cleared = invoke("cache", "--clear", "features", "--clear", "images")
    assert cleared.exit_code == 0 and "cleared features: 1 files, 0.3 MiB" in cleared.output
    assert not (cache_dir("features") / "f.npy").exists() and not (cache_dir("images") / "sparse.npy").exists()
    assert (cache_dir("checkpoints") / "run.pt").exists()


def test_cache_clear_refuses_while_a_build_holds_its_lock():
    import fcntl

    from transferlab.cache import cache_dir

    (cache_dir("images") / "a.npy").write_bytes(b"z" * 100)
    with open(cache_dir("images") / "a.npy.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        busy = invoke("cache", "--clear", "images")
    assert busy.exit_code == 2 and "another process is building a.npy" in busy.output
    assert (cache_dir("images") / "a.npy").exists()
    assert invoke("cache", "--clear", "images").exit_code == 0 and not (cache_dir("images") / "a.npy").exists()


def test_seed_accepts_integral_floats_as_mlflow_projects_pass_them():
    whole = json.loads(invoke("subset", "--source", SOURCE, "--policy", "random_classes(k=5)", "--seed", "3", "--json").output)
    as_float = invoke("subset", "--source", SOURCE, "--policy", "random_classes(k=5)", "--seed", "3.0", "--json")
    assert as_float.exit_code == 0, as_float.output
    assert json.loads(as_float.output)["digest"] == whole["digest"]
    for command in ("subset", "pretrain", "run"):
        for bad in ("1.5", "-1", "one"):
            out = invoke(command, "--seed", bad)
            assert out.exit_code == 2 and "is not a whole number >= 0" in out.output, (command, bad, out.output)


def test_an_unreachable_tracking_server_is_one_line_and_exit_2(monkeypatch):
    import socket
    import time

    with socket.socket() as s:  # a loopback port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    uri = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    for args in (["pretrain", "--source", SOURCE], ["transfer", "0" * 32], ["run", "--source", SOURCE]):
        start = time.monotonic()
        out = invoke(*args)
        assert time.monotonic() - start < 30
        assert out.exit_code == 2 and "Traceback" not in out.output, out.output
        assert out.stderr.startswith(f"Error: cannot reach the MLflow tracking store {uri}") and out.stderr.count("\n") == 1
