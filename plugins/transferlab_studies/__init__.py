"""Built-in studies, one per question of Huh, Agrawal & Efros (2016): images_per_class, num_classes, coarse_to_fine,
fixed_budget, target_removed, class_split."""

from transferlab import hookimpl

from .held_out import ClassSplit, TargetRemoved
from .labels import CoarseToFine, NumClasses
from .sizes import FixedBudget, ImagesPerClass


@hookimpl
def register_studies(register):
    for study in (ImagesPerClass, NumClasses, CoarseToFine, FixedBudget, TargetRemoved, ClassSplit):
        register(study)
