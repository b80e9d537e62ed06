"""Study reports: CSV numbers against scipy, the Markdown table's rows and order, figures that are real images."""

import math
import zlib

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import LineCollection
from matplotlib.patches import Rectangle
from PIL import Image
from scipy import stats

from transferlab.errors import DataError, SpecError
from transferlab.report import build, results_frame, write_report

SRC, KNN, LINEAR = "pretrain.val_top1", "transfer.knn.digits.test_top1", "transfer.linear.digits.test_top1"
OTHER = ("transfer.linear.digits.test_mean_class_acc", "pretrain.train_loss")  # in the CSV, not the table
META = {"study": "images_per_class", "axis": "images per class", "log_axis": True, "source": "synthetic(classes=8)",
        "targets": ["digits"], "tasks": ["knn", "linear"], "backbone": "tiny", "training": "sgd(steps=50)", "length": "steps", "seeds": 3}
# (label, group, role, value), listed out of the table's order on purpose
CELLS = [("250 per class", "bottom_up", "cell", 250), ("random init", "", "floor", None), ("500 per class", "bottom_up", "cell", 500),
         ("all 1000 per class", "", "full", None), ("125 per class", "bottom_up", "cell", 125), ("100 per class", "top_down", "cell", 100),
         ("400 per class", "top_down", "cell", 400)]
ORDER = ["all 1000 per class", "500 per class", "250 per class", "125 per class", "400 per class", "100 per class", "random init"]


def score(label, role, value, metric, seed):
    """Plausible accuracies: the source's own falls fast with fewer images, transfer slowly; the floor far below."""
    rng = np.random.default_rng(zlib.crc32(repr((label, metric, seed)).encode()))
    fraction = 1.0 if value is None else value / 1000
    top = {SRC: 90.0, KNN: 85.0, LINEAR: 88.0}.get(metric, 80.0)
    if role == "floor":
        return (10.0 if metric == SRC else top - 25) + rng.normal(0, 0.5)
    slope = 20 if metric == SRC else 4
    return top + slope * math.log10(fraction) + rng.normal(0, 0.8)


def records(seeds=(0, 1, 2), cells=CELLS):
    return [{"label": label, "group": group, "role": role, "value": value, "seed": seed,
             "metrics": {m: score(label, role, value, m, seed) for m in (SRC, KNN, LINEAR, *OTHER)}}
            for label, group, role, value in cells for seed in seeds]


def md_table(text, heading="## Accuracy"):
    """The rows of the first Markdown table under `heading`, as lists of cells (header first, alignment row dropped)."""
    lines = text.split(heading, 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    rows = [lines[start]] + lines[start + 2:end]
    return [[c.strip() for c in row[1:-1].split("|")] for row in rows]


def expected(scores):
    """n, mean, std and the t interval, computed independently of the report."""
    scores = np.asarray(scores)
    n, mean = len(scores), scores.mean()
    if n == 1:
        return n, mean, math.nan, math.nan, math.nan
    std = scores.std(ddof=1)
    low, high = stats.t.interval(0.95, n - 1, loc=mean, scale=stats.sem(scores))
    return n, mean, std, low, high


@pytest.fixture
def report(tmp_path):
    recs = records()
    paths = write_report(results_frame(recs), META, tmp_path)
    return recs, paths


def test_report_writes_the_five_files_and_returns_their_paths(report, tmp_path):
    _, paths = report
    assert [p.name for p in paths] == ["images_per_class-results.csv", "images_per_class-scores.csv", "images_per_class.md",
                                       "images_per_class.png", "images_per_class-relative.png"]
    assert all(p.parent == tmp_path and p.stat().st_size > 0 for p in paths)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths)  # no temporaries left behind


def test_results_csv_has_mean_std_and_student_t_interval_per_row_and_metric(report):
    recs, paths = report
    table = pd.read_csv(paths[0], keep_default_na=False, na_values=[""])
    assert len(table) == len(CELLS) * 5
    assert list(table.columns) == ["group", "label", "role", "value", "metric", "n", "mean", "std", "ci95_low", "ci95_high"]
    assert list(dict.fromkeys(table["label"])) == ORDER
    for line in table.itertuples():
        scores = [r["metrics"][line.metric] for r in recs if r["label"] == line.label]
        n, mean, std, low, high = expected(scores)
        assert (line.n, line.mean, line.std, line.ci95_low, line.ci95_high) == pytest.approx((n, mean, std, low, high), rel=1e-9)
        cell = next(c for c in CELLS if c[0] == line.label)
        assert (line.group if isinstance(line.group, str) else "", line.role) == (cell[1], cell[2])
        assert (math.isnan(line.value) if cell[3] is None else line.value == cell[3])


def test_scores_csv_holds_every_seed_score(report):
    recs, paths = report
    scores = pd.read_csv(paths[1], keep_default_na=False, na_values=[""])
    assert list(scores.columns) == ["label", "group", "role", "value", "seed", "metric", "score"]
    assert len(scores) == len(recs) * 5
    got = {(r.label, r.seed, r.metric): r.score for r in scores.itertuples()}
    assert got == pytest.approx({(r["label"], r["seed"], m): v for r in recs for m, v in r["metrics"].items()}, rel=1e-12)


def test_markdown_table_in_paper_order_with_mean_std_and_drops_vs_full(report):
    recs, paths = report
    text = paths[2].read_text()
    header, *rows = md_table(text)
    assert header == ["row", "group", "images per class", "source val top-1", "knn → digits", "linear → digits",
                      "Δ source val top-1 vs full", "Δ knn → digits vs full"]
    assert [r[0] for r in rows] == ORDER  # full → 500 → 250 → 125 (bottom_up) → 400 → 100 (top_down) → random init
    assert [r[1] for r in rows] == ["", "bottom_up", "bottom_up", "bottom_up", "top_down", "top_down", ""]
    assert [r[2] for r in rows] == ["", "500", "250", "125", "400", "100", ""]

    def mean(label, metric):
        return np.mean([r["metrics"][metric] for r in recs if r["label"] == label])

    for row in rows:
        for column, metric in ((3, SRC), (4, KNN), (5, LINEAR)):
            scores = [r["metrics"][metric] for r in recs if r["label"] == row[0]]
            assert row[column] == f"{np.mean(scores):.1f} ± {np.std(scores, ddof=1):.1f}"
        if row[0] == ORDER[0]:
            assert row[6:] == ["ref", "ref"]
        else:
            assert row[6:] == [f"{mean(row[0], SRC) - mean(ORDER[0], SRC):+.1f}", f"{mean(row[0], KNN) - mean(ORDER[0], KNN):+.1f}"]
    assert float(rows[3][7]) > float(rows[3][6])  # the fake data's point, as the paper's: transfer falls less than the source
    header, *intervals = md_table(text, "## 95% intervals")
    assert [r[0] for r in intervals] == ORDER and len(header) == 6
    n, _, _, low, high = expected([r["metrics"][KNN] for r in recs if r["label"] == "250 per class"])
    assert intervals[2][4] == f"[{low:.1f}, {high:.1f}]"
    for needle in ("synthetic(classes=8)", "`digits`", "`knn`, `linear`", "`tiny`", "`sgd(steps=50)`", "in optimizer steps",
                   "**Seeds:** 3", "How to read", "(images_per_class.png)", "(images_per_class-relative.png)"):
        assert needle in text
    assert "mean_class_acc" not in text.split("## Accuracy")[1].split("\n\n")[1]  # a secondary metric stays in the CSV


def test_figures_are_valid_pngs_of_plausible_size(report):
    _, paths = report
    for path in paths[3:]:
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            assert image.format == "PNG"
            assert 900 <= image.width <= 3000 and 600 <= image.height <= 2500
            pixels = np.asarray(image.convert("L"))
            assert pixels.std() > 5 and (pixels < 100).mean() > 0.005  # drawn on: not one flat colour


def test_line_figure_draws_each_group_against_a_log_axis_with_references():
    report = build(results_frame(records()), META)
    fig = report.figure()
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == ["source val top-1", "knn → digits", "linear → digits"]
    for ax, metric in zip(axes, (SRC, KNN, LINEAR)):
        assert ax.get_xscale() == "log" and ax.get_xlabel() == "images per class" and ax.get_ylabel() == "top-1 accuracy (%)"
        lines = {line.get_label(): line for line in ax.get_lines()} | {c.get_label(): c.lines[0] for c in ax.containers}
        means = {label: np.mean([score(label, role, value, metric, s) for s in range(3)]) for label, _, role, value in CELLS}
        assert list(lines["bottom_up"].get_xdata()) == [125, 250, 500]
        assert list(lines["bottom_up"].get_ydata()) == pytest.approx([means[f"{v} per class"] for v in (125, 250, 500)])
        assert list(lines["top_down"].get_xdata()) == [100, 400]
        full, floor = lines["full source"], lines["random init"]
        assert full.get_ydata()[0] == pytest.approx(means["all 1000 per class"]) and full.get_linestyle() == ":"
        assert floor.get_ydata()[0] == pytest.approx(means["random init"]) and floor.get_linestyle() == "--"
        assert sum(isinstance(c, LineCollection) for c in ax.collections) >= 2  # error bars of both groups
    legend = fig.legends[0]
    assert "± one std over 3 seeds" in legend.get_title().get_text()
    assert {t.get_text() for t in legend.get_texts()} == {"bottom_up", "top_down", "full source", "random init"}
    assert "images_per_class" in fig.get_suptitle() and "synthetic(classes=8)" in fig.get_suptitle()

    relative = report.relative_figure().axes[0]
    lines = {line.get_label(): line for line in relative.get_lines()} | {c.get_label(): c.lines[0] for c in relative.containers}
    full = {m: np.mean([score(ORDER[0], "full", None, m, s) for s in range(3)]) for m in (SRC, KNN)}
    for metric, what in ((KNN, "transfer (knn → digits)"), (SRC, "source val top-1")):
        ys = lines[f"bottom_up: {what}"].get_ydata()
        assert list(ys) == pytest.approx([100 * np.mean([score(f"{v} per class", "cell", v, metric, s) for s in range(3)]) / full[metric]
                                 for v in (125, 250, 500)])
    assert lines["full source (= 100 %)"].get_ydata()[0] == 100
    assert relative.get_ylabel() == "% of the full-source row"


def test_one_seed_leaves_std_and_interval_blank_and_says_so(tmp_path):
    paths = write_report(results_frame(records(seeds=(7,))), dict(META, seeds=1), tmp_path)
    table = pd.read_csv(paths[0], keep_default_na=False, na_values=[""])
    assert (table["n"] == 1).all() and table[["std", "ci95_low", "ci95_high"]].isna().all(axis=None)
    assert table["mean"].notna().all()
    text = paths[2].read_text()
    assert "with one seed there is no std or interval" in text
    _, *rows = md_table(text)
    assert [r[0] for r in rows] == ORDER and not any("±" in c for r in rows for c in r)
    assert rows[1][3] == f"{score('500 per class', 'cell', 500, SRC, 7):.1f}"
    assert "## 95% intervals" not in text
    for path in paths[3:]:
        with Image.open(path) as image:
            assert image.width > 600
    assert build(results_frame(records(seeds=(7,))), META).figure().legends[0].get_title().get_text() == "one seed: no error bars"


CATEGORICAL = [("fine labels (all)", "", "full", None), ("coarse labels", "coarse", "cell", None),
               ("fine labels, half", "fine", "cell", None), ("random init", "", "floor", None)]


def test_categorical_study_draws_bars_and_a_table_without_an_axis_column(tmp_path):
    recs = records(cells=CATEGORICAL)
    paths = write_report(results_frame(recs), dict(META, study="coarse_to_fine", axis="labels", log_axis=False), tmp_path)
    header, *rows = md_table(paths[2].read_text())
    assert [r[0] for r in rows] == ["fine labels (all)", "coarse labels", "fine labels, half", "random init"]
    assert header[:3] == ["row", "group", "source val top-1"] and "labels" not in header
    report = build(results_frame(recs), dict(META, study="coarse_to_fine", log_axis=False))
    for ax, metric in zip(report.figure().axes, (SRC, KNN, LINEAR)):
        bars = [p for p in ax.patches if isinstance(p, Rectangle)]
        means = [np.mean([r["metrics"][metric] for r in recs if r["label"] == label]) for label in ("coarse labels", "fine labels, half")]
        assert [b.get_height() for b in bars] == pytest.approx(means)
        assert [t.get_text() for t in ax.get_xticklabels()] == ["coarse labels", "fine labels,\nhalf"]
        assert {line.get_label() for line in ax.get_lines()} >= {"full source", "random init"}
    relative = report.relative_figure().axes[0]
    assert len([p for p in relative.patches if isinstance(p, Rectangle)]) == 4  # transfer and source bar per cell
    for path in paths[3:]:
        with Image.open(path) as image:
            image.verify()


def test_missing_scores_stay_blank_never_numbers(tmp_path):
    recs = records()
    for r in recs:
        if r["label"] == "random init":
            del r["metrics"][SRC]  # the floor is never trained: no source accuracy
        if r["label"] == "125 per class" and r["seed"] == 2:
            r["metrics"][KNN] = None  # one seed's transfer run failed
    frame = results_frame(recs)
    assert frame.loc[(frame["label"] == "125 per class") & (frame["seed"] == 2) & (frame["metric"] == KNN), "score"].isna().all()
    assert frame.loc[frame["role"] == "full", "value"].isna().all()
    paths = write_report(frame, META, tmp_path)
    table = pd.read_csv(paths[0], keep_default_na=False, na_values=[""])
    assert table[(table["label"] == "random init") & (table["metric"] == SRC)].empty
    assert table[(table["label"] == "125 per class") & (table["metric"] == KNN)]["n"].item() == 2
    text = paths[2].read_text()
    _, *rows = md_table(text)
    floor, small = rows[-1], rows[3]
    assert floor[3] == "" and floor[6] == ""  # blank, and no drop computed from a missing number
    knn = [r["metrics"][KNN] for r in recs if r["label"] == "125 per class" and r["seed"] < 2]
    assert small[4] == f"{np.mean(knn):.1f} ± {np.std(knn, ddof=1):.1f} (n=2)"
    assert "(n=k): only k of the 3 seeds" in text


def test_bad_input_is_one_clear_error(tmp_path):
    frame = results_frame(records())
    with pytest.raises(SpecError, match="lack the column.*score"):
        write_report(frame.drop(columns=["score"]), META, tmp_path)
    with pytest.raises(SpecError, match="meta\\['study'\\]"):
        write_report(frame, {"axis": "x"}, tmp_path)
    with pytest.raises(DataError, match="two scores for pretrain.val_top1 of row '250 per class'"):
        write_report(pd.concat([frame, frame.iloc[:1]]), META, tmp_path)
    with pytest.raises(DataError, match="no scores"):
        write_report(frame.assign(score=np.nan), META, tmp_path)
    with pytest.raises(DataError, match="unknown row role"):
        write_report(frame.assign(role="baseline"), META, tmp_path)
    with pytest.raises(DataError, match="infinite score"):
        write_report(frame.assign(score=np.inf), META, tmp_path)
    assert not list(tmp_path.iterdir())  # nothing written before the input was checked


def test_groups_measured_on_different_targets_each_show_their_own_drop(tmp_path):
    """Like class_split: each group transfers to its own held-out half; the full row is measured on both."""
    a, b = "transfer.knn.half_random.test_top1", "transfer.knn.half_min_overlap.test_top1"
    scores = {("full", ""): {SRC: 90.0, a: 80.0, b: 70.0}, ("random", "random"): {SRC: 85.0, a: 78.0},
              ("min overlap", "min_overlap"): {SRC: 84.0, b: 60.0}}
    recs = [{"label": label, "group": group, "role": "full" if label == "full" else "cell", "value": None, "seed": seed,
             "metrics": {m: v + seed for m, v in metrics.items()}} for (label, group), metrics in scores.items() for seed in (0, 1)]
    text = write_report(results_frame(recs), dict(META, study="class_split", seeds=2), tmp_path)[2].read_text()
    header, *rows = md_table(text)
    assert header == ["row", "group", "source val top-1", "knn → half_random", "knn → half_min_overlap",
                      "Δ source val top-1 vs full", "Δ transfer vs full"]
    assert rows[1][2:] == ["85.5 ± 0.7", "78.5 ± 0.7", "", "-5.0", "-2.0"]  # blank: this group was never measured there
    assert rows[2][2:] == ["84.5 ± 0.7", "", "60.5 ± 0.7", "-6.0", "-10.0"]
    assert "Δ transfer is, per group: random: knn → half_random; min_overlap: knn → half_min_overlap" in text
