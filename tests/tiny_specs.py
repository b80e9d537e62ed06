"""Specs of a tiny pretraining and transfer job (seconds on a CPU), shared by the MLflow tests."""

SOURCE = "synthetic(branching=[2, 2, 2], train=20, val=5, test=5)"  # 4 pretraining classes, 80 training images
TARGET = "synthetic(branching=[2, 2, 2], part='heldout', train=20, val=5, test=5)"
BACKBONE = "timm(model='resnet10t')"
TRAINING = "train(epochs=2, batch_size=16, resolution=16)"
TINY = {"source": SOURCE, "policy": "all", "backbone": BACKBONE, "training": TRAINING, "seed": 0}
