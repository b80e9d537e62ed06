"""Metric-name labels of tasks and targets: the name plus non-default parameters, in characters MLflow allows."""

import dataclasses
import re
from pathlib import Path

from .cache import cache_key
from .components import Component, format_value
from .sources import Source

LABEL_CHARS = 80  # longest task or target label in a metric name; longer ones end in a digest of the spec


def clean_label(text: str) -> str:
    """Only characters MLflow allows in metric names and that read well in one: letters, digits, '_' and '-'."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_")


def bounded(label: str, spec: str) -> str:
    """`label`, or a prefix of it with a digest of `spec` when it is longer than LABEL_CHARS."""
    if len(label) <= LABEL_CHARS:
        return label
    return f"{label[:LABEL_CHARS - 9]}_{cache_key(spec)[:8]}"


def non_default(component: Component, skip: tuple[str, ...] = ()) -> dict[str, object]:
    """The component's parameters whose values differ from their declared defaults, by name, `skip` left out."""
    out = {}
    for field in dataclasses.fields(component):
        value = getattr(component, field.name)
        if field.name in skip:
            continue
        default = field.default if field.default is not dataclasses.MISSING else (
            field.default_factory() if field.default_factory is not dataclasses.MISSING else dataclasses.MISSING)
        if default is dataclasses.MISSING or format_value(value) != format_value(default):
            out[field.name] = value
    return out


def component_label(component: Component, base: str | None = None, skip: tuple[str, ...] = ()) -> str:
    """`name` plus `_<param><value>` for each non-default parameter: knn → knn, knn(k=1) → knn_k1."""
    parts = [base or component.name] + [clean_label(f"{k}{format_value(v)}") for k, v in sorted(non_default(component, skip).items())]
    return bounded(clean_label("_".join(parts)), component.spec())


def source_label(source: Source) -> str:
    """A target's part of metric names: its label() (e.g. synthetic_heldout), the last folder of its root for file
    sources (image_folder(root='/data/sun397') → image_folder_sun397), then its non-default parameters other than
    location ones (root, download, ...), those the label already names and those the source's `label_params` list."""
    base = source.label()
    location = tuple(getattr(source, "location_params", ()))
    if "root" in location:
        base += "_" + Path(str(source.root)).expanduser().resolve().name
    named = tuple(k for k, v in source.params().items() if isinstance(v, str) and clean_label(v) and clean_label(v) in base.split("_"))
    return component_label(source, clean_label(base), skip=location + named + tuple(source.label_params))


# MLflow's chart view groups charts into sections by the text before the first '/', custom sections in alphabetical order,
# then 'Model metrics' (names without '/'), then 'System metrics'. transferlab's names (and every record made before this
# rule) stay dotted everywhere in code, reports and studies; only the name MLflow stores changes, here and in `canonical`.
SECTIONED = ("pretrain.", "transfer.")  # the results compared across runs; search bookkeeping keeps its names
DIAGNOSTICS = ("images_per_s", "lr", "epoch", "l2", "unconverged")  # explain a run rather than rank it (name endings)


def stored(name: str) -> str:
    """The name MLflow stores for metric `name`: the last '.' of a pretraining or transfer result becomes '/', so its
    section is the task on a target (`transfer.knn.synthetic_heldout/test_top1`) or `pretrain`; diagnostics stay dotted
    and gather after the results, in MLflow's 'Model metrics' section."""
    if "/" in name or not name.startswith(SECTIONED) or name.endswith(DIAGNOSTICS):
        return name
    head, tail = name.rsplit(".", 1)
    return f"{head}/{tail}"


def canonical(name: str) -> str:
    """The name code and reports use for a stored metric name (the inverse of `stored`; a dotted name, as records made
    before sections hold, is its own); MLflow's system metrics keep theirs."""
    return name if name.startswith("system/") else name.replace("/", ".")
