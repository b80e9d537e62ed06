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
