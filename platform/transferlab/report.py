"""Study reports: per-seed scores to CSVs of mean, std and 95% intervals, a paper-style Markdown table and PNG figures."""

import math
import re
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import NullFormatter, NullLocator
from scipy import stats

from .cache import atomic_path
from .errors import DataError, SpecError

COLUMNS = ("label", "group", "role", "value", "seed", "metric", "score")
ROLES = ("full", "cell", "floor")  # also the order of rows: the full source first, the random-init floor last
SOURCE_METRIC = "pretrain.val_top1"
FULL, FLOOR = "full source", "random init"  # legend labels of the two reference rows
DPI = 150
LENGTHS = {"steps": "in optimizer steps (every cell trains the same number of steps)",
           "epochs": "in epochs (smaller subsets train fewer steps)"}
DODGE = 0.012  # sideways shift between series at the same axis value: decades on a log axis, else a fraction of the span
TICK_GAP = 0.08  # least distance between labelled axis values, as a fraction of the axis: closer ones would overlap

Row = tuple[str, str, str, float]  # (role, group, label, value): one row of the table, one point of a figure


def results_frame(records: list[dict]) -> pd.DataFrame:
    """The long results frame (one row per cell, seed and metric) from per-cell records {label, group, role, value, seed,
    metrics: {name: score}}; a score of None stays a blank (NaN), never a number."""
    rows = []
    for record in records:
        for metric, score in record.get("metrics", {}).items():
            rows.append({"label": record["label"], "group": record.get("group", ""), "role": record.get("role", "cell"),
                         "value": np.nan if record.get("value") is None else float(record["value"]), "seed": int(record["seed"]),
                         "metric": metric, "score": np.nan if score is None else float(score)})
    return pd.DataFrame(rows, columns=list(COLUMNS))


def write_report(results: pd.DataFrame, meta: dict, out: Path) -> list[Path]:
    """Write `<study>-results.csv`, `<study>-scores.csv`, `<study>.md`, `<study>.png` and `<study>-relative.png` into
    `out` and return their paths."""
    report = build(results, meta)
    out = Path(out)
    stem = file_stem(meta["study"])
    paths = [out / f"{stem}-results.csv", out / f"{stem}-scores.csv", out / f"{stem}.md", out / f"{stem}.png", out / f"{stem}-relative.png"]
    write_text(paths[0], report.summary.to_csv(index=False))
    write_text(paths[1], report.scores.to_csv(index=False))
    write_text(paths[2], report.markdown(paths[0].name, paths[1].name, paths[3].name, paths[4].name))
    save(report.figure(), paths[3])
    save(report.relative_figure(), paths[4])
    return paths


def build(results: pd.DataFrame, meta: dict) -> "Report":
    """The checked scores of a study, summarized and ordered, ready to be written."""
    scores = clean(results, meta)
    rows = ordered_rows(scores)
    metrics = metric_order(scores)
    place = {(r[1], r[2]): i for i, r in enumerate(rows)}
    scores = scores.assign(_row=[place[k] for k in zip(scores["group"], scores["label"])], _metric=scores["metric"].map(metrics.index))
    scores = scores.sort_values(["_row", "_metric", "seed"], kind="stable").drop(columns=["_row", "_metric"]).reset_index(drop=True)
    return Report(meta, rows, scores, summarize(scores, rows, metrics), headline(metrics))


# ---- the numbers --------------------------------------------------------------------------------------------------

def clean(results: pd.DataFrame, meta: dict) -> pd.DataFrame:
    """The finite scores of `results` in the documented columns, after checking that frame and meta make one study."""
    if not isinstance(meta, dict) or not isinstance(meta.get("study"), str) or not meta["study"].strip():
        raise SpecError("a report needs meta['study'], the study's name")
    if not isinstance(results, pd.DataFrame):
        raise SpecError(f"report results must be a pandas DataFrame, got {type(results).__name__}")
    if missing := [c for c in COLUMNS if c not in results.columns]:
        raise SpecError(f"report results lack the column(s) {', '.join(missing)} (expected {', '.join(COLUMNS)})")
    frame = results[list(COLUMNS)].copy()
    frame["group"] = frame["group"].fillna("").astype(str)
    frame["label"] = frame["label"].astype(str)
    frame["value"] = pd.to_numeric(frame["value"], errors="coerce")
    frame["score"] = pd.to_numeric(frame["score"], errors="coerce")
    if bad := sorted(set(frame["role"]) - set(ROLES)):
        raise DataError(f"study {meta['study']}: unknown row role(s) {', '.join(map(str, bad))} (expected {', '.join(ROLES)})")
    if np.isinf(frame["score"]).any():
        raise DataError(f"study {meta['study']}: an infinite score: {describe_row(frame[np.isinf(frame['score'])].iloc[0])}")
    frame = frame[frame["score"].notna()]  # a missing score is a blank, never a zero
    if frame.empty:
        raise DataError(f"study {meta['study']} has no scores to report")
    twice = frame.duplicated(["group", "label", "seed", "metric"])
    if twice.any():
        raise DataError(f"study {meta['study']}: two scores for {describe_row(frame[twice].iloc[0])}")
    kinds = frame.groupby(["group", "label"], sort=False)[["role", "value"]].nunique(dropna=False)
    if (kinds > 1).any(axis=None):
        group, label = kinds[(kinds > 1).any(axis=1)].index[0]
        raise DataError(f"study {meta['study']}: row {label!r} (group {group!r}) has more than one role or axis value")
    return frame.reset_index(drop=True)


def describe_row(row: pd.Series) -> str:
    """One score's place, for messages: metric, row, group and seed."""
    return f"{row['metric']} of row {row['label']!r} (group {row['group']!r}), seed {row['seed']}"


def ordered_rows(scores: pd.DataFrame) -> list[Row]:
    """The table's rows: the full source, then the cells by group (in order of appearance) from the largest axis value
    to the smallest, like the paper's tables (full → 500 → 250 ...), then the random-init floor."""
    unique = scores.drop_duplicates(["group", "label"])
    groups = list(dict.fromkeys(unique["group"]))
    key = {r: i for i, r in enumerate(ROLES)}
    rows = [(r.role, r.group, r.label, r.value) for r in unique.itertuples()]
    return sorted(rows, key=lambda r: (key[r[0]], groups.index(r[1]), -r[3] if not math.isnan(r[3]) else math.inf))


def metric_order(scores: pd.DataFrame) -> list[str]:
    """The source's own val top-1, other pretraining metrics, then transfer metrics in order of appearance, then the rest."""
    names = list(dict.fromkeys(scores["metric"]))
    rank = {SOURCE_METRIC: 0}
    return sorted(names, key=lambda m: rank.get(m, 1 if m.startswith("pretrain.") else 2 if m.startswith("transfer.") else 3))


def headline(metrics: list[str]) -> list[str]:
    """The metrics a reader compares: the source's val top-1 and each transfer task and target's test top-1 (its test
    metrics other than intervals where it records no test_top1, e.g. few-shot accuracy)."""
    transfer = [m for m in metrics if m.startswith("transfer.") and m.count(".") >= 3]
    with_top1 = {m.rsplit(".", 1)[0] for m in transfer if m.endswith(".test_top1")}
    chosen = [m for m in transfer if m.endswith(".test_top1") or (m.rsplit(".", 1)[0] not in with_top1 and
                                                                   m.rsplit(".", 1)[1].startswith("test_") and not m.endswith("_ci95"))]
    return ([SOURCE_METRIC] if SOURCE_METRIC in metrics else []) + chosen


def interval(scores: np.ndarray) -> tuple[int, float, float, float, float]:
    """n, mean, sample std and the Student t 95% interval of the mean over seeds (std and interval NaN for one seed)."""
    n, mean = len(scores), float(np.mean(scores))
    if n < 2:
        return n, mean, math.nan, math.nan, math.nan
    std = float(np.std(scores, ddof=1))
    half = float(stats.t.ppf(0.975, n - 1)) * std / math.sqrt(n)
    return n, mean, std, mean - half, mean + half


def summarize(scores: pd.DataFrame, rows: list[Row], metrics: list[str]) -> pd.DataFrame:
    """One line per row and metric it has scores for: role, value, n, mean, std and the 95% interval, in table order."""
    by_cell = {key: part["score"].to_numpy() for key, part in scores.groupby(["group", "label", "metric"], sort=False)}
    lines = []
    for role, group, label, value in rows:
        for metric in metrics:
            if (group, label, metric) in by_cell:
                n, mean, std, low, high = interval(by_cell[group, label, metric])
                lines.append((group, label, role, value, metric, n, mean, std, low, high))
    return pd.DataFrame(lines, columns=["group", "label", "role", "value", "metric", "n", "mean", "std", "ci95_low", "ci95_high"])


# ---- the report ---------------------------------------------------------------------------------------------------

class Report:
    """A study's summary with what its table and figures need: rows, headline metrics, references and names."""

    def __init__(self, meta: dict, rows: list[Row], scores: pd.DataFrame, summary: pd.DataFrame, metrics: list[str]):
        self.meta, self.rows, self.scores, self.summary, self.metrics = meta, rows, scores, summary, metrics
        numbers = summary[["n", "mean", "std", "ci95_low", "ci95_high"]].itertuples(index=False)
        self.stats = {(g, lab, m): s for g, lab, m, s in zip(summary["group"], summary["label"], summary["metric"], numbers)}
        self.groups = list(dict.fromkeys(r[1] for r in rows if r[0] == "cell"))
        self.cells = [r for r in rows if r[0] == "cell"]
        self.full = next((r for r in rows if r[0] == "full"), None)
        self.floor = next((r for r in rows if r[0] == "floor"), None)
        self.numeric = bool(self.cells) and all(not math.isnan(r[3]) for r in self.cells)  # else a categorical study: bars
        self.log = bool(meta.get("log_axis", True)) and self.numeric and all(r[3] > 0 for r in self.cells)
        self.primary = {g: self.primary_metric(g) for g in self.groups}
        # rows outside the groups (full, floor) show the drop of the first group's metric, or the first transfer metric
        self.fallback = next((m for m in self.primary.values() if m), next((m for m in metrics if m != SOURCE_METRIC), None))
        self.drops = [kind for kind, has in (("source", SOURCE_METRIC in metrics), ("transfer", self.fallback))
                      if has and self.full is not None]  # the Δ-vs-full columns the table can fill
        self.shared = len({r[3] for r in self.cells}) < len(self.cells)  # groups meet at an axis value: their points need dodging
        counts = [s.n for s in self.stats.values()]
        seeds = meta.get("seeds")
        self.seeds = len(seeds) if isinstance(seeds, (list, tuple)) else int(seeds) if seeds is not None else max(counts)

    def error_note(self, what: str = "") -> str:
        """What the error bars are, as the legend says it: over how many seeds, and that one seed gives none."""
        counts = sorted({s.n for s in self.stats.values()})
        if counts[-1] == 1:
            return "one seed: no error bars"
        seeds = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"
        return f"error bars: ± one std over {seeds} seeds{what} (95% intervals: see the tables)" + ("; none for rows with one seed" * (counts[0] == 1))

    def get(self, row: Row | None, metric: str):
        """The row's (n, mean, std, ci95_low, ci95_high) for `metric`, or None where it has no score."""
        return None if row is None else self.stats.get((row[1], row[2], metric))

    def primary_metric(self, group: str) -> str | None:
        """The transfer metric whose drop the table and the relative figure show for `group`: the first headline transfer
        metric its cells have (groups may be measured on different targets, e.g. different held-out halves)."""
        candidates = [m for m in self.metrics if m != SOURCE_METRIC]
        return next((m for m in candidates if any(self.get(r, m) for r in self.cells if r[1] == group)), None)

    # -- Markdown ------------------------------------------------------------------------------------------------------

    def markdown(self, results: str, scores: str, figure: str, relative: str) -> str:
        """The report as Markdown: a header block, the table of mean ± std with notes, the table of 95% intervals; the
        arguments are the names of the other files, which it links."""
        meta = self.meta
        length = meta.get("length")
        spread_rows = any(s.n > 1 for s in self.stats.values())
        lines = [f"# Study `{meta['study']}`", "",
                 f"- **Source:** {code(meta.get('source'))}",
                 f"- **Targets:** {code(meta.get('targets'))}",
                 f"- **Tasks:** {code(meta.get('tasks'))}",
                 f"- **Backbone:** {code(meta.get('backbone'))}",
                 f"- **Training:** {code(meta.get('training'))}; length held fixed across cells "
                 f"{LENGTHS.get(length, f'in {length}') if length else '(not recorded)'}",
                 f"- **Seeds:** {self.seeds}; each entry is the mean ± sample std over seeds"
                 + ("; the second table gives its Student t 95% interval" if spread_rows else "")
                 + ("; with one seed there is no std or interval (left blank)" if any(s.n == 1 for s in self.stats.values()) else ""),
                 f"- **How to read:** rows pretrain on a part of the source ({meta.get('axis') or 'the study axis'}), "
                 "columns are top-1 accuracy in %: the source's own held-out val top-1, then each transfer task → target. "
                 "The Δ columns are differences to the full-source row in points (negative: below it); the paper's finding is "
                 "that transfer falls less than source accuracy (Δ transfer closer to 0 than Δ source).", "",
                 f"![{meta['study']}: accuracy against {meta.get('axis') or 'the axis'}]({figure})", "",
                 f"![{meta['study']}: transfer and source accuracy relative to the full source]({relative})", ""]
        header, notes = self.columns()
        notes.append(f"every recorded metric and the intervals to full precision: [{results}]({results}); "
                     f"each seed's score: [{scores}]({scores})")
        text = 1 + (len(self.groups) > 1)  # label and group columns read left to right; numbers are right-aligned
        lines += ["## Accuracy (%), mean ± std over seeds", "", *table(header, [self.table_row(r) for r in self.rows], text), ""]
        lines += [f"- {n}" for n in notes] + ([""] if notes else [])
        if spread_rows:
            lines += ["## 95% intervals over seeds (Student t)", "",
                      *table(header[:len(header) - len(self.drops)], [self.table_row(r, intervals=True) for r in self.rows], text), ""]
        return "\n".join(lines)

    def columns(self) -> tuple[list[str], list[str]]:
        """The table's header and the notes that explain it."""
        header = ["row"] + (["group"] if len(self.groups) > 1 else []) + ([self.meta.get("axis") or "value"] if self.numeric else [])
        header += [short(m) for m in self.metrics]
        primaries = sorted({m for m in self.primary.values() if m} or ({self.fallback} - {None}), key=self.metrics.index)
        header += [f"Δ {short(SOURCE_METRIC)} vs full"] if "source" in self.drops else []
        header += [f"Δ {short(primaries[0]) if len(primaries) == 1 else 'transfer'} vs full"] if "transfer" in self.drops else []
        notes = [f"`{short(m)}` is the metric `{m}`" for m in self.metrics]
        if len(primaries) > 1:
            notes.append("Δ transfer is, per group: " + "; ".join(f"{g or '(none)'}: {short(m)}" for g, m in self.primary.items() if m))
        if self.full is None:
            notes.append("no full-source row: no differences to it")
        if any(s.n < self.seeds for s in self.stats.values()):
            notes.append(f"(n=k): only k of the {self.seeds} seeds have this score")
        return header, notes

    def table_row(self, row: Row, intervals: bool = False) -> list[str]:
        """One row of the table: label, group, axis value, each metric's mean ± std (or interval), the drops vs full."""
        role, group, label, value = row
        cells = [label] + ([group] if len(self.groups) > 1 else []) + ([number(value)] if self.numeric else [])
        for metric in self.metrics:
            s = self.get(row, metric)
            cells.append(span(s) if intervals else spread(s, self.seeds))
        if not intervals:
            transfer = self.primary.get(group) or self.fallback
            cells += [self.drop(row, SOURCE_METRIC if kind == "source" else transfer) for kind in self.drops]
        return cells

    def drop(self, row: Row, metric: str | None) -> str:
        """The row's mean minus the full row's, in points ('ref' on the full row itself, blank where either is missing)."""
        if row[0] == "full":
            return "ref" if metric and self.get(row, metric) else ""
        s, full = (self.get(row, metric), self.get(self.full, metric)) if metric else (None, None)
        return f"{s.mean - full.mean:+.1f}" if s and full else ""

    # -- figures ---------------------------------------------------------------------------------------------------------

    def title(self) -> str:
        """The figures' title: study and source."""
        return "\n".join(textwrap.wrap(f"{self.meta['study']}, source {clip(str(self.meta.get('source') or 'not recorded'), 160)}", 90))

    def figure(self) -> Figure:
        """One panel per headline metric, the source's own val top-1 first: the metric against the axis, a line (or bars)
        per group with ± std over seeds, the full source dotted and the random-init floor dashed."""
        panels = self.metrics
        ncols = len(panels) if len(panels) <= 3 else 2 if len(panels) == 4 else 3
        nrows = math.ceil(len(panels) / ncols)
        width = 4.6 if self.numeric else max(4.6, 0.55 * len(self.cells) + 1.5)
        fig = Figure(figsize=(width * ncols, 3.9 * nrows + 1.0), layout="constrained", dpi=DPI)
        axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
        for ax, metric in zip(axes, panels):
            (self.lines if self.numeric else self.bars)(ax, metric)
            for ref, style in ((self.full, dict(ls=":", color="black", lw=1.5, label=FULL)),
                               (self.floor, dict(ls="--", color="grey", lw=1.3, label=FLOOR))):
                if s := self.get(ref, metric):
                    ax.axhline(s.mean, **style)
            ax.set_title("\n".join(textwrap.wrap(short(metric), 44)), fontsize=10)
            ax.set_ylabel(y_label(metric))
            ax.grid(alpha=0.3)
            ax.set_axisbelow(True)
            clamp(ax, -1.0, 101.0)
        for ax in axes[len(panels):]:
            ax.set_visible(False)
        legend(fig, axes[:len(panels)], self.error_note())
        fig.suptitle(self.title(), fontsize=12)
        return fig

    def lines(self, ax, metric: str) -> None:
        """The cells of each group as a line against the axis, with ± std over seeds."""
        for i, group in enumerate(self.groups):
            points = sorted((r[3], s) for r in self.cells if r[1] == group and (s := self.get(r, metric)))
            if points:
                x = self.dodge([p[0] for p in points], i, len(self.groups)) if self.shared else [p[0] for p in points]
                ax.errorbar(x, [p[1].mean for p in points], yerr=error_bars([p[1] for p in points]), marker="o", ms=5,
                            capsize=3, lw=1.6, color=f"C{i}", label=series(group))
        self.axis(ax)

    def dodge(self, x: list[float], k: int, total: int) -> list[float]:
        """Series k of `total` shifted a little sideways, so that error bars at the same axis value do not hide each other."""
        shift = (k - (total - 1) / 2) * DODGE
        if self.log:
            return [v * 10 ** shift for v in x]
        values = [r[3] for r in self.cells]
        return [v + shift * ((max(values) - min(values)) or 1.0) for v in x]

    def bars(self, ax, metric: str) -> None:
        """The cells as bars coloured by group, with ± std over seeds (a study whose cells have no axis value)."""
        for x, row in enumerate(self.cells):
            if s := self.get(row, metric):
                ax.bar(x, s.mean, yerr=error_bars([s]), capsize=3, width=0.7, color=f"C{self.groups.index(row[1])}",
                       label=series(row[1]))
        self.categories(ax)

    def categories(self, ax) -> None:
        """Cell labels under the bars, wrapped, slanted when there are many."""
        ax.set_xticks(range(len(self.cells)), ["\n".join(textwrap.wrap(r[2], 14)) for r in self.cells],
                      rotation=30 if len(self.cells) > 4 else 0, ha="right" if len(self.cells) > 4 else "center", fontsize=8)
        ax.set_xlim(-0.6, len(self.cells) - 0.4)

    def axis(self, ax) -> None:
        """The study's axis: log scale where asked, labelled at the cells' values where they do not crowd each other."""
        ax.set_xlabel(self.meta.get("axis") or "value")
        values = sorted({r[3] for r in self.cells}, reverse=True)
        if self.log:
            ax.set_xscale("log")
            ax.xaxis.set_minor_locator(NullLocator())
            ax.xaxis.set_minor_formatter(NullFormatter())
        if not values or len(values) > 15:
            return
        position = (lambda v: math.log10(v)) if self.log else (lambda v: v)
        extent = (position(values[0]) - position(values[-1])) or 1.0
        kept: list[float] = []
        for v in values:  # from the largest: the full-size end is the one readers look up
            if all(abs(position(v) - position(k)) >= TICK_GAP * extent for k in kept):
                kept.append(v)
        ax.set_xticks(kept, [number(v) for v in kept])

    def relative_figure(self) -> Figure:
        """The primary transfer metric and the source's val top-1 as % of the full-source row, against the axis: the
        paper's point at a glance (the transfer curve falls less steeply)."""
        width = 7.5 if self.numeric else max(7.5, 0.8 * len(self.cells) + 2)
        fig = Figure(figsize=(width, 5.2), layout="constrained", dpi=DPI)
        ax = fig.subplots()
        scale = {m: 100.0 / s.mean for m in {SOURCE_METRIC, *filter(None, self.primary.values())}
                 if (s := self.get(self.full, m)) and s.mean > 0}
        drawn = self.relative_lines(ax, scale) if self.numeric else self.relative_bars(ax, scale)
        if drawn:
            ax.axhline(100, ls=":", color="black", lw=1.5, label=f"{FULL} (= 100 %)")
            for metric, dashes in zip(dict.fromkeys(m for m in self.primary.values() if m in scale), ("--", "-.", (0, (5, 2, 1, 2)), ":")):
                if s := self.get(self.floor, metric):
                    ax.axhline(s.mean * scale[metric], ls=dashes, color="grey", lw=1.3, label=f"{FLOOR} ({short(metric)})")
            clamp(ax, 0.0, math.inf)
            legend(fig, [ax], self.error_note(", as % of the full row's mean"), [] if self.numeric else self.bar_keys())
            ax.set_ylabel("% of the full-source row")
            ax.grid(alpha=0.3)
            ax.set_axisbelow(True)
        else:
            ax.set_axis_off()
            ax.text(0.5, 0.5, "no full-source row with these metrics to compare with", ha="center", va="center", transform=ax.transAxes)
        fig.suptitle(f"{self.title()}\ntransfer vs the source's own accuracy, relative to the full source", fontsize=11)
        return fig

    def relative_lines(self, ax, scale: dict) -> bool:
        """Per group: the primary transfer metric (solid) and the source's val top-1 (dashed), as % of the full row."""
        drawn = False
        for i, group in enumerate(self.groups):
            for j, (metric, style, what) in enumerate(((self.primary[group], "-", "transfer"), (SOURCE_METRIC, "--", "source val top-1"))):
                if metric not in scale:
                    continue
                points = sorted((r[3], s) for r in self.cells if r[1] == group and (s := self.get(r, metric)))
                if points:
                    label = what + (f" ({short(metric)})" if what == "transfer" else "")
                    one = len(self.groups) == 1  # one group: a colour per metric; else a colour per group, a line style per metric
                    x = self.dodge([p[0] for p in points], 2 * i + j, 2 * len(self.groups))
                    ax.errorbar(x, [p[1].mean * scale[metric] for p in points],
                                yerr=error_bars([p[1] for p in points], scale[metric]), ls=style, marker="o" if style == "-" else "s",
                                ms=5, capsize=3, lw=1.6, color=f"C{j if one else i}", label=label if one else f"{series(group)}: {label}")
                    drawn = True
        self.axis(ax)
        return drawn

    def relative_bars(self, ax, scale: dict) -> bool:
        """Per cell: a bar for the primary transfer metric and a hatched one for the source's val top-1, as % of full."""
        drawn = False
        for x, row in enumerate(self.cells):
            colour = f"C{self.groups.index(row[1])}"
            for offset, metric, hatch in ((-0.2, self.primary[row[1]], None), (0.2, SOURCE_METRIC, "//")):
                if metric in scale and (s := self.get(row, metric)):
                    ax.bar(x + offset, s.mean * scale[metric], yerr=error_bars([s], scale[metric]), width=0.38, capsize=3,
                           color=colour, alpha=0.5 if hatch else 1.0, hatch=hatch, edgecolor="black", lw=0.5)
                    drawn = True
        self.categories(ax)
        return drawn

    def bar_keys(self) -> list[Patch]:
        """Legend entries of the relative bars, which carry no labels of their own: a colour per group, a fill per metric."""
        keys = [Patch(color=f"C{i}", label=series(g)) for i, g in enumerate(self.groups)]
        primaries = list(dict.fromkeys(short(m) for m in self.primary.values() if m))
        transfer = primaries[0] if len(primaries) == 1 else "per group: " + ", ".join(primaries)
        return keys + [Patch(facecolor="white", edgecolor="black", label=f"transfer ({transfer})"),
                       Patch(facecolor="white", edgecolor="black", hatch="//", label="source val top-1")]


# ---- helpers ------------------------------------------------------------------------------------------------------

def clamp(ax, low: float, high: float) -> None:
    """Keep the autoscaled y limits within [low, high]."""
    bottom, top = ax.get_ylim()
    ax.set_ylim(max(bottom, low), min(top, high))


def error_bars(summaries: list, factor: float = 1.0) -> np.ndarray | None:
    """Error bars of ± one sample std over seeds (zero length where a row has one seed; none when no row has two). With 2-3
    seeds a Student t 95% interval reaches 9 or 2.5 stds either side of the mean: it would hide the means; the tables give it."""
    if all(math.isnan(s.std) for s in summaries):
        return None
    low = high = [0.0 if math.isnan(s.std) else s.std * factor for s in summaries]
    return np.array([low, high])


def legend(fig: Figure, axes, title: str, keys: list[Patch] = ()) -> None:
    """One legend for the whole figure, below the panels: `keys` first, then every labelled series once."""
    seen: dict[str, object] = {k.get_label(): k for k in keys}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(label, handle)
    if seen:
        entry = max(len(label) for label in seen) * 5.5 + 45  # points: the text at 9 pt plus the line sample and gaps
        ncols = max(1, min(len(seen), int(fig.get_figwidth() * 72 // entry)))
        fig.legend(list(seen.values()), list(seen), loc="outside lower center", ncols=ncols, fontsize=9,
                   title="\n".join(textwrap.wrap(title, int(fig.get_figwidth() * 72 // 5.5))), title_fontsize=9, frameon=False)


def series(group: str) -> str:
    """A group's name in legends."""
    return group or "pretrained subsets"


def y_label(metric: str) -> str:
    """The y axis label with its unit."""
    last = metric.rsplit(".", 1)[-1]
    return "top-1 accuracy (%)" if last.endswith("top1") else "accuracy (%)" if "acc" in last else last


def short(metric: str) -> str:
    """A metric as readers say it: 'source val top-1', 'knn → fashion_mnist_B' (+ the score's name unless test top-1)."""
    if metric == SOURCE_METRIC:
        return "source val top-1"
    parts = metric.split(".")
    if parts[0] == "transfer" and len(parts) >= 4:
        task, target, score = parts[1], ".".join(parts[2:-1]), parts[-1]
        return f"{task} → {target}" + ("" if score == "test_top1" else f" {score}")
    return metric


def spread(s, seeds: int) -> str:
    """'mean ± std' with one decimal ('mean' alone for one seed, blank where missing, '(n=k)' where seeds are missing)."""
    if s is None:
        return ""
    text = f"{s.mean:.1f}" if s.n < 2 else f"{s.mean:.1f} ± {s.std:.1f}"
    return text + (f" (n={s.n})" if s.n < seeds else "")


def span(s) -> str:
    """'[low, high]' with one decimal, blank where missing or for one seed."""
    return "" if s is None or math.isnan(s.ci95_low) else f"[{s.ci95_low:.1f}, {s.ci95_high:.1f}]"


def number(value: float) -> str:
    """An axis value as people write it: 500, 0.25; blank for none."""
    return "" if value is None or math.isnan(value) else f"{value:g}"


def code(value) -> str:
    """A meta entry as inline code (lists comma-separated), 'not recorded' where missing."""
    if value is None or value == "" or value == []:
        return "not recorded"
    items = value if isinstance(value, (list, tuple)) else [value]
    return ", ".join(f"`{str(v).replace('`', chr(39))}`" for v in items)


def table(header: list[str], rows: list[list[str]], text: int = 1) -> list[str]:
    """A Markdown table, its first `text` columns left-aligned, the others right-aligned ('|' in a cell escaped)."""
    def line(cells):
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"
    return [line(header), "|" + "|".join(":---" if i < text else "---:" for i in range(len(header))) + "|", *map(line, rows)]


def clip(text: str, width: int) -> str:
    """`text`, cut to `width` characters with an ellipsis."""
    return text if len(text) <= width else text[:width - 1] + "…"


def file_stem(study: str) -> str:
    """The study's name as a file name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", study).strip("._") or "study"


def write_text(path: Path, text: str) -> None:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def save(fig: Figure, path: Path) -> None:
    """Write a figure as a PNG atomically."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
