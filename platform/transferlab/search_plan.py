"""A search as given and as checked: the spec strings a worker parses again, and the plan every spec is parsed into."""

import dataclasses

from . import policies as parse_policies
from . import source as parse_source
from .backbones import Backbone
from .cache import cache_key
from .errors import SpecError
from .pipeline import RECIPE_VERSION, PretrainSpec, TransferSpec, parse_training
from .plugins import get_registry
from .search_space import Allocation, SearchSpace, SpaceContext
from .search_storage import DEFAULT_STORAGE, check_storage, redacted
from .sources import Source
from .specs import excerpt
from .subset import seed_value
from .tasks import Task
from .training_spec import Training

OBJECTIVES = {"score": "maximize", "images_seen": "minimize", "seconds": "minimize"}
SAMPLERS = ("tpe", "random", "nsga2")
PRUNERS = ("median", "hyperband", "none")
MAX_TRIALS, MAX_WORKERS, MAX_BEST = 100_000, 64, 100


@dataclasses.dataclass(frozen=True)
class SearchArgs:
    """A search as given: the spec strings and numbers a worker process parses again."""

    name: str
    source: str
    target: str
    budget: int
    trials: int
    space: str = "allocation"
    backbone: str = "timm(model='resnet18')"
    training: str = "train(steps=200)"
    task: str = "knn"
    objective: str = "score"
    sampler: str = "tpe"
    pruner: str = "median"
    seed: int = 0
    storage: str = DEFAULT_STORAGE
    workers: int = 1
    best: int = 3


@dataclasses.dataclass(frozen=True)
class SearchPlan:
    """A search, every spec parsed and checked (source, target, space on this budget, storage) before any run exists."""

    args: SearchArgs
    source: Source
    target: TransferSpec
    space: SearchSpace
    backbone: Backbone
    training: Training
    objectives: tuple[str, ...]

    @classmethod
    def parse(cls, args: SearchArgs) -> "SearchPlan":
        """Parse and check everything; any mistake raises a one-line error here."""
        if not args.name.strip() or len(args.name) > 200 or not args.name.isprintable():
            raise SpecError(f"--name must be 1..200 printable characters (no newlines or tabs), got {excerpt(args.name)}")
        for what, value, top in (("--trials", args.trials, MAX_TRIALS), ("--workers", args.workers, MAX_WORKERS), ("--best", args.best, MAX_BEST)):
            if not 1 <= value <= top:
                raise SpecError(f"{what} must lie in 1..{top}, got {value}")
        if args.budget < 1:
            raise SpecError(f"--budget must be at least 1 image, got {args.budget}")
        objectives = tuple(o.strip() for o in args.objective.split(","))
        if not objectives or objectives[0] != "score" or len(set(objectives)) != len(objectives) or not set(objectives) <= set(OBJECTIVES):
            raise SpecError(f"--objective is 'score' optionally followed by costs to minimise, from {', '.join(OBJECTIVES)} "
                            f"(e.g. score,images_seen), got {excerpt(args.objective)}")
        if args.sampler not in SAMPLERS or args.pruner not in PRUNERS:
            raise SpecError(f"--sampler is one of {', '.join(SAMPLERS)} and --pruner one of {', '.join(PRUNERS)}; "
                            f"got {excerpt(args.sampler)}, {excerpt(args.pruner)}")
        if len(objectives) > 1 and args.pruner != "none":
            raise SpecError("pruning needs one objective (Optuna cannot prune multi-objective trials): pass --pruner none "
                            f"with --objective {args.objective}")
        seed_value(args.seed)
        check_storage(args.storage, args.workers)
        target = TransferSpec.parse(args.target, args.task)
        if len(target.tasks) != 1:
            raise SpecError(f"--task is the one transfer task that scores a trial (e.g. knn or linear), got {excerpt(args.task)}")
        plan = cls(args, parse_source(args.source), target, get_registry().parse("space", args.space),
                   get_registry().parse("backbone", args.backbone), parse_training(args.training), objectives)
        plan.source.check()
        plan.space.check(plan.context)
        plan.backbone.check(plan.training)
        target.check()
        return plan

    @property
    def context(self) -> SpaceContext:
        """What the space proposes for."""
        return SpaceContext(self.source, self.args.budget, self.training)

    @property
    def task(self) -> Task:
        """The transfer task that scores a trial."""
        return self.target.tasks[0]

    @property
    def prunes(self) -> bool:
        """Whether weak trials are stopped early."""
        return self.args.pruner != "none"

    def identity(self) -> dict[str, str]:
        """What a rerun (or another machine's worker) must share to continue this search."""
        return {"source": self.source.spec(), "target": self.target.target.spec(), "task": self.task.spec(), "budget": str(self.args.budget),
                "space": self.space.spec(), "backbone": self.backbone.spec(), "training": self.training.spec(),
                "objective": ",".join(self.objectives), "sampler": self.args.sampler, "pruner": self.args.pruner, "seed": str(self.args.seed),
                "recipe": str(RECIPE_VERSION)}

    def key(self) -> str:
        """The search run's key: its name and storage (the Optuna study it records)."""
        return cache_key("search", self.args.name, redacted(self.args.storage))

    def params(self) -> dict[str, str]:
        """What the search run records."""
        a = self.args
        return {"search": a.name, **self.identity(), "trials": str(a.trials), "sampler": a.sampler, "pruner": a.pruner,
                "storage": redacted(a.storage), **self.space.flat_params("space"), "transferlab.recipe": str(RECIPE_VERSION)}

    def pretrain_spec(self, allocation: Allocation) -> PretrainSpec:
        """The pretraining a trial's allocation asks for."""
        return PretrainSpec(self.source, tuple(parse_policies(allocation.policy)), self.backbone, allocation.training, self.args.seed)
