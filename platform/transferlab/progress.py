"""Progress of long work on stderr: rich bars on a terminal; elsewhere (nohup, `mlflow run > log`, CI) plain lines, each
printed and flushed as it happens, so a log shows how far the work is while it runs."""

import contextlib
import sys
import time
from collections.abc import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

LINE_EVERY_S = 30.0  # off a terminal, a step still running prints how far it is at most this often
console = Console(stderr=True)
_shared: list = []  # [the Progress shown now, how many steps use it]: rich shows one live display at a time


def on_terminal() -> bool:
    """Whether stderr is a terminal (bars) rather than a file or pipe (lines); looked up at each use, as stderr may change."""
    return console.is_terminal


def line(text: str) -> None:
    """One plain line on stderr, flushed now (not rich: it would wrap at 80 columns in a file)."""
    print(text, file=sys.stderr, flush=True)


def duration(seconds: float) -> str:
    """Seconds as h:mm:ss."""
    seconds = max(0, round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def eta(done: float, total: float, elapsed: float) -> str:
    """Time left at the pace so far, as h:mm:ss ('?' before anything is done)."""
    return duration(elapsed / done * (total - done)) if done > 0 else "?"


class Step:
    """One piece of work of `total` units (images, steps; None when unknown): a bar on a terminal; off one, a line as it ends
    (and, while it runs, one every LINE_EVERY_S with units done, per second and ETA)."""

    def __init__(self, bars: Progress | None, description: str, total: int | None, unit: str):
        self.bars, self.description, self.total, self.unit = bars, description, total, unit
        self.done_units, self.start = 0, time.perf_counter()
        self.last_line = self.start
        self.task = bars.add_task(description, total=total, result="") if bars is not None else None

    def advance(self, units: int = 1) -> None:
        """Count `units` more done."""
        self.done_units += units
        if self.bars is not None:
            self.bars.advance(self.task, units)
            return
        now = time.perf_counter()
        if now - self.last_line >= LINE_EVERY_S:
            self.last_line = now
            line(f"{self.description}: {self.rate_text(now)}")

    def rate_text(self, now: float) -> str:
        """Units done (of total), per second, and the time left, at time `now`."""
        elapsed = now - self.start
        of = f"/{self.total:,}" if self.total else ""
        text = f"{self.done_units:,}{of} {self.unit}, {self.done_units / max(elapsed, 1e-9):,.0f} {self.unit}/s"
        return text + (f", ETA {eta(self.done_units, self.total, elapsed)}" if self.total else "")

    def finish(self, result: str) -> None:
        """The step's outcome: the bar's last column on a terminal, else its line."""
        if self.bars is not None:
            self.bars.update(self.task, result=result, completed=self.total or 1, total=self.total or 1)
        else:
            line(f"{self.description}: {result}")

    def relabel(self, description: str) -> None:
        """Name what the step does now: the bar's label on a terminal, else a line."""
        self.description = description
        if self.bars is not None:
            self.bars.update(self.task, description=description)
        else:
            line(description)

    def seconds(self) -> float:
        """Seconds since the step began."""
        return time.perf_counter() - self.start


@contextlib.contextmanager
def step(description: str, total: int | None = None, unit: str = "images", *, enabled: bool = True,
         announce: bool = False) -> Iterator[Step]:
    """A Step on the terminal's one shared display (steps nest: a transfer task's feature extraction shows below it), or in
    lines; `announce` prints a line as it begins too (off a terminal), `enabled=False` shows nothing at all."""
    if not enabled:
        yield _Silent(description, total, unit)
        return
    if not on_terminal():
        if announce:
            line(f"{description} ...")
        yield Step(None, description, total, unit)
        return
    if not _shared:
        bars = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        TextColumn("{task.fields[result]}"), console=console)
        bars.start()
        _shared[:] = [bars, 0]
    _shared[1] += 1
    try:
        yield Step(_shared[0], description, total, unit)
    finally:
        _shared[1] -= 1
        if not _shared[1]:
            _shared.pop(0).stop()
            _shared.clear()


class _Silent(Step):
    """A Step that shows nothing (progress turned off)."""

    def __init__(self, description: str, total: int | None, unit: str):
        super().__init__(None, description, total, unit)

    def advance(self, units: int = 1) -> None:
        self.done_units += units

    def finish(self, result: str) -> None:
        pass
