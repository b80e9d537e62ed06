"""Benchmark: a study of N tiny cells ÷ N separate `transferlab run` calls of the same cells (wall time, one run each).

Both sides start from an empty tracking store and cache in their own temporary folder, train the same tiny cells
(pretraining + kNN on the same target) and pay the same decoding; the study runs them in one process, sharing imports,
the source's index, the image cache and the target's features. Target: ratio <= 1.0. Prints a table and PASS/FAIL.
"""

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
SOURCE = "synthetic(branching=[2, 2, 2], train=20, val=5, test=5)"
TARGET = "synthetic(branching=[2, 2, 2], part='heldout', train=20, val=5, test=5)"
BACKBONE = "timm(model='resnet10t')"
TRAINING = "train(steps=4, batch_size=16, resolution=16)"
STUDY = "fixed_budget"
TARGET_RATIO = 1.0


def environment(folder: Path) -> dict[str, str]:
    """A fresh store and cache in `folder`, this tree's code."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    return env | {"MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}", "TRANSFERLAB_CACHE": str(folder / "cache"),
                  "PYTHONPATH": f"{ROOT / 'platform'}:{ROOT / 'plugins'}", "MLFLOW_DISABLE_TELEMETRY": "true"}


def timed(args: list[str], env: dict[str, str], cwd: Path) -> float:
    """Seconds of one `python -m transferlab ...`."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "transferlab", *args], env=env, cwd=cwd, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def measure() -> dict:
    """Wall seconds of one study and of its cells as separate runs."""
    sys.path[:0] = [str(ROOT / "platform"), str(ROOT / "plugins")]
    from transferlab.study_runs import StudyPlan

    plan = StudyPlan.parse(STUDY, SOURCE, (TARGET,), BACKBONE, TRAINING, 1, "knn")
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        study_s = timed(["study", STUDY, "--source", SOURCE, "--target", TARGET, "--backbone", BACKBONE, "--training", TRAINING,
                         "--seeds", "1", "--tasks", "knn", "--out", str(Path(a) / "report")], environment(Path(a)), Path(a))
        separate_s = sum(timed(["run", "--source", SOURCE, "--policy", job.cell.policy, "--backbone", BACKBONE,
                                "--training", job.pretrain.training.spec(), "--seed", str(job.seed), "--target", TARGET, "--tasks", "knn"],
                               environment(Path(b)), Path(b)) for job in plan.jobs)
    return {"cells": len(plan.jobs), "study_s": study_s, "separate_s": separate_s, "ratio": study_s / separate_s}


def rows(tiny: bool = False) -> list[dict]:
    """The suite's row: study ÷ separate runs (the same at --tiny, where the suite leaves it out: about 2 minutes on 2 cores)."""
    from benchmarks.suite import row

    m = measure()
    return [row("study_overhead", f"one `transferlab study` of {m['cells']} tiny cells ÷ separate `transferlab run`s", m["ratio"], "×",
                f"≤ {TARGET_RATIO}", m["ratio"] <= TARGET_RATIO)]


def main() -> None:
    m = measure()
    plan_jobs, study_s, separate_s, ratio = range(m["cells"]), m["study_s"], m["separate_s"], m["ratio"]
    table = Table("what", "cells", "wall s", title=f"study overhead: {STUDY} on a tiny synthetic source")
    table.add_row("one `transferlab study`", str(len(plan_jobs)), f"{study_s:.1f}")
    table.add_row("separate `transferlab run` calls", str(len(plan_jobs)), f"{separate_s:.1f}")
    table.add_row("ratio study ÷ separate", "", f"{ratio:.2f}")
    Console().print(table)
    print(f"RESULT study/separate ratio {ratio:.2f} (target <= {TARGET_RATIO}): {'PASS' if ratio <= TARGET_RATIO else 'FAIL'}")


if __name__ == "__main__":
    main()
