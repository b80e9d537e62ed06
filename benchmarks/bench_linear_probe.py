"""Benchmark: the torch linear probe vs scikit-learn's LogisticRegression (lbfgs), same features, grid and protocol.

Both run the Kornblith protocol of `transferlab_probes.linear`: standardise with the fitting set's statistics, walk the
L2 grid from strongest to weakest with warm starts, pick the strength on val (ties: the stronger), refit on train+val
starting from the chosen solution, score test once. scikit-learn gets C = 1 / (l2 · n) and the same L-BFGS stopping
tolerance, history and iteration cap.
"""

import os
import time

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from transferlab.devices import device_name, synchronize
from transferlab_probes.linear import HISTORY, L2_GRID, TOLERANCE, linear_probe, to_device

TRAIN, VAL, TEST, DIM, CLASSES = 5000, 1250, 2500, 512, 20
MAX_ITER = 1000
TARGET_POINTS = 0.5  # largest accepted test top-1 difference, in points


def penultimate_like(seed: int = 0, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Non-negative, correlated 512-d features of 20 overlapping classes (ReLU of a random projection), float32."""
    x, y = make_classification(n_samples=round((TRAIN + VAL + TEST) * scale), n_features=64, n_informative=48, n_redundant=0, n_classes=CLASSES,
                               n_clusters_per_class=2, class_sep=1.5, flip_y=0.02, random_state=seed)
    projection = np.random.default_rng(seed).standard_normal((64, DIM)) / 8
    return np.maximum(x @ projection, 0).astype(np.float32), y.astype(np.int64)


def sklearn_probe(train, val, test, grid) -> dict[str, float]:
    """The same protocol with scikit-learn, warm-starting along the grid and into the refit."""
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = train, val, test
    scaler = StandardScaler().fit(x_train)
    fit, held = scaler.transform(x_train), scaler.transform(x_val)
    clf = LogisticRegression(max_iter=MAX_ITER, tol=TOLERANCE, warm_start=True)
    best = None
    for l2 in sorted(grid, reverse=True):
        clf.set_params(C=1 / (l2 * len(fit))).fit(fit, y_train)
        accuracy = 100 * np.mean(clf.predict(held) == y_val)
        if best is None or accuracy > best[1]:
            best = (l2, accuracy, clf.coef_.copy(), clf.intercept_.copy())
    l2, val_top1, clf.coef_, clf.intercept_ = best
    x_all, y_all = np.concatenate([x_train, x_val]), np.concatenate([y_train, y_val])
    scaler = StandardScaler().fit(x_all)
    clf.set_params(C=1 / (l2 * len(x_all))).fit(scaler.transform(x_all), y_all)
    return {"test_top1": 100 * np.mean(clf.predict(scaler.transform(x_test)) == y_test), "val_top1": val_top1, "l2": l2}


def timed(fn, device: torch.device | None = None):
    """(result, seconds) of fn()."""
    start = time.perf_counter()
    result = fn()
    if device is not None:
        synchronize(device)
    return result, time.perf_counter() - start


def measure(scale: float = 1.0) -> dict:
    """scikit-learn's seconds and result, and per device ours, on `scale` × the default sizes."""
    x, y = penultimate_like(scale=scale)
    bounds = np.cumsum([0, *(round(k * scale) for k in (TRAIN, VAL, TEST))])
    splits = [(x[a:b], y[a:b]) for a, b in zip(bounds, bounds[1:])]
    reference, sklearn_s = timed(lambda: sklearn_probe(*splits, L2_GRID))
    ours = {}
    for device in [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else []):
        tensors = [to_device(*split, device) for split in splits]
        timed(lambda: linear_probe(*tensors, CLASSES, L2_GRID[-3:], MAX_ITER), device)  # warm-up: kernels, allocator
        ours[device] = timed(lambda: linear_probe(*tensors, CLASSES, L2_GRID, MAX_ITER), device)
    return {"reference": reference, "sklearn_s": sklearn_s, "ours": ours, "sizes": np.diff(bounds).tolist()}


def rows(tiny: bool = False) -> list[dict]:
    """The suite's rows per device: speed-up over scikit-learn and the test top-1 difference."""
    from benchmarks.suite import row

    m = measure(0.2 if tiny else 1.0)
    out = []
    for device, (ours, seconds) in m["ours"].items():
        delta = ours["test_top1"] - m["reference"]["test_top1"]
        out += [row("linear_probe", f"scikit-learn ÷ torch linear probe time, {device_name(device)}, {'/'.join(map(str, m['sizes']))} × {DIM}-d",
                    m["sklearn_s"] / seconds, "×", "", None),
                row("linear_probe", f"  test top-1 minus scikit-learn's, {device.type}", delta, "points", f"|Δ| ≤ {TARGET_POINTS}", abs(delta) <= TARGET_POINTS)]
    return out


def main() -> int:
    """Print one row per implementation and device; exit 1 when an accuracy differs by more than TARGET_POINTS."""
    m = measure()
    reference, sklearn_s = m["reference"], m["sklearn_s"]
    table = Table("implementation", "device", "time", "speed-up vs sklearn", "chosen l2", "val top-1", "test top-1", "Δ test (points)", "result",
                  title=f"linear probe: {TRAIN:,} train / {VAL:,} val / {TEST:,} test × {DIM}-d, {CLASSES} classes, "
                        f"{len(L2_GRID)} strengths {min(L2_GRID):g}..{max(L2_GRID):g}, L-BFGS history {HISTORY}, tol {TOLERANCE:g}")
    table.add_row("scikit-learn LogisticRegression(lbfgs)", f"cpu ({torch.get_num_threads()} threads)", f"{sklearn_s:.2f} s", "1.00",
                  f"{reference['l2']:g}", f"{reference['val_top1']:.2f}", f"{reference['test_top1']:.2f}", "", "")
    failed = False
    for device, (ours, seconds) in m["ours"].items():
        delta = ours["test_top1"] - reference["test_top1"]
        failed |= abs(delta) > TARGET_POINTS
        table.add_row("transferlab linear (torch L-BFGS)", device_name(device), f"{seconds:.2f} s", f"{sklearn_s / seconds:.2f}",
                      f"{ours['l2']:g}", f"{ours['val_top1']:.2f}", f"{ours['test_top1']:.2f}", f"{delta:+.2f}",
                      "PASS" if abs(delta) <= TARGET_POINTS else "FAIL")
    console = Console(width=180)
    console.print(table)
    console.print(f"load average over the last minute: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (other work on the machine slows both sides)")
    return int(failed)


if __name__ == "__main__":
    raise SystemExit(main())
