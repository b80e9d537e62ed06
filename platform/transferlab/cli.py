"""The `transferlab` command line: a thin layer over the library."""

import functools
import json
import os
import shlex
import sys
from pathlib import Path

import click
import numpy as np
from rich.columns import Columns
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from . import __version__
from . import policies as parse_policies
from . import source as parse_source
from .cache import CACHE_ENV, CLEARABLE, KEPT, cache_root, check_clearable, clear, usage
from .components import signature
from .defaults import DEFAULTS, SEARCH_DEFAULTS, STUDY_DEFAULTS
from .errors import SpecError, TransferlabError
from .plugins import get_registry
from .policy import make_manifest
from .registry import KIND_HOOKS
from .specs import excerpt
from .subset import seed_value

console = Console()


class CLI(click.Group):
    """Click group that turns user errors into one line on stderr and exit code 2."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except TransferlabError as exc:
            if getattr(exc, "results", None):  # some transfer tasks failed: the others' results are printed all the same
                print_summary(exc.runs, exc.results)
            click.echo(error_line(exc), err=True)
            ctx.exit(2)
        except KeyboardInterrupt:
            click.echo(interrupted_line(ctx.invoked_subcommand), err=True)
            ctx.exit(130)
        except OSError as exc:  # a file the user named that cannot be written or read (--save, --out)
            click.echo(error_line(f"{excerpt(str(exc.filename or ''))}: {exc.strerror or exc}".lstrip(": ")), err=True)
            ctx.exit(2)
        except Exception as exc:
            if not store_away(exc):
                raise
            import mlflow

            from .tracking import store_problem

            click.echo(error_line(f"the MLflow tracking store {mlflow.get_tracking_uri()} stopped answering ({store_problem(exc)}); "
                                  "what was done is kept: rerun the same command when it answers again (finished runs are reused, "
                                  "stopped ones resume)"), err=True)
            ctx.exit(2)


RESUMING_COMMANDS = ("pretrain", "transfer", "run", "study", "search")  # commands whose rerun reuses and resumes runs


def interrupted_line(command: str | None) -> str:
    """What Ctrl-C ends with: one line; for a command that makes runs, how to resume it (the same command again)."""
    if command not in RESUMING_COMMANDS:
        return "Interrupted."
    again = "the same `mlflow run` command" if os.environ.get("MLFLOW_RUN_ID") else " ".join(map(shell_word, ["transferlab", *sys.argv[1:]]))
    return (f"Interrupted: what finished is kept. To resume, rerun {again} (finished runs are reused, the stopped one resumes "
            "from its last checkpoint).").encode("utf-8", "backslashreplace").decode("utf-8")


def shell_word(arg: str) -> str:
    """An argument as a shell reads it back: bare if it can be, else in double quotes when that needs no escapes (spec
    strings hold single quotes), else single-quoted."""
    if "'" in arg and not any(c in arg for c in "\"$`\\!"):
        return f'"{arg}"'
    return shlex.quote(arg)


def store_away(exc: BaseException) -> bool:
    """Whether `exc` is the tracking store failing (only then is tracking imported, which keeps the CLI's start fast)."""
    return "transferlab.tracking" in sys.modules and sys.modules["transferlab.tracking"].store_failure(exc)


def error_line(exc: TransferlabError | str) -> str:
    """What the CLI prints for a user error: `Error: ...`, with surrogates (bytes from argv that are not UTF-8) escaped,
    since a strict stream cannot write them."""
    return f"Error: {exc}".encode("utf-8", "backslashreplace").decode("utf-8")


class Seed(click.ParamType):
    """A seed: an integer in 0..2**63-1; whole numbers written as floats, such as 1.0 (what an MLflow Project's float
    parameter passes), count too, read exactly."""

    name = "integer"

    def convert(self, value, param, ctx):
        try:
            return seed_value(value)
        except SpecError:
            self.fail(f"{excerpt(str(value))} is not a whole number >= 0 below 2**63 (a seed such as 0, 1 or 1.0)", param, ctx)


SEED = Seed()


class Count(click.ParamType):
    """A whole number of at least `low`; 24.0 counts as 24 (MLflow Projects pass float parameters so)."""

    name = "integer"

    def __init__(self, low: int = 1):
        self.low = low

    def convert(self, value, param, ctx):
        try:
            number = float(value)
            if number.is_integer() and number >= self.low:
                return int(number)
        except (TypeError, ValueError, OverflowError):
            pass
        self.fail(f"{excerpt(str(value))} is not a whole number >= {self.low}", param, ctx)


RANKED_COMMANDS = ("pretrain", "run", "study")  # the commands that train with several processes under torchrun


def several_processes() -> bool:
    """Whether torchrun started this process as one of several ($WORLD_SIZE > 1; read without importing torch)."""
    return os.environ.get("WORLD_SIZE", "1").strip() not in ("", "0", "1")


def ranked(command):
    """Under torchrun with several processes, rank 0 runs the command (and records everything) while the other ranks
    train alongside it (`pipeline.follow`) and then exit; alone, the command just runs."""
    @functools.wraps(command)
    def run(*args, **kwargs):
        if not several_processes():
            return command(*args, **kwargs)
        from . import distributed
        from .pipeline import follow

        distributed.start()
        if not distributed.is_main():
            follow()
        else:
            with distributed.leading():
                command(*args, **kwargs)
        distributed.stop()
    return run


@click.group(cls=CLI)
@click.version_option(__version__, prog_name="transferlab")
@click.pass_context
def cli(ctx: click.Context):
    """transferlab: pretrain on subsets of a labelled source, measure how features transfer."""
    if several_processes() and ctx.invoked_subcommand not in RANKED_COMMANDS:
        raise click.UsageError(f"`transferlab {ctx.invoked_subcommand}` runs in one process; under torchrun with several processes only "
                               f"{', '.join(RANKED_COMMANDS)} run (they train with DistributedDataParallel)")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def plugins(as_json: bool):
    """List every registered component (kind, name, plugin, parameters), then the registrations refused and why (exit 0)."""
    registry = get_registry()
    rows = [
        {"kind": e.kind, "name": e.name, "plugin": e.plugin, "signature": signature(e.cls),
         "doc": (e.cls.__doc__ or "").strip().splitlines()[0] if e.cls.__doc__ else ""}
        for e in registry.entries()
    ]
    problems = [{"kind": p.kind, "name": p.name, "plugins": list(p.plugins), "problem": p.message} for p in registry.problems()]
    if as_json:
        click.echo(json.dumps(rows + problems, indent=1))
        return
    for kind in dict.fromkeys(r["kind"] for r in rows):
        table = Table(title=KIND_HOOKS[kind].removeprefix("register_"), title_justify="left")  # the plural: policies, studies
        table.add_column("name", no_wrap=True, style="bold")
        table.add_column("plugin", no_wrap=True)
        table.add_column("parameters / description")
        for r in rows:
            if r["kind"] == kind:
                table.add_row(r["name"], r["plugin"], f"{escape(r['signature'])}\n[dim]{escape(r['doc'])}[/]")
        console.print(table)
    if problems:
        table = Table("kind", "name", "plugins", "problem", title=f"problems: {len(problems)} registrations refused (their names cannot be used)",
                      title_justify="left", title_style="bold red")
        for p in problems:
            table.add_row(p["kind"], p["name"] or "-", ", ".join(p["plugins"]), escape(p["problem"]))
        console.print(table)


@cli.command()
@click.option("--source", "source_spec", default="synthetic", show_default=True, help="Source spec, e.g. synthetic or image_folder(root='data').")
@click.option("--policy", "policy_spec", default="all", show_default=True, help="Policy chain, e.g. \"random_classes(k=10) | images_per_class(n=25)\".")
@click.option("--seed", default=0, show_default=True, type=SEED, help="Seed of every random choice.")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest summary as JSON.")
@click.option("--save", type=click.Path(file_okay=False, path_type=Path), help="Also write manifest.json and manifest.npz here.")
def subset(source_spec: str, policy_spec: str, seed: int, as_json: bool, save: Path | None):
    """Apply a policy chain to a source's training split: class count, per-class counts, digest."""
    chain = parse_policies(policy_spec)
    src = parse_source(source_spec)
    manifest = make_manifest(src, chain, seed)
    if save:
        manifest.save(save)
    summary = manifest.summary()
    if as_json:
        click.echo(json.dumps(summary | {"skipped_files": list(src.index.skipped), "duplicate_files": list(src.index.duplicates)}, indent=1))
        return
    counts = manifest.class_counts()
    console.print(f"[bold]source[/] {escape(summary['source'])}\n[bold]policy[/] {escape(summary['policy'])}   [bold]seed[/] {seed}")
    console.print(f"[bold]{summary['num_classes']}[/] classes, [bold]{summary['num_samples']}[/] training images "
                  f"(per class min {counts.min()}, median {int(sorted(counts)[len(counts) // 2])}, max {counts.max()})")
    console.print(Columns([escape(f"{c['name']}: {c['count']}") for c in summary["classes"]], equal=True))
    if src.index.skipped:
        console.print(f"[yellow]skipped {len(src.index.skipped)} unreadable files:[/] {escape(', '.join(src.index.skipped[:10]))}")
    if src.index.duplicates:
        console.print(f"[yellow]dropped {len(src.index.duplicates)} duplicate files (links to, or byte-identical copies of, an indexed "
                      f"file; never in two splits):[/] {escape(', '.join(src.index.duplicates[:5]))}")
    console.print(f"[bold]digest[/] {summary['digest']}")


@cli.command()
@click.argument("source_spec", default="synthetic")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="PNG to write (default: <source>-classes.png).")
@click.option("--split", default="train", show_default=True, type=click.Choice(["train", "val", "test"]))
@click.option("--size", default=64, show_default=True, help="Tile size in pixels.")
def show(source_spec: str, out: Path | None, split: str, size: int):
    """Write a contact sheet: one image per class, labelled."""
    from .contact_sheet import contact_sheet

    src = parse_source(source_spec)
    out = out or Path(f"{src.name}-classes.png")
    contact_sheet(src, out, split=split, tile=size)
    click.echo(f"wrote {out} ({src.index.num_classes} classes)")


def class_list_source(classes: str | None, source_spec: str | None) -> str:
    """The source spec behind `--classes NAME` (a class list without images) or `--source SPEC`."""
    if (classes is None) == (source_spec is None):
        raise click.UsageError("give exactly one of --classes NAME (e.g. imagenet-1k) or --source SPEC")
    return source_spec or f"class_list({classes!r})"


@cli.command()
@click.option("--classes", "class_list", help="A class list without images, e.g. imagenet-1k or imagenet-21k.")
@click.option("--source", "source_spec", help="Or any source spec.")
@click.option("--policy", "policy_spec", default="all", show_default=True, help="Policy chain to apply to the classes.")
@click.option("--seed", default=0, show_default=True, type=SEED)
@click.option("--json", "as_json", is_flag=True, help="Print {original: new} class ids plus names as JSON.")
def classes(class_list: str | None, source_spec: str | None, policy_spec: str, seed: int, as_json: bool):
    """Map a source's classes through a policy chain (no images needed): original class → new class."""
    chain = parse_policies(policy_spec)
    src = parse_source(class_list_source(class_list, source_spec))
    manifest = make_manifest(src, chain, seed)
    mapping = manifest.summary()["class_map"]
    names = dict(zip(src.index.classes, src.index.class_names)) | dict(zip(manifest.classes, manifest.class_names))
    if as_json:
        click.echo(json.dumps({"source": manifest.source, "policy": manifest.policy, "num_classes": manifest.num_classes,
                               "mapping": mapping, "names": {c: names[c] for c in sorted(set(mapping) | set(mapping.values()))}}, indent=1))
        return
    members = np.bincount(manifest.class_map[manifest.class_map >= 0], minlength=manifest.num_classes)
    table = Table("new class", "name", "source classes", title=f"{src.index.num_classes} → {manifest.num_classes} classes: {escape(manifest.policy)}")
    for new in np.argsort(-members, kind="stable"):
        table.add_row(escape(manifest.classes[new]), escape(manifest.class_names[new]), str(members[new]))
    console.print(table)


@cli.command()
@click.option("--classes", "class_list", help="A class list without images, e.g. imagenet-1k.")
@click.option("--source", "source_spec", help="Or any source spec, e.g. synthetic.")
@click.option("--depth", type=click.IntRange(min=0), help="Show nodes down to this depth only.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Also write an icicle chart PNG here.")
def tree(class_list: str | None, source_spec: str | None, depth: int | None, out: Path | None):
    """Print a source's class tree (children largest first), optionally as an image."""
    from .tree_view import icicle_png, rich_tree

    src = parse_source(class_list_source(class_list, source_spec))
    console.print(rich_tree(src.tree, depth, src.index.class_counts() if src.has_images else None))
    if out:
        icicle_png(src.tree, out, depth, title=src.spec())
        click.echo(f"wrote {out}")


@cli.command()
@click.option("--clear", "kinds", multiple=True, metavar="FOLDER",
              help=f"Delete a cache folder ({', '.join(CLEARABLE)}, or one a plugin registered); repeatable.")
@click.option("--json", "as_json", is_flag=True, help="Print the folders as JSON.")
def cache(kinds: tuple[str, ...], as_json: bool):
    """Show what the cache folder holds (files, disk used), or clear parts of it; cleared caches are rebuilt when needed."""
    holds = CLEARABLE | KEPT | {c.name: f"{c.holds} (plugin {c.plugin})" for c in get_registry().caches().values()}
    clearable = [*CLEARABLE, *get_registry().caches()]
    for kind in kinds:  # every one checked before any is deleted
        check_clearable(kind, clearable)
    for kind in kinds:
        files, freed = clear(kind, clearable)
        click.echo(f"cleared {kind}: {files} files, {freed / 2**20:,.1f} MiB", err=as_json)
    root = cache_root()
    rows = [{"folder": p.name, "holds": holds.get(p.name, ""), **dict(zip(("files", "disk_bytes", "bytes"), usage(p)))}
            for p in sorted(root.iterdir() if root.is_dir() else []) if p.is_dir()]
    total = {key: sum(r[key] for r in rows) for key in ("files", "disk_bytes", "bytes")}
    if as_json:
        click.echo(json.dumps({"root": str(root), "folders": rows, "total": total}, indent=1))
        return
    table = Table("folder", "holds", "files", "on disk", "size", title=f"cache: {escape(str(root))}  (${CACHE_ENV})", title_justify="left",
                  show_footer=True)
    for r in rows:
        table.add_row(r["folder"], escape(r["holds"]), str(r["files"]), mib(r["disk_bytes"]), mib(r["bytes"]))
    for column, footer in zip(table.columns, ("total", "", str(total["files"]), mib(total["disk_bytes"]), mib(total["bytes"]))):
        column.footer = footer
    console.print(table)


def mib(n: int) -> str:
    """Bytes as the cache table shows them."""
    return f"{n / 2**20:,.1f} MiB"


def pretrain_options(command):
    """The options that define a pretraining run, shared by `pretrain` and `run`."""
    options = [
        click.option("--source", default=DEFAULTS["source"], show_default=True, help="Pretraining source spec."),
        click.option("--policy", default=DEFAULTS["policy"], show_default=True, help="Subset policy chain, e.g. \"images_per_class(n=20)\"."),
        click.option("--backbone", default=DEFAULTS["backbone"], show_default=True, help="Backbone spec, e.g. \"timm(model='resnet18')\"."),
        click.option("--training", default=DEFAULTS["training"], show_default=True, help="Training recipe, e.g. \"train(epochs=5, lr=0.05)\"."),
        click.option("--seed", default=DEFAULTS["seed"], show_default=True, type=SEED, help="Seed of the subset and the training (1.0 counts as 1)."),
        click.option("--experiment", help="MLflow experiment (default 'transferlab'; under `mlflow run`, the project run's)."),
        NO_WAIT,
    ]
    for option in reversed(options):
        command = option(command)
    return command


NO_WAIT = click.option("--no-wait", is_flag=True, help="Fail instead of waiting when another process is running the same run.")


def transfer_options(command):
    """The options that define a transfer measurement, shared by `transfer` and `run`."""
    command = click.option("--tasks", default=DEFAULTS["tasks"], show_default=True, help="Transfer tasks, a `|` chain.")(command)
    return click.option("--target", default=DEFAULTS["target"], show_default=True, help="Target source spec.")(command)


@cli.command()
@pretrain_options
@ranked
def pretrain(source: str, policy: str, backbone: str, training: str, seed: int, experiment: str | None, no_wait: bool):
    """Pretrain a backbone on a subset, tracked in MLflow; an identical finished run is reused, a killed one resumed."""
    from .pipeline import pretrain_metrics, pretrain_run

    run_id = pretrain_run(source, policy, backbone, training, seed, experiment, wait=not no_wait)
    print_summary({"pretraining run": run_id}, pretrain_metrics(run_id))
    console.print(f"measure it: transferlab transfer {run_id}  (or mlflow run . -e transfer -P run_id={run_id})", soft_wrap=True)


@cli.command()
@click.argument("run_id")
@transfer_options
@NO_WAIT
def transfer(run_id: str, target: str, tasks: str, no_wait: bool):
    """Measure how a finished pretraining run's features transfer to a target; results are child runs of it. RUN_ID is the
    pretraining run's id or that of the run that asked for it (a main run, the run of `mlflow run -e pretrain`)."""
    from .pipeline import pretraining_run_of, transfer_run

    metrics = transfer_run(run_id, target, tasks, wait=not no_wait)
    print_summary({"pretraining run": pretraining_run_of(run_id)}, metrics)


@cli.command()
@pretrain_options
@transfer_options
@ranked
def run(source: str, policy: str, backbone: str, training: str, seed: int, experiment: str | None, no_wait: bool, target: str, tasks: str):
    """The main job (what `mlflow run .` runs): pretrain, then measure transfer."""
    from .pipeline import main_run

    result = main_run(source, policy, backbone, training, seed, target, tasks, experiment, wait=not no_wait)
    print_summary({"main run": result.main_run, "pretraining run": result.pretrain_run}, result.metrics)


@cli.command()
@click.argument("study")
@click.option("--source", default=DEFAULTS["source"], show_default=True, help="Pretraining source spec.")
@click.option("--target", "targets", multiple=True, default=[DEFAULTS["target"]], show_default=True,
              help="Target source spec (`SOURCE | POLICY ...` for a part of one); repeat for several.")
@click.option("--backbone", default=DEFAULTS["backbone"], show_default=True, help="Backbone spec.")
@click.option("--training", default=STUDY_DEFAULTS["training"], show_default=True,
              help="Training recipe of every cell; steps hold the length fixed across cells, epochs scale it with the subset.")
@click.option("--seeds", default=STUDY_DEFAULTS["seeds"], show_default=True, type=SEED, help="Seeds per cell: 0..N-1 (1..100; 2.0 counts as 2).")
@click.option("--tasks", default=DEFAULTS["tasks"], show_default=True, help="Transfer tasks, a `|` chain.")
@click.option("--experiment", help="MLflow experiment (default '<study> study'; under `mlflow run`, the project run's).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Report folder (default ./reports/<study>-<run id>).")
@click.option("--dry-run", is_flag=True, help="Print the grid (cells, images, images seen) and stop: no run, no image.")
@NO_WAIT
@ranked
def study(study: str, source: str, targets: tuple[str, ...], backbone: str, training: str, seeds: int, tasks: str,
          experiment: str | None, out: Path | None, dry_run: bool, no_wait: bool):
    """Run a study (e.g. images_per_class): its grid of pretraining cells × seeds, each measured on its targets, then a report."""
    if dry_run:
        from .pipeline import parse_training
        from .study_grid import grid_table

        console.print(grid_table(get_registry().parse("study", study), parse_source(source), targets[0], parse_training(training), seeds))
        return
    from .study_runs import StudyPlan, run_study

    plan = StudyPlan.parse(study, source, targets, backbone, training, seeds, tasks)
    result = run_study(plan, experiment, out=out, wait=not no_wait)
    console.print(f"[bold]study run[/] {result.study_run}  ({len(result.cell_runs)} cell runs)")
    print_report(result.report)


@cli.command()
@click.option("--source", default=DEFAULTS["source"], show_default=True, help="Pretraining source spec.")
@click.option("--target", default=DEFAULTS["target"], show_default=True, help="Target source spec (`SOURCE | POLICY ...` for a part of one).")
@click.option("--budget", type=Count(), required=True, help="Pretraining images every trial spends (classes × images per class).")
@click.option("--trials", default=SEARCH_DEFAULTS["trials"], show_default=True, type=Count(),
              help="Trials the search ends with (a rerun with the same --name runs only the missing ones).")
@click.option("--name", default="search", show_default=True, help="The Optuna study (and MLflow search run) name; rerun it to continue.")
@click.option("--storage", default=None, help="Optuna storage URL (default sqlite:///optuna.db; postgresql+psycopg2://USER@HOST/DB for --workers > 1).")
@click.option("--workers", default=1, show_default=True, type=Count(), help="Worker processes running trials in parallel.")
@click.option("--objective", default=SEARCH_DEFAULTS["objective"], show_default=True,
              help="'score' (val score ↑), or with costs ↓ for a Pareto search: score,images_seen or score,images_seen,seconds.")
@click.option("--sampler", default=SEARCH_DEFAULTS["sampler"], show_default=True, type=click.Choice(["tpe", "random", "nsga2"]))
@click.option("--pruner", default=SEARCH_DEFAULTS["pruner"], show_default=True, type=click.Choice(["median", "hyperband", "none"]),
              help="Stops weak trials from a kNN score on target val after each evaluation (one objective only).")
@click.option("--space", default=SEARCH_DEFAULTS["space"], show_default=True, help="Search space spec, e.g. \"allocation(steps=(100, 300))\".")
@click.option("--backbone", default=DEFAULTS["backbone"], show_default=True, help="Backbone spec.")
@click.option("--training", default=SEARCH_DEFAULTS["training"], show_default=True, help="Training recipe of every trial.")
@click.option("--task", default=SEARCH_DEFAULTS["task"], show_default=True, help="The transfer task that scores a trial (on target val).")
@click.option("--seed", default=0, show_default=True, type=SEED, help="Seed of every trial's subset and weights, and of the sampler.")
@click.option("--best", default=SEARCH_DEFAULTS["best"], show_default=True, type=Count(),
              help="Best trials measured once on the target's test split at the end.")
@click.option("--experiment", help="MLflow experiment (default '<name> search'; under `mlflow run`, the project run's).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Report folder (default ./reports/search-<name>).")
@click.option("--dry-run", is_flag=True, help="Print the search space and stop: no run, no trial.")
def search(source: str, target: str, budget: int, trials: int, name: str, storage: str | None, workers: int, objective: str, sampler: str,
           pruner: str, space: str, backbone: str, training: str, task: str, seed: int, best: int, experiment: str | None, out: Path | None,
           dry_run: bool):
    """Search how to spend a pretraining budget (classes × images, which classes, labels) with Optuna; each trial is a
    tracked pretraining + transfer, pruned early when weak; the best are measured on test at the end."""
    from .search_plan import SearchArgs, SearchPlan
    from .search_storage import DEFAULT_STORAGE

    args = SearchArgs(name, source, target, budget, trials, space, backbone, training, task, objective, sampler, pruner, seed,
                      storage or DEFAULT_STORAGE, workers, best)
    plan = SearchPlan.parse(args)
    if out and not dry_run:  # a folder the report cannot be written to fails now, not after every trial
        out.mkdir(parents=True, exist_ok=True)
        if not os.access(out, os.W_OK):
            raise PermissionError(13, "Permission denied", str(out))
    if dry_run:
        from .search_view import space_table

        console.print(space_table(plan))
        return
    from .search_runs import run_search

    result = run_search(plan, experiment, out=out)
    console.print(f"[bold]search run[/] {result.search_run}  (Optuna study {escape(result.study)} in {escape(result.storage)})")
    print_report(result.report)


@cli.command()
@click.argument("run_id")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Report folder (default ./reports/<study>-<run id>).")
def report(run_id: str, out: Path | None):
    """Write a study run's report (CSV, Markdown table, PNG figures), also logged as the run's `report/` artifacts."""
    from .study_runs import write_study_report

    print_report(write_study_report(run_id, out))


def print_report(files) -> None:
    """The report's Markdown table, then where its files are."""
    for path in files:
        if path.suffix == ".md":
            console.print(escape(path.read_text()), soft_wrap=True)
    for path in files:
        console.print(f"wrote {escape(str(path))}")


def print_summary(runs: dict[str, str], metrics: dict[str, float]) -> None:
    """Run ids, key metrics and how to look at them in the MLflow UI."""
    import mlflow

    for role, run_id in runs.items():
        console.print(f"[bold]{role}[/] {run_id}")
    console.print("[bold]results[/]")
    for name in sorted(metrics):  # value first and never wrapped: metric names are long, and copied into searches
        console.print(f"{metrics[name]:>10.4g}  {escape(name)}", soft_wrap=True)
    uri = mlflow.get_tracking_uri()
    if uri.startswith(("http://", "https://")):
        console.print(f"MLflow UI: {escape(uri)}  (runs: Experiments → the experiment → Chart view to compare)")
    else:
        console.print(f"MLflow UI: [bold]mlflow ui --backend-store-uri {escape(uri)}[/], then open http://127.0.0.1:5000")


def main():
    """Console-script entry point."""
    cli(prog_name="transferlab")


if __name__ == "__main__":
    sys.exit(main())
