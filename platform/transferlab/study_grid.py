"""The dry-run grid of a study: its cells, the images each trains on and sees, and the runs it would start (manifests only)."""

from rich.markup import escape
from rich.table import Table

from .sources import Source
from .studies import Estimate, Study, estimate, pretraining_runs
from .training_spec import Training


def grid(study: Study, source: Source, target: str, training: Training) -> list[Estimate]:
    """The study's checked cells on `source`, each with its estimate; every policy builds its manifest, no image is read."""
    return estimate(study.checked_cells(source, target), source, training)


def grid_table(study: Study, source: Source, target: str, training: Training, seeds: int) -> Table:
    """The grid as a table: group, label, policy, classes, images, images seen and targets per cell, runs in the caption."""
    rows = grid(study, source, target, training)
    cells = [row.cell for row in rows]
    length = f"{training.steps:,} steps" if training.length == "steps" else f"{training.epochs} epochs"
    table = Table("group", "label", "policy", "classes", "images", "images seen", "targets",
                  title=f"study {escape(study.spec())} on {escape(source.spec())}", title_justify="left",
                  caption=f"{pretraining_runs(cells, seeds)} pretraining runs ({sum(c.trains for c in cells)} rows × {seeds} seeds; "
                          f"the random-init floor trains nothing); {length} of batch {training.batch_size} per run", caption_justify="left")
    for column in table.columns:
        if column.header in ("classes", "images", "images seen"):
            column.justify = "right"
    for row in rows:
        cell = row.cell
        table.add_row(escape(cell.group or "—"), escape(cell.label), escape(cell.policy), f"{row.classes:,}",
                      f"{row.images:,}" if cell.trains else "—", f"{row.images_seen:,}", escape("\n".join(cell.targets)))
    return table
