"""Benchmark: wall time of the default main job, `mlflow run . --env-manager local`, from a cold cache; then of the reuse.

Runs in a temporary folder with its own tracking store and cache, so the synthetic images and the image cache are built
as on a fresh machine. Prints the total, the MLflow runs' own durations (pretraining, each transfer task), and the time
of a second identical request, which reuses the finished runs.
"""

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mlflow import MlflowClient
from rich.console import Console
from rich.table import Table

from transferlab.devices import device_name, resolve_device

ROOT = Path(__file__).resolve().parents[1]
BUDGET_S = 180  # the limit on 2 CPU cores


def mlflow_run(folder: Path, env: dict[str, str]) -> float:
    """Seconds of one `mlflow run` of the default entry point."""
    start = time.perf_counter()
    subprocess.run([str(Path(sys.executable).with_name("mlflow")), "run", str(ROOT), "--env-manager", "local"], cwd=folder, env=env,
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        uri = f"sqlite:///{folder / 'mlflow.db'}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        env |= {"MLFLOW_TRACKING_URI": uri, "TRANSFERLAB_CACHE": str(folder / "cache"), "MLFLOW_DISABLE_TELEMETRY": "true",
                "PATH": f"{Path(sys.executable).parent}:{env['PATH']}"}
        cold = mlflow_run(folder, env)
        warm = mlflow_run(folder, env)
        client = MlflowClient(uri)
        runs = client.search_runs(["0"], order_by=["attributes.start_time ASC"])

    table = Table(title=f"default main job on {device_name(resolve_device('auto'))}, {os.cpu_count()} CPU cores", title_justify="left")
    table.add_column("what")
    table.add_column("seconds", justify="right")
    table.add_row(f"mlflow run . (cold cache; budget {BUDGET_S} s)", f"{cold:.1f}")
    for run in runs:
        kind = run.data.tags.get("transferlab.kind", "?")
        if kind in ("pretrain", "transfer") and run.info.end_time:
            table.add_row(f"  {kind} run: {run.info.run_name}", f"{(run.info.end_time - run.info.start_time) / 1000:.1f}")
    table.add_row("mlflow run . again (finished runs reused)", f"{warm:.1f}")
    Console().print(table)


if __name__ == "__main__":
    main()
