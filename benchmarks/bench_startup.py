"""Benchmark: start-up of the commands that need no network (`plugins`, `subset`, `classes`, `tree` on synthetic).

Each command runs once to warm the cache (the synthetic index), then 5 times in a fresh `python -m transferlab`; the
median wall time (and CPU time, which other load on the machine inflates less) is printed, with the import-time breakdown
of `python -X importtime` (self time summed per top-level package, largest first). Target: median < 1 s each.
"""

import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
SOURCE = "synthetic"
COMMANDS = {"plugins": ["plugins"], "subset": ["subset", "--source", SOURCE], "classes": ["classes", "--source", SOURCE],
            "tree": ["tree", "--source", SOURCE]}
REPEATS = 5
TARGET_S = 1.0
TOP = 8  # packages shown in the import breakdown


def environment(folder: Path) -> dict[str, str]:
    """A fresh cache in `folder`, this tree's code."""
    return os.environ | {"TRANSFERLAB_CACHE": str(folder / "cache"), "PYTHONPATH": f"{ROOT / 'platform'}:{ROOT / 'plugins'}"}


def timed(args: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall s, CPU s) of one `python -m transferlab ...`."""
    before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    subprocess.run([sys.executable, "-m", "transferlab", *args], env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def import_breakdown(args: list[str], env: dict[str, str]) -> tuple[float, Counter]:
    """(total import s, self import s by top-level package) from `python -X importtime -m transferlab ...`."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "transferlab", *args], env=env, check=True,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    by_package, total = Counter(), 0.0
    for line in done.stderr.splitlines():  # "import time:  self [us] | cumulative | imported package"
        if not line.startswith("import time:") or "imported package" in line:
            continue
        own, cumulative, name = line.removeprefix("import time:").split("|")
        by_package[name.strip().split(".")[0]] += int(own) / 1e6
        if not name.startswith("  "):  # imported by the command itself: its cumulative time holds what it imported
            total += int(cumulative) / 1e6
    return total, by_package


def measure(commands: dict[str, list[str]] = COMMANDS, repeats: int = REPEATS, breakdown: bool = True) -> dict:
    """Per command: median wall and CPU seconds of `repeats` fresh starts, and (if `breakdown`) the import breakdown."""
    out = {}
    with tempfile.TemporaryDirectory() as folder:
        env = environment(Path(folder))
        for name, args in commands.items():
            timed(args, env)  # warm: the synthetic index is built once, as for any user after the first call
            runs = [timed(args, env) for _ in range(repeats)]
            wall, cpu = statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)
            out[name] = (wall, cpu, *(import_breakdown(args, env) if breakdown else (float("nan"), Counter())))
    return out


def rows(tiny: bool = False) -> list[dict]:
    """The suite's rows: median start-up per command (at --tiny two commands, one start each)."""
    from benchmarks.suite import row

    m = measure({k: COMMANDS[k] for k in ("plugins", "subset")} if tiny else COMMANDS, 1 if tiny else REPEATS, breakdown=False)
    return [row("startup", f"`transferlab {' '.join(COMMANDS[name])}` start-up (median wall)", wall, "s", f"< {TARGET_S} s", wall < TARGET_S)
            for name, (wall, _, _, _) in m.items()]


def main() -> None:
    table = Table("command", "median wall s", "median CPU s", "import s", f"largest imports (self s, top {TOP})",
                  title=f"start-up, median of {REPEATS} (`python -m transferlab ...`, {os.cpu_count()} CPUs visible)")
    worst = 0.0
    for name, (wall, cpu, total, packages) in measure().items():
        top = ", ".join(f"{p} {s:.2f}" for p, s in packages.most_common(TOP))
        table.add_row(name, f"{wall:.2f}", f"{cpu:.2f}", f"{total:.2f}", top)
        worst = max(worst, wall)
    Console(width=200).print(table)
    heavy = [p for p in ("torch", "timm", "mlflow", "matplotlib") if p in packages]
    print(f"RESULT slowest median start-up {worst:.2f} s (target < {TARGET_S} s): {'PASS' if worst < TARGET_S else 'FAIL'}"
          + (f"; the last command imported {', '.join(heavy)}" if heavy else ""))


if __name__ == "__main__":
    main()
