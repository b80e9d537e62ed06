"""The `transferlab` command line: a thin layer over the library."""

import json
import sys
from pathlib import Path

import click
import numpy as np
from rich.columns import Columns
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from . import policies as parse_policies
from . import source as parse_source
from .components import signature
from .errors import TransferlabError
from .plugins import get_registry
from .policies import make_manifest

console = Console()


class CLI(click.Group):
    """Click group that turns user errors into one line on stderr and exit code 2."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except TransferlabError as exc:
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(2)


@click.group(cls=CLI)
@click.version_option(package_name="transferlab")
def cli():
    """transferlab: pretrain on subsets of a labelled source, measure how features transfer."""


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def plugins(as_json: bool):
    """List every registered component: kind, name, plugin, parameters."""
    rows = [
        {"kind": e.kind, "name": e.name, "plugin": e.plugin, "signature": signature(e.cls),
         "doc": (e.cls.__doc__ or "").strip().splitlines()[0] if e.cls.__doc__ else ""}
        for e in get_registry().entries()
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=1))
        return
    for kind in dict.fromkeys(r["kind"] for r in rows):
        table = Table(title=f"{kind}s", title_justify="left")
        table.add_column("name", no_wrap=True, style="bold")
        table.add_column("plugin", no_wrap=True)
        table.add_column("parameters / description")
        for r in rows:
            if r["kind"] == kind:
                table.add_row(r["name"], r["plugin"], f"{escape(r['signature'])}\n[dim]{escape(r['doc'])}[/]")
        console.print(table)


@cli.command()
@click.option("--source", "source_spec", default="synthetic", show_default=True, help="Source spec, e.g. synthetic or image_folder(root='data').")
@click.option("--policy", "policy_spec", default="all", show_default=True, help="Policy chain, e.g. \"random_classes(k=10) | images_per_class(n=25)\".")
@click.option("--seed", default=0, show_default=True, help="Seed of every random choice.")
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
        click.echo(json.dumps(summary | {"skipped_files": list(src.index.skipped)}, indent=1))
        return
    counts = manifest.class_counts()
    console.print(f"[bold]source[/] {escape(summary['source'])}\n[bold]policy[/] {escape(summary['policy'])}   [bold]seed[/] {seed}")
    console.print(f"[bold]{summary['num_classes']}[/] classes, [bold]{summary['num_samples']}[/] training images "
                  f"(per class min {counts.min()}, median {int(sorted(counts)[len(counts) // 2])}, max {counts.max()})")
    console.print(Columns([escape(f"{c['name']}: {c['count']}") for c in summary["classes"]], equal=True))
    if src.index.skipped:
        console.print(f"[yellow]skipped {len(src.index.skipped)} unreadable files:[/] {escape(', '.join(src.index.skipped[:10]))}")
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
@click.option("--seed", default=0, show_default=True)
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
    console.print(rich_tree(src.tree, depth))
    if out:
        icicle_png(src.tree, out, depth, title=src.spec())
        click.echo(f"wrote {out}")


def main():
    """Console-script entry point."""
    cli(prog_name="transferlab")


if __name__ == "__main__":
    sys.exit(main())
