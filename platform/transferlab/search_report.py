"""A search's results: the best trials measured once on test, the trials table, the Pareto front of score against
pretraining cost, Optuna's history and importance plots, and what pruning saved; written locally and to the search run."""

import math
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

from . import tracking
from .pipeline import TransferSpec, measure
from .report import file_stem, save, table, write_text

COLUMNS = ("number", "state", "val_score", "test_score", "classes", "images_per_class", "selection", "labels", "steps", "images_seen",
           "full_images_seen",
           "seconds", "pruned_at_step", "reused", "policy", "run_id", "pretrain_run", "error")
TEST_SCORES = "test_scores"  # study user attr: {trial number: test score} of the best trials, measured once


def best_trials(plan, study) -> list:
    """The trials measured on test: the `best` highest val scores (one objective), or the Pareto front's, best score first;
    one per pretraining run."""
    from optuna.trial import TrialState

    if len(plan.objectives) > 1:
        chosen = study.best_trials
    else:
        chosen = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    distinct = {}  # a trial that repeated a finished allocation is the same pretraining: measure and list it once
    for t in sorted(chosen, key=lambda t: (-t.values[0], t.number)):
        distinct.setdefault(trial_attrs(t).get("pretrain_run", t.number), t)
    return list(distinct.values())[:plan.args.best]


def measure_best(plan, study, search_run: str) -> list[dict]:
    """Measure each best trial's pretraining once on the target's test split (ordinary, reused transfer runs); record the
    scores on the trial (user attr test_score), its run, and the search run (best.<rank>.val_score / test_score)."""
    from .search_trials import RUN_ATTR

    test = TransferSpec(plan.target.target, plan.target.tasks)
    rows, summary, scores = [], {}, {}  # the best as of now (a continued search may have new ones; measured runs are reused)
    for rank, trial in enumerate(best_trials(plan, study), 1):
        metrics = measure(trial_attrs(trial)["pretrain_run"], test)
        score = next(v for k, v in metrics.items() if k.endswith(".test_top1"))
        scores[str(trial.number)] = score  # a finished trial's attrs are frozen: the study keeps them
        tracking.log_metrics(trial.user_attrs[RUN_ATTR], metrics | {"search.test_score": score})
        summary |= {f"best.{rank}.val_score": trial.values[0], f"best.{rank}.test_score": score, f"best.{rank}.trial": float(trial.number)}
        rows.append({"rank": rank, "number": trial.number, "val_score": trial.values[0], "test_score": score})
    if summary:
        study.set_user_attr(TEST_SCORES, scores)
        tracking.log_metrics(search_run, summary)
    return rows


def trial_attrs(trial) -> dict:
    """A trial's user attrs with its allocation and outcome spread out (one level, as the trials table shows them)."""
    from .search_trials import ALLOCATION_ATTR, OUTCOME_ATTR

    a = trial.user_attrs
    return a.get(ALLOCATION_ATTR, {}) | a.get(OUTCOME_ATTR, {}) | a


def trials_frame(study) -> pd.DataFrame:
    """One row per trial: state, scores, allocation, cost, links."""
    from .search_trials import ERROR_ATTR, RUN_ATTR

    rows, scores = [], study.user_attrs.get(TEST_SCORES, {})
    for t in study.get_trials(deepcopy=False):
        a = trial_attrs(t)
        rows.append({"number": t.number, "state": t.state.name, "val_score": t.values[0] if t.values and t.state.name == "COMPLETE" else math.nan,
                     "test_score": scores.get(str(t.number), math.nan), "classes": a.get("classes"), "images_per_class": a.get("images_per_class"),
                     "selection": a.get("selection"), "labels": a.get("labels"), "steps": a.get("steps"), "images_seen": a.get("images_seen"), "full_images_seen": a.get("full_images_seen"),
                     "seconds": a.get("seconds"), "pruned_at_step": a.get("pruned_at_step"), "reused": a.get("reused"),
                     "policy": a.get("policy"), "run_id": a.get(RUN_ATTR), "pretrain_run": a.get("pretrain_run"), "error": a.get(ERROR_ATTR)})
    return pd.DataFrame(rows, columns=list(COLUMNS))


def pareto_front(frame: pd.DataFrame, study) -> pd.DataFrame:
    """The complete trials no other beats: Optuna's front over the search's objectives when it has several, else over val
    score (higher) and images seen (fewer); trials alike on both are all kept; cheapest first."""
    done = frame[frame.state == "COMPLETE"]
    if len(study.directions) > 1:
        front = done[done.number.isin({t.number for t in study.best_trials})]
    else:
        score, seen = done.val_score.to_numpy(float), done.images_seen.to_numpy(float)
        beaten = [bool(((score >= s) & (seen <= c) & ((score > s) | (seen < c))).any()) for s, c in zip(score, seen)]
        front = done.iloc[[i for i, b in enumerate(beaten) if not b]]
    return front.sort_values(["images_seen", "val_score", "number"], ascending=[True, False, True])


def pruning_saving(frame: pd.DataFrame) -> tuple[float, float]:
    """(pretraining images the search's trials trained on, the share pruning saved of what they would have trained on
    unpruned); a trial that reused a finished pretraining trained nothing either way and is left out."""
    ran = frame[frame.state.isin(["COMPLETE", "PRUNED"]) & (frame.reused != True)]  # noqa: E712 (None for pruned trials)
    seen, full = ran.images_seen.astype(float).sum(), ran.full_images_seen.astype(float).sum()
    return float(seen), float(1 - seen / full) if full else 0.0


def write_search_report(plan, study, search_run: str, out: Path | None = None) -> tuple[Path, ...]:
    """Write trials.csv, pareto.csv, search.md and the PNG plots into `out` (default ./reports/search-<name>), log them as the
    search run's `search/` artifacts, record the search's summary metrics; return the paths."""
    out = Path(out or Path("reports") / f"search-{file_stem(plan.args.name)[:80]}")
    out.mkdir(parents=True, exist_ok=True)
    frame = trials_frame(study)
    front = pareto_front(frame, study)
    seen, saved = pruning_saving(frame)
    files = [written(out / "trials.csv", frame.to_csv(index=False)), written(out / "pareto.csv", front.to_csv(index=False)), pareto_png(frame, front, plan, out / "pareto.png"),
             tradeoff_png(frame, plan, out / "tradeoff.png")]
    files += optuna_pngs(study, out)
    files.append(written(out / "search.md", markdown(plan, frame, front, seen, saved)))
    counts = frame.state.value_counts()
    tracking.log_metrics(search_run, {"search.trials_complete": float(counts.get("COMPLETE", 0)), "search.trials_pruned": float(counts.get("PRUNED", 0)),
                                      "search.trials_failed": float(counts.get("FAIL", 0)), "search.images_seen": seen,
                                      "search.pruning_saved_fraction": saved})
    client = tracking.client()
    for path in files:
        client.log_artifact(search_run, str(path), "search")
    return tuple(files)


def written(path: Path, text: str) -> Path:
    """`text` written to `path` atomically; the path."""
    write_text(path, text)
    return path


def save_png(fig: Figure, path: Path) -> Path:
    """A figure as PNG, atomically (Optuna's pyplot figures closed after)."""
    save(fig, path)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def log_ticks(ax, values) -> None:
    """A log x axis labelled at the values the trials took (plain numbers), not at powers of ten."""
    ticks = sorted({float(v) for v in values if v == v and v > 0})
    if not ticks:  # no complete trial: nothing to place on a log axis
        return
    ax.set_xscale("log")
    if len(ticks) <= 12:
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:,.0f}"))


def pareto_png(frame: pd.DataFrame, front: pd.DataFrame, plan, path: Path) -> Path:
    """Val score against pretraining images seen: complete trials coloured by classes, pruned ones where they stopped,
    the Pareto front joined."""
    fig = Figure(figsize=(7.5, 4.8), layout="constrained")
    ax = fig.subplots()
    done = frame[frame.state == "COMPLETE"]
    if len(done):
        dots = ax.scatter(done.images_seen, done.val_score, c=done.classes.astype(float), cmap="viridis", s=36, zorder=3, label="complete trial")
        bar = fig.colorbar(dots, ax=ax, label="classes k (budget / k images each)")
        bar.set_ticks(sorted(done.classes.astype(float).unique()))
        bar.ax.yaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:.0f}"))
    ax.step(front.images_seen, front.val_score, where="post", color="crimson", lw=1.5, zorder=2, label="Pareto front")
    ax.scatter(front.images_seen, front.val_score, facecolors="none", edgecolors="crimson", s=110, zorder=4)
    pruned = frame[frame.state == "PRUNED"]
    if len(pruned):
        for x in pruned.images_seen:
            ax.axvline(x, color="0.85", lw=0.8, zorder=1)
    log_ticks(ax, done.images_seen)  # pruned trials' stops are lines without labels: their numbers crowd the axis
    ax.set_xlabel("pretraining images seen (optimizer steps × batch), log scale")
    ax.set_ylabel(f"{plan.task.name} top-1 on target val (%)")
    ax.set_title(f"search {plan.args.name}: target val score against pretraining cost (budget {plan.args.budget:,} images)", fontsize=10)
    handles, labels = ax.get_legend_handles_labels()
    if len(pruned):
        from matplotlib.lines import Line2D

        handles.append(Line2D([], [], color="0.85", lw=0.8))
        labels.append(f"where {len(pruned)} pruned trials stopped")
    ax.legend(handles, labels, loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    return save_png(fig, path)


def tradeoff_png(frame: pd.DataFrame, plan, path: Path) -> Path:
    """The paper's question for this budget: val score against the number of classes k (budget / k images each), one
    marker per class selection, hollow where the labels were coarsened."""
    fig = Figure(figsize=(7.5, 4.8), layout="constrained")
    ax = fig.subplots()
    done = frame[frame.state == "COMPLETE"]
    for (selection, group), marker in zip(done.groupby("selection", sort=True), "os^Dv"):
        fine = group.labels.astype(float) >= group.classes.astype(float)
        for kept, face in ((fine, None), (~fine, "none")):
            part = group[kept]
            if len(part):
                label = f"{selection}" + ("" if face is None else ", coarser labels")
                ax.scatter(part.classes, part.val_score, marker=marker, s=44, facecolors=face, edgecolors=f"C{'os^Dv'.index(marker)}",
                           color=f"C{'os^Dv'.index(marker)}", label=label, zorder=3)
    log_ticks(ax, done.classes)
    ax.set_xlabel(f"classes k, log scale (each gets {plan.args.budget} / k images)")
    ax.set_ylabel(f"{plan.task.name} top-1 on target val (%)")
    ax.set_title(f"more classes or more images per class? search {plan.args.name}, budget {plan.args.budget:,} images", fontsize=10)
    if len(done):
        ax.legend(title="class selection", fontsize=8, loc="best")
    ax.grid(alpha=0.3)
    return save_png(fig, path)


def optuna_pngs(study, out: Path) -> list[Path]:
    """Optuna's own optimization-history and parameter-importance plots (matplotlib), where the trials allow them."""
    import warnings

    import optuna
    from optuna.trial import TrialState
    from optuna.visualization import matplotlib as plots

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    files = []
    multi = len(study.directions) > 1
    target = (lambda t: t.values[0]) if multi else None
    history = plots.plot_optimization_history(study, target=target, target_name="val score")
    history.figure.tight_layout()
    files.append(save_png(history.figure, out / "history.png"))
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) >= 2 and len({tuple(sorted(t.params.items())) for t in complete}) >= 2:
        importance = plots.plot_param_importances(study, target=target, target_name="val score")
        importance.figure.tight_layout()
        files.append(save_png(importance.figure, out / "importance.png"))
    return files


def markdown(plan, frame: pd.DataFrame, front: pd.DataFrame, seen: float, saved: float) -> str:
    """The search's summary: settings, the best trials (val and test), the Pareto front, the trial counts and pruning."""
    counts = frame.state.value_counts()
    best = frame[frame.test_score.notna()].sort_values("val_score", ascending=False)
    show = ["number", "val_score", "test_score", "classes", "images_per_class", "selection", "labels", "steps", "images_seen", "policy"]
    lines = [f"# Search `{plan.args.name}`", "",
             f"- **Source:** `{plan.source.spec()}`", f"- **Target:** `{plan.target.target.spec()}`; trials scored by "
             f"`{plan.task.spec()}` on its **val** split; the best measured once on **test**, afterwards",
             f"- **Budget:** {plan.args.budget} images; **space:** `{plan.space.spec()}`; **training:** `{plan.training.spec()}`",
             f"- **Objective:** {plan.args.objective}; sampler {plan.args.sampler}, pruner {plan.args.pruner}; seed {plan.args.seed}",
             f"- **Trials:** {len(frame)} ({', '.join(f'{counts[s]} {s.lower()}' for s in counts.index)}); "
             f"the trials trained on {seen:,.0f} images; pruning saved {100 * saved:.0f}% of what they would have trained on unpruned "
             "(trials that reused a finished pretraining trained nothing and are left out)", "",
             "![score against classes](tradeoff.png)", "", "![score against images seen](pareto.png)", "", "## Best trials: val score (chosen on it) and test score (measured once after)", "",
             frame_table(best[show]), "", "## Pareto front: val score against pretraining images seen", "", frame_table(front[show[:2] + show[3:]]), ""]
    return "\n".join(lines)


def cell(value) -> str:
    """A table cell: whole numbers with thousands separators, other numbers to 4 digits, blanks for none."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float) and value.is_integer() and abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def frame_table(frame: pd.DataFrame) -> str:
    """A frame as a Markdown table, numbers rounded for reading."""
    if frame.empty:
        return "(none)"
    cells = [[cell(v) for v in row] for row in frame.itertuples(index=False)]
    return "\n".join(table(list(frame.columns), cells, text=0))
