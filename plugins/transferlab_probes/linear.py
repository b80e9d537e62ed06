"""Linear probe (Kornblith et al. 2019): L2-regularised multinomial logistic regression on frozen features.

Objective, for features X [n, D] and labels y: mean cross-entropy of softmax(X Wᵀ + b) + (l2 / 2)·‖W‖², bias not
penalised. scikit-learn's LogisticRegression minimises ½‖W‖² + C·Σ cross-entropy, the same problem scaled by C·n, so
`l2 = 1 / (C·n)` (n = the number of samples fitted). Strength is chosen on val, then the probe is refit on train+val.

Kornblith et al. fit the raw penultimate features and do not describe any scaling. With `standardize` (the default) every
feature is first centred and scaled with the mean and std of the data being fitted (train, then train+val; test never),
so that one grid of strengths suits every backbone and L-BFGS converges in fewer steps; `standardize=False` fits raw features.
"""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING, Literal, NamedTuple

import numpy as np

from transferlab import SpecError, Task, TransferContext

from .scores import mean_class_accuracy, top1

if TYPE_CHECKING:  # imported when the probe runs, so that registering the probes does not load torch
    import torch

# Kornblith et al. search 45 values in 1e-6..1e5 (4 a decade); 2 a decade over the same range halves the fits, and every
# strength of their grid lies within a quarter decade of one of ours.
L2_GRID = tuple(float(f"{v:.3g}") for v in np.logspace(-6, 5, 23))
HISTORY = 10  # L-BFGS correction pairs, as scipy (and so scikit-learn) keeps
TOLERANCE = 1e-4  # L-BFGS stops when every gradient entry is this small: scikit-learn's default `tol`, on the same objective
FTOL_EPS = 64  # ... or when a step changes the objective (about 1..7) by less than this many float epsilons: scikit-learn's ftol


@dataclasses.dataclass(frozen=True)
class Linear(Task):
    """L-BFGS logistic regression on frozen features; L2 strength chosen on val from `l2_grid`, refit on train+val."""

    name = "linear"
    l2_grid: tuple[float, ...] = L2_GRID
    max_iter: int = 1000
    standardize: bool = True
    dtype: Literal["float64", "float32"] = "float64"  # float32: faster on GPUs with slow float64, may stop short (lbfgs_unconverged)

    def validate(self) -> None:
        """The grid needs positive strengths; L-BFGS at least one iteration."""
        if not self.l2_grid or min(self.l2_grid) <= 0:
            raise SpecError(f"linear: l2_grid needs at least one strength, all > 0, got {list(self.l2_grid)}")
        if self.max_iter < 1:
            raise SpecError(f"linear: max_iter must be at least 1, got {self.max_iter}")

    def run(self, ctx: TransferContext) -> dict[str, float]:
        """test_top1, test_mean_class_acc, val_top1 (at the chosen strength), l2 (the chosen strength), lbfgs_unconverged."""
        import torch

        splits = [to_device(*ctx.features(split), ctx.device) for split in ("train", "val", "test")]
        return linear_probe(*splits, ctx.num_classes, self.l2_grid, self.max_iter, self.standardize, getattr(torch, self.dtype))


def linear_probe(train, val, test, num_classes: int, l2_grid, max_iter: int = 1000, standardize: bool = True,
                 dtype: torch.dtype | None = None) -> dict[str, float]:
    """Kornblith protocol on (features, labels) tensor pairs: pick l2 on val along the path, refit on train+val, score test once.

    Features are fitted in `dtype` (None: float64). `lbfgs_unconverged` counts the fits (the grid's and the refit) that stopped before
    every gradient entry fell below TOLERANCE, usually because `max_iter` ran out; each such fit also raises a warning."""
    import torch

    dtype = dtype or torch.float64
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = train, val, test
    x_train, x_val, x_test = (x.to(dtype) for x in (x_train, x_val, x_test))
    scale = Standardizer(x_train, standardize)
    x_fit, x_held = scale(x_train), scale(x_val)
    best, weights, unconverged = None, None, 0
    for l2 in sorted(l2_grid, reverse=True):  # strongest first: each solution warm-starts the next, weaker one
        weights, converged = fit_logistic(x_fit, y_train, num_classes, l2, init=weights, max_iter=max_iter, dtype=dtype)
        unconverged += not converged
        accuracy = top1(predict(x_held, weights), y_val)
        if best is None or accuracy > best[1]:  # ties keep the stronger regularisation
            best = (l2, accuracy, weights)
    l2, val_top1, weights = best
    x_all, y_all = torch.cat([x_train, x_val]), torch.cat([y_train, y_val])
    scale = Standardizer(x_all, standardize)
    weights, converged = fit_logistic(scale(x_all), y_all, num_classes, l2, init=weights, max_iter=max_iter, dtype=dtype)
    predicted = predict(scale(x_test), weights)
    return {"test_top1": top1(predicted, y_test), "test_mean_class_acc": mean_class_accuracy(predicted, y_test),
            "val_top1": val_top1, "l2": l2, "lbfgs_unconverged": float(unconverged + (not converged))}


class Fit(NamedTuple):
    """A logistic-regression solution: weights (W [K, D], b [K]) and whether L-BFGS reached the gradient tolerance."""

    weights: tuple[torch.Tensor, torch.Tensor]
    converged: bool


def fit_logistic(x: torch.Tensor, y: torch.Tensor, num_classes: int, l2: float, *,
                 init: tuple[torch.Tensor, torch.Tensor] | None = None, max_iter: int = 1000, dtype: torch.dtype | None = None) -> Fit:
    """(W [K, D], b [K]) in `dtype` minimising mean cross-entropy + l2/2·‖W‖² by full-batch L-BFGS (strong Wolfe) on x's device.

    Objective and gradient are computed in `dtype` (x is cast once; float64 matches scikit-learn's precision). L-BFGS runs on diagonally preconditioned variables
    (each column of W and the bias scaled by the square root of a bound on its curvature), so a strong l2 or features of
    very different scales do not stall it. It stops when every entry of the gradient of W and b is at most TOLERANCE
    (scikit-learn's `tol`, scipy's `pgtol`; checked on the scaled gradient with the strictest scale), when the dtype can
    resolve no further progress (FTOL_EPS), or after `max_iter` iterations; ending above TOLERANCE warns. A cold start begins
    at W = 0 with the bias that is optimal there (log class frequencies); `dtype` None is float64."""
    import torch

    x = x.to(dtype or torch.float64)
    n, d = x.shape
    if init is None:  # absent classes: as if half a sample
        w, b = x.new_zeros(num_classes, d), torch.bincount(y, minlength=num_classes).to(x).clamp_min(0.5).div(n).log()
    else:
        w, b = init[0].to(x.dtype), init[1].to(x.dtype)
    onehot = torch.nn.functional.one_hot(y, num_classes).to(x.dtype)
    # softmax curvature is at most 1/4 per logit: W[:, j] has at most l2 + mean(x_j²)/4, the bias 1/4
    scale_w, scale_b = (l2 + x.square().mean(dim=0) / 4).sqrt(), 0.5
    u, v = w * scale_w, b * scale_b  # the variables L-BFGS sees: W = u / scale_w, b = v / scale_b
    optimizer = torch.optim.LBFGS([u, v], lr=1, max_iter=max_iter, max_eval=2 * max_iter, history_size=HISTORY,
                                  tolerance_grad=TOLERANCE / max(scale_w.max().item(), scale_b), tolerance_change=FTOL_EPS * torch.finfo(x.dtype).eps,
                                  line_search_fn="strong_wolfe")

    def loss_and_gradient() -> torch.Tensor:
        w, b = u / scale_w, v / scale_b
        log_p = torch.addmm(b, x, w.T).log_softmax(dim=1)
        residual = (log_p.exp() - onehot) / n  # d(mean cross-entropy)/d(logits)
        gradients[:] = residual.T @ x + l2 * w, residual.sum(dim=0)
        u.grad, v.grad = gradients[0] / scale_w, gradients[1] / scale_b
        return -(log_p * onehot).sum() / n + 0.5 * l2 * w.square().sum()

    gradients = [None, None]
    with subnormals_flushed(x.device):
        optimizer.step(loss_and_gradient)
        loss_and_gradient()  # the gradient at the solution L-BFGS returned
    largest = max(g.abs().max().item() for g in gradients)
    converged = largest <= TOLERANCE
    if not converged:
        iterations = optimizer.state[u].get("n_iter", 0)
        warnings.warn(f"linear probe: L-BFGS stopped at l2={l2:g} after {iterations} iterations (max_iter={max_iter}) with "
                      f"max|gradient| {largest:.2g} > tolerance {TOLERANCE:g}; raise max_iter, or standardize the features",
                      UnconvergedWarning, stacklevel=2)
    return Fit((u / scale_w, v / scale_b), converged)


class UnconvergedWarning(UserWarning):
    """L-BFGS stopped before reaching its gradient tolerance (scikit-learn's ConvergenceWarning)."""


@contextlib.contextmanager
def subnormals_flushed(device: torch.device) -> Iterator[None]:
    """On the CPU, flush subnormal floats to zero, then restore torch's default (keep them).

    At weak regularisation the weights grow until many probabilities fall below 1e-38; x86 computes with such subnormal
    numbers several times slower (a 4× slower fit measured at l2 = 1e-6). Flushing them changes no gradient by more than 1e-38.
    """
    import torch

    flushing = device.type == "cpu" and torch.set_flush_denormal(True)
    try:
        yield
    finally:
        if flushing:
            torch.set_flush_denormal(False)


def predict(x: torch.Tensor, weights: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Predicted class of every row."""
    import torch

    w, b = weights
    return torch.addmm(b, x.to(w.dtype), w.T).argmax(dim=1)


class Standardizer:
    """Zero mean, unit variance per feature, with the statistics of the data it was built on (constant features: scale 1)."""

    def __init__(self, x: torch.Tensor, enabled: bool = True):
        import torch

        self.mean = x.mean(dim=0) if enabled else x.new_zeros(x.shape[1])
        std = x.std(dim=0, correction=0) if enabled else x.new_ones(x.shape[1])
        self.std = torch.where(std > 1e-6 * std.max().clamp_min(1e-30), std, torch.ones_like(std))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def to_device(x: np.ndarray, y: np.ndarray, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Features as float32 and labels as int64 tensors on `device`."""
    import torch

    return torch.as_tensor(x, dtype=torch.float32, device=device), torch.as_tensor(y, dtype=torch.int64, device=device)
