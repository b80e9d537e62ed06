"""`transferlab search --dry-run`: the search space on this source and budget, as a table."""

from rich.markup import escape
from rich.table import Table


def space_table(plan) -> Table:
    """Every parameter the space draws, its range and what it sets, with the search's fixed settings in the caption."""
    table = Table("parameter", "range", "what it sets", title=f"search {escape(plan.args.name)}: {escape(plan.space.spec())} on "
                  f"{escape(plan.source.label())}, budget {plan.args.budget} images", title_justify="left")
    for row in plan.space.describe(plan.context):
        table.add_row(*map(escape, row))
    a = plan.args
    table.caption = escape(f"{a.trials} trials · objective {a.objective} on {plan.target.target.label()} val by {plan.task.spec()} · "
                           f"sampler {a.sampler} · pruner {a.pruner} · storage {a.storage} · {a.workers} worker(s)")
    return table
