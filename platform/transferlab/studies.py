"""Studies: one of the paper's questions as a grid of pretraining cells; the Study base class, its Cell, and estimates."""

import dataclasses
from collections.abc import Iterable, Sequence
from typing import ClassVar, Literal

from .components import Component
from .errors import PluginError, SpecError
from .manifest import Manifest
from .plugins import get_registry
from .policy import Policy, chain_spec, make_manifest
from .sources import Source
from .specs import excerpt, parse_chain
from .training_spec import Training

ROLES = ("cell", "floor", "full")
FLOOR_LABEL = "random init"


@dataclasses.dataclass(frozen=True)
class Cell:
    """One pretraining setting of a study: its row label, where it sits on the axis, what it trains on and is measured on."""

    label: str  # row label in tables, e.g. "250 per class", "random init", "all 1300 per class"
    policy: str  # policy chain spec applied to the study's source, e.g. "images_per_class(n=250, take='exact')"
    targets: tuple[str, ...]  # target source specs this cell is measured on (`SOURCE` or `SOURCE | POLICY | ...`)
    value: float | None = None  # the axis value (x of the figure); None for the floor and full rows
    role: Literal["cell", "floor", "full"] = "cell"  # floor: random init, trained 0 steps; full: the whole source
    group: str = ""  # a series within the study ("bottom_up"/"top_down", "coarse"/"fine", ...): one line per group in figures

    def __post_init__(self):
        object.__setattr__(self, "targets", tuple(self.targets))  # a list from a plugin is fine; cells stay hashable
        if self.role not in ROLES:
            raise PluginError(f"study cell {self.label!r} has role {self.role!r}; roles are {', '.join(ROLES)}")

    @property
    def trains(self) -> bool:
        """Whether this row pretrains (the floor is random init)."""
        return self.role != "floor"


@dataclasses.dataclass(frozen=True)
class Study(Component):
    """A named grid of pretraining cells over one source; subclasses are frozen dataclasses whose typed fields are its knobs."""

    kind = "study"
    axis: ClassVar[str] = ""  # axis label with unit, e.g. "images per class", "number of classes"
    log_axis: ClassVar[bool] = True

    def cells(self, source: Source, target: str) -> list[Cell]:
        """The grid on `source`, floor and full rows included (see `with_references`); `target` is the user's --target spec."""
        raise NotImplementedError(f"study {self.name} does not implement cells()")

    def with_references(self, cells: Sequence[Cell], full_label: str = "full source") -> list[Cell]:
        """The floor row, `cells`, then the full-source row; both reference rows are measured on every target the cells use."""
        targets = union_targets(cells)
        floor = Cell(FLOOR_LABEL, "all", targets, role="floor")
        return [floor, *cells, Cell(full_label, "all", targets, role="full")]

    def checked_cells(self, source: Source, target: str) -> list[Cell]:
        """`cells()`, checked: Cell objects with distinct labels, one floor and one full row, targets, and policies that parse."""
        cells = list(self.cells(source, target))
        what = f"study {self.name}"
        if not all(isinstance(c, Cell) for c in cells):
            raise PluginError(f"{what}: cells() must return Cell objects")
        roles = [c.role for c in cells]
        if roles.count("floor") != 1 or roles.count("full") != 1:
            raise PluginError(f"{what}: cells() must yield exactly one floor and one full row (Study.with_references adds them)")
        labels = [c.label for c in cells]
        repeated = sorted({label for label in labels if labels.count(label) > 1})
        if repeated:
            raise PluginError(f"{what}: two cells share the label {', '.join(map(repr, repeated))}")
        untargeted = [c.label for c in cells if not c.targets]
        if untargeted:
            raise PluginError(f"{what}: cells {', '.join(map(repr, untargeted))} list no targets")
        for cell in cells:
            try:
                get_registry().parse_chain("policy", cell.policy)
            except SpecError as exc:
                raise SpecError(f"{what}: cell {cell.label!r} has an unusable policy: {exc}") from None
        return cells


def union_targets(cells: Iterable[Cell]) -> tuple[str, ...]:
    """Every target the cells use, each once, in first-use order."""
    return tuple(dict.fromkeys(t for cell in cells for t in cell.targets))


def split_target(spec: str) -> tuple[Source, list[Policy]]:
    """A target spec `SOURCE` or `SOURCE | POLICY | ...` as its source and policy chain (parsed; no data read)."""
    calls = parse_chain(spec)
    registry = get_registry()
    try:
        return registry.build("source", calls[0]), [registry.build("policy", call) for call in calls[1:]]
    except SpecError as exc:
        raise SpecError(f"target {excerpt(spec)}: {exc}") from None


def target_spec(source: Source, chain: Sequence[Policy] = ()) -> str:
    """Canonical text of a target: the source's spec, then its policy chain, if any."""
    return " | ".join([source.spec(), chain_spec(chain)]) if chain else source.spec()


@dataclasses.dataclass(frozen=True)
class Estimate:
    """What one cell costs: its classes and training images (from its manifest, seed 0), optimizer steps and images seen."""

    cell: Cell
    classes: int
    images: int
    steps: int
    images_seen: int


def images_seen(images: int, training: Training) -> int:
    """Training images a run on `images` images sees: steps × batch size, a batch being all of a subset smaller than one."""
    return training.total_steps(images) * min(training.batch_size, images)


def estimate(cells: Sequence[Cell], source: Source, training: Training, seed: int = 0) -> list[Estimate]:
    """Per cell, the number of classes and training images its manifest keeps and the images pretraining sees (the floor
    trains 0 steps); manifests only, no pixels. Classes chosen at random are those of `seed`."""
    manifests: dict[str, Manifest] = {}
    out = []
    for cell in cells:
        if cell.policy not in manifests:
            manifests[cell.policy] = make_manifest(source, get_registry().parse_chain("policy", cell.policy), seed)
        manifest = manifests[cell.policy]
        images = len(manifest.samples)
        steps = training.total_steps(images) if cell.trains else 0
        out.append(Estimate(cell, manifest.num_classes, images, steps, images_seen(images, training) if cell.trains else 0))
    return out


def pretraining_runs(cells: Sequence[Cell], seeds: int) -> int:
    """Pretraining runs a study starts: every row but the floor (random init trains nothing), once per seed."""
    return sum(cell.trains for cell in cells) * seeds
