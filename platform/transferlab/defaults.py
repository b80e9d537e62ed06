"""The main job's default specs, shared by the library, the CLI and MLproject (a test checks that they agree)."""

DEFAULTS = {
    "source": "synthetic",
    "policy": "all",
    "backbone": "timm(model='resnet10t', small_stem='off')",
    "training": "train(epochs=2)",
    "seed": 0,
    "target": "synthetic(part='heldout')",
    "tasks": "linear | knn",
}

# A study's defaults: its length is held fixed in optimizer steps across cells (a subset of 25 images per class trains as
# many steps as the whole source), so cells differ only in their data; 2 seeds give mean ± std.
STUDY_DEFAULTS = {"training": "train(steps=300)", "seeds": 2}

# A search's defaults: trials train a fixed number of optimizer steps (so allocations differ only in their data unless the
# space searches the length), are scored by kNN on the target's val split, and the median pruner stops weak ones.
SEARCH_DEFAULTS = {"training": "train(steps=300)", "trials": 24, "space": "allocation", "task": "knn", "objective": "score",
                   "sampler": "tpe", "pruner": "median", "best": 3}
