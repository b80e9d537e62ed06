"""The benchmark suite: every bench's rows measured side by side in one run, one table of ratios with targets, results files."""

import datetime
import json
import os
import platform
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
BENCHES = ("training", "image_cache", "decode", "memmap", "policies", "wordnet", "linear_probe", "study_overhead", "search", "startup")
SLOW_AT_TINY = ("study_overhead",)  # subprocesses of whole `transferlab run`s (about 15 s each on 2 cores): left out of --tiny


def row(bench: str, measure: str, value: float, unit: str, target: str, passed: bool | None) -> dict:
    """One line of the suite's table: what was measured, its value, the target (text) and whether it was met (None: no target)."""
    return {"bench": bench, "measure": measure, "value": float(value), "unit": unit, "target": target, "passed": None if passed is None else bool(passed)}


def machine() -> dict[str, object]:
    """The machine the numbers came from: CPU model, cores usable, RAM, Python, torch and the GPU if any."""
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), platform.processor()) \
        if Path("/proc/cpuinfo").exists() else platform.processor()
    info: dict[str, object] = {"host": socket.gethostname(), "cpu": cpu, "cores_usable": len(os.sched_getaffinity(0)),
                               "cores_visible": os.cpu_count(), "ram_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
                               "load_1min": round(os.getloadavg()[0], 2), "python": platform.python_version(), "system": platform.platform()}
    import torch

    info["torch"] = torch.__version__
    info["gpu"] = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())) if torch.cuda.is_available() else "none"
    return info


def run_suite(tiny: bool = False, only: tuple[str, ...] = BENCHES, write: Path | None = RESULTS, note: str = "") -> dict:
    """Run the benches named in `only` in this process (skipping SLOW_AT_TINY when tiny), each guarded: a failing bench
    gives one FAIL row with its error. Returns {"machine", "rows", "seconds", ...}; writes <date>-<host>.md and .json to `write`."""
    sys.path[:0] = [str(ROOT / "platform"), str(ROOT / "plugins"), str(ROOT)]
    began, rows, timings = time.perf_counter(), [], {}
    for name in only:
        if tiny and name in SLOW_AT_TINY:
            rows.append(row(name, "not run at --tiny (whole `transferlab run` subprocesses)", float("nan"), "", "", None))
            continue
        start = time.perf_counter()
        try:
            rows += bench_rows(name)(tiny)
        except Exception as exc:  # one broken bench must not hide the others' numbers
            traceback.print_exc()
            rows.append(row(name, f"error: {type(exc).__name__}: {str(exc)[:200]}", float("nan"), "", "runs", False))
        timings[name] = round(time.perf_counter() - start, 1)
        print(f"[suite] {name}: {timings[name]} s", file=sys.stderr, flush=True)
    result = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "tiny": tiny, "note": note, "machine": machine(),
              "rows": rows, "bench_seconds": timings, "seconds": round(time.perf_counter() - began, 1)}
    if write is not None:
        stem = f"{datetime.date.today().isoformat()}-{result['machine']['host']}" + ("-tiny" if tiny else "")
        write.mkdir(parents=True, exist_ok=True)
        (write / f"{stem}.json").write_text(json.dumps(result, indent=1, allow_nan=True) + "\n")
        (write / f"{stem}.md").write_text(markdown(result))
        result["files"] = [str(write / f"{stem}.md"), str(write / f"{stem}.json")]
    return result


def bench_rows(name: str) -> Callable[[bool], list[dict]]:
    """The `rows(tiny)` function of benchmarks/bench_<name>.py."""
    import importlib

    return importlib.import_module(f"benchmarks.bench_{name}").rows


def verdict(passed: bool | None) -> str:
    """PASS, FAIL or '' (no target)."""
    return "" if passed is None else "PASS" if passed else "FAIL"


def markdown(result: dict) -> str:
    """The results as a Markdown page: the machine, then one table of every row."""
    m = result["machine"]
    lines = [f"# Benchmark suite, {result['date']}" + (" (--tiny sizes)" if result["tiny"] else ""), "",
             f"Machine: {m['host']}: {m['cpu']}, {m['cores_usable']} usable of {m['cores_visible']} visible cores, {m['ram_gib']} GiB RAM, "
             f"GPU: {m['gpu']}; Python {m['python']}, torch {m['torch']}; load {m['load_1min']} at the end; {m['system']}.",
             *(["", f"Note: {result['note']}"] if result["note"] else []), "",
             f"Whole suite: {result['seconds']} s (per bench: " + ", ".join(f"{k} {v} s" for k, v in result["bench_seconds"].items()) + ").", "",
             "| bench | measure | value | target | result |", "|---|---|---:|---|---|"]
    for r in result["rows"]:
        cells = (r["bench"], r["measure"], f"{format_value(r['value'])} {r['unit']}", r["target"], verdict(r["passed"]))
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines) + "\n"


def format_value(value: float) -> str:
    """A number as the table shows it: 3 significant digits below 1000, thousands separators above, '—' for NaN."""
    if value != value:
        return "—"
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"


def print_table(result: dict) -> None:
    """The suite's one table on the terminal."""
    from rich.console import Console
    from rich.table import Table

    m = result["machine"]
    table = Table("bench", "measure", "value", "target", "result",
                  title=f"transferlab benchmarks{' (--tiny)' if result['tiny'] else ''}: {m['cpu']}, {m['cores_usable']} cores, "
                        f"{m['ram_gib']} GiB, GPU {m['gpu']}, torch {m['torch']}; {result['seconds']} s")
    for r in result["rows"]:
        table.add_row(r["bench"], r["measure"], f"{format_value(r['value'])} {r['unit']}", r["target"], verdict(r["passed"]))
    Console(width=160).print(table)


def in_subprocess(script: str, args: list[str]) -> list[dict]:
    """Rows a bench prints as JSON (its `--json` flag) when run alone in a fresh process (for measures of the whole process, as peak RSS)."""
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(ROOT / "platform"), str(ROOT / "plugins"), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args, "--json"], capture_output=True, text=True, env=env)
    if out.returncode not in (0, 1):
        raise RuntimeError(f"{script} exited {out.returncode}: {out.stderr.strip()[-500:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])
