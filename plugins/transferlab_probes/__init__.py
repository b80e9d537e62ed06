"""Built-in transfer tasks: linear probe (Kornblith et al.), weighted kNN, full fine-tuning, few-shot episodes."""

from transferlab import hookimpl

from .fewshot import FewShot
from .finetune import Finetune
from .knn import KNN
from .linear import Linear


@hookimpl
def register_tasks(register):
    register(Linear)
    register(KNN)
    register(Finetune)
    register(FewShot)
