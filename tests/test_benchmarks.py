"""The benchmark suite at tiny sizes: every bench still runs, and the table, its rows and the results files come out."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_suite_runs_every_bench_at_tiny_sizes_and_writes_one_table_with_numeric_ratios(tmp_path):
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(ROOT / "platform"), str(ROOT / "plugins"), str(ROOT)])}
    out = subprocess.run([sys.executable, "-m", "benchmarks", "--tiny", "--out", str(tmp_path)], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode in (0, 1), out.stderr[-3000:]  # 1: a target missed at tiny sizes on a loaded machine, still a table
    assert "transferlab benchmarks (--tiny)" in out.stdout
    [md] = tmp_path.glob("*-tiny.md")
    [js] = tmp_path.glob("*-tiny.json")
    result = json.loads(js.read_text())
    assert result["tiny"] and result["machine"]["cores_usable"] >= 1 and result["machine"]["torch"] and result["machine"]["ram_gib"] > 0
    rows = result["rows"]
    errors = [r["measure"] for r in rows if r["measure"].startswith("error")]
    assert not errors, errors
    benches = {r["bench"] for r in rows}
    assert benches == {"training", "image_cache", "decode", "memmap", "policies", "wordnet", "linear_probe", "study_overhead", "search", "startup"}
    measured = [r for r in rows if r["bench"] != "study_overhead"]
    assert all(isinstance(r["value"], float) and math.isfinite(r["value"]) for r in measured)
    ratios = [r for r in rows if r["unit"] == "×" and r["target"]]
    assert {r["bench"] for r in ratios} >= {"training", "image_cache", "decode", "search"} and all(r["value"] > 0 for r in ratios)
    assert all(r["passed"] in (True, False) for r in rows if r["target"])
    text = md.read_text()
    assert "| bench | measure | value | target | result |" in text and "Machine:" in text
    assert text.count("\n| ") >= len(rows) + 1


def test_the_gpu_check_is_valid_bash_and_covers_this_issues_cuda_paths():
    script = ROOT / "benchmarks" / "gpu_check.sh"
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    text = script.read_text()
    assert "# ---- ddp (issue 14, torchrun) -- begin" in text and "--nproc_per_node" in text and "(pretrain --source" in text
    assert "nvjpeg_check" in text and "max_memory_allocated" in text and "BUDGET=${GPU_CHECK_BUDGET:-340}" in text
