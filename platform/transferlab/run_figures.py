"""The pictures a pretraining run carries for people: its learning curve and a contact sheet of the subset it trained on."""

import tempfile
from pathlib import Path

from matplotlib.figure import Figure
from rich.console import Console
from rich.markup import escape

from . import tracking
from .contact_sheet import contact_sheet
from .policy import chain_spec
from .subset_source import SubsetSource

LEARNING_CURVE, CONTACT_SHEET = "figures/learning_curve.png", "figures/contact_sheet.png"  # artifact paths
SHEET_MAX_CLASSES = 2500  # beyond this a sheet is too large to look at (ImageNet-21k: 21,841 tiles); none is drawn
DPI = 100

console = Console(stderr=True)


def log_figures(run_id: str, spec) -> None:
    """Log the learning curve and the subset's contact sheet to pretraining run `run_id` (a `PretrainSpec`). A picture
    that cannot be drawn (say, an unreadable image) is reported in one line and skipped: it must not cost the training."""
    with tempfile.TemporaryDirectory() as tmp:
        for path, draw in ((LEARNING_CURVE, lambda out: learning_curve(run_id, out)), (CONTACT_SHEET, lambda out: subset_sheet(spec, out))):
            out = Path(tmp) / Path(path).name
            try:
                if draw(out):
                    tracking.client().log_artifact(run_id, str(out), str(Path(path).parent))  # by id: never a fluent run
            except Exception as exc:
                if tracking.store_failure(exc):
                    raise
                console.print(f"[yellow]no {escape(path)} for run {run_id}[/]: {escape(f'{type(exc).__name__}: {exc}'.splitlines()[0][:200])}")


def learning_curve(run_id: str, out: Path) -> bool:
    """Plot train loss and held-out val top-1 against optimizer steps, from the run's recorded history."""
    series = {name: sorted((m.step, m.value) for m in tracking.metric_history(run_id, name)) for name in ("pretrain.train_loss", "pretrain.val_top1")}
    if not any(series.values()):
        return False
    fig = Figure(figsize=(6.4, 3.6), dpi=DPI, layout="constrained")
    loss_axes = fig.add_subplot()
    val_axes = loss_axes.twinx()
    for axes, name, colour, label in ((loss_axes, "pretrain.train_loss", "tab:blue", "train loss"),
                                      (val_axes, "pretrain.val_top1", "tab:orange", "val top-1 (%)")):
        if series[name]:
            steps, values = zip(*series[name])
            axes.plot(steps, values, marker="o", markersize=3, color=colour, label=label)
        axes.set_ylabel(label, color=colour)
    loss_axes.set_xlabel("optimizer steps")
    loss_axes.set_title(tracking.get_run(run_id).info.run_name[:90], fontsize=9)
    fig.savefig(out, format="png")
    return True


def subset_sheet(spec, out: Path) -> bool:
    """One labelled image of every class of the subset (its classes after the policy chain, e.g. merged ones)."""
    subset = SubsetSource(spec.source.spec(), chain_spec(spec.policies), spec.seed)
    if subset.index.num_classes > SHEET_MAX_CLASSES:
        return False
    contact_sheet(subset, out, split="train", tile=64 if subset.index.num_classes <= 400 else 32)
    return True
