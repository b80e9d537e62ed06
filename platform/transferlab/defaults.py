"""The main job's default specs, shared by the library, the CLI and MLproject (a test checks that they agree)."""

DEFAULTS = {
    "source": "synthetic",
    "policy": "all",
    "backbone": "timm(model='resnet10t')",
    "training": "train",
    "seed": 0,
    "target": "synthetic(part='heldout')",
    "tasks": "linear | knn",
}
