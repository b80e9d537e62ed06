"""torchrun: 2 CPU processes (gloo) train as one process would, rank 0 alone records, a killed job resumes; the run key rule."""

import glob
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch
from click.testing import CliRunner
from mlflow import MlflowClient
from torch import nn

import ranks
import transferlab as tl
from transferlab import distributed, tracking
from transferlab.cache import cache_dir
from transferlab.cli import cli
from transferlab.errors import SpecError
from transferlab.image_cache import image_cache
from transferlab.loader import share
from transferlab.pipeline import PretrainSpec
from transferlab.training import pretrain

pytest_plugins = ["mlflow_store"]  # fixtures: empty_store, store

SOURCE = "synthetic(branching=(2, 2, 3), train=10, val=4, test=0)"  # 8 classes, 80 training and 32 val images
BACKBONE = "timm('test_resnet')"  # batch norms, no dropout: trains the same on any number of processes
TRAINING = "train(epochs=3, batch_size=16, resolution=16)"  # 5 steps an epoch, 15 in all
# 1 and 2 processes differ by rounding only (other summation orders), which training amplifies: over these 15 steps
# the train loss agrees to about 2e-5 relative (measured), as a 1e-7 change of one weight would move it.
LOSS_RTOL = 1e-4
ARGS = ["pretrain", "--source", SOURCE, "--backbone", BACKBONE, "--training", TRAINING]


def torchrun(*args: str) -> subprocess.Popen:
    """`python -m torch.distributed.run --standalone --nproc_per_node 2 -m transferlab ...`, started."""
    return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "transferlab", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finished(process: subprocess.Popen) -> tuple[int, str]:
    """The exit status and output of a torchrun, waited for."""
    out, _ = process.communicate(timeout=240)
    return process.returncode, out


def one_process_losses() -> tuple[list[float], list[float]]:
    """(train loss, val top-1) per evaluation of the same pretraining in this process: the reference."""
    source, manifest = tl.source(SOURCE), tl.select(SOURCE)
    spec = PretrainSpec.parse(SOURCE, "all", BACKBONE, TRAINING, 0)
    model = spec.backbone.build_seeded(manifest.num_classes, 16, 0)
    logged = []
    pretrain(spec.backbone, model, image_cache(source, 16), manifest, manifest.split(source.index, "val"), spec.training,
             cache_dir("checkpoints") / "reference.pt", lambda metrics, step: logged.append(metrics), progress=False)
    (cache_dir("checkpoints") / "reference.pt").unlink()
    return [m["pretrain.train_loss"] for m in logged], [m["pretrain.val_top1"] for m in logged]


def only_run(uri: str):
    """The one run of the store (every experiment), checked to be the only one."""
    client = MlflowClient(uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert len(runs) == 1, [(r.info.run_name, r.info.status) for r in runs]
    return runs[0]


def history(uri: str, run_id: str, metric: str) -> list[tuple[int, float]]:
    """(step, value) of every recorded value of a metric, in step order."""
    return sorted((m.step, m.value) for m in MlflowClient(uri).get_metric_history(run_id, metric.replace(".", "/", 1)))


def test_share_gives_each_rank_a_contiguous_part():
    assert [share(0, 16, r, 2) for r in range(2)] == [(0, 8), (8, 16)]
    assert [share(32, 39, r, 3) for r in range(3)] == [(32, 35), (35, 37), (37, 39)]  # sizes differ by one at most
    assert share(5, 9, 0, 1) == (5, 9)


def test_run_key_holds_the_world_size_only_for_networks_that_train_differently(monkeypatch):
    manifest = tl.select(SOURCE)
    same, dropping = (PretrainSpec.parse(SOURCE, "all", b, TRAINING, 0) for b in (BACKBONE, "timm('test_resnet', drop_rate=0.1)"))
    alone = same.key(manifest), dropping.key(manifest)
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert same.key(manifest) == alone[0]  # 1 and 2 processes compute the same run: it is shared
    assert dropping.key(manifest) != alone[1]  # dropout masks differ with the world size: a run of its own
    assert distributed.reproducible(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Dropout(0.0)))
    assert not distributed.reproducible(nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.5)))

    class OwnNorm(nn.BatchNorm2d):
        """A batch norm subclass without a global-batch counterpart."""

    assert not distributed.reproducible(nn.Sequential(OwnNorm(4)))


def test_a_batch_that_does_not_divide_among_processes_is_refused_before_any_run(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(SpecError, match="batch_size 15 is the global batch of all 2 processes and must divide by 2"):
        PretrainSpec.parse(SOURCE, "all", BACKBONE, "train(epochs=1, batch_size=15)", 0).prepare()
    with pytest.raises(SpecError, match="a subset of 1 training images cannot be shared by 2 processes"):
        PretrainSpec.parse(SOURCE, "images_per_class(n=1) | random_classes(k=1)", BACKBONE, TRAINING, 0).prepare()


def test_commands_that_do_not_train_refuse_several_processes():
    result = CliRunner().invoke(cli, ["subset", "--source", SOURCE], env={"WORLD_SIZE": "2"})
    assert result.exit_code == 2 and "`transferlab subset` runs in one process" in result.output


def test_two_processes_train_as_one_record_once_and_resume_after_a_kill(store):
    """Rank 1 is killed after rank 0's first checkpoint; the same torchrun again resumes the run and finishes it: one
    run, each evaluation recorded once, the loss of one process within LOSS_RTOL, the 1-process run key."""
    losses, top1 = one_process_losses()
    job = torchrun(*ARGS)
    started = time.monotonic()
    while not glob.glob(str(cache_dir("checkpoints") / "*.pt")):  # rank 0's first checkpoint: after epoch 1
        assert job.poll() is None and time.monotonic() - started < 200, job.communicate()[0][-3000:]
        time.sleep(0.01)
    follower = next(p for p in psutil.Process(job.pid).children(recursive=True) if p.environ().get("RANK") == "1")
    follower.kill()
    code, out = finished(job)
    assert code != 0
    killed = only_run(store)
    assert killed.info.status in ("KILLED", "RUNNING"), out[-3000:]  # KILLED (PeerLost), or RUNNING if torchrun stopped rank 0 first
    assert [s for s, _ in history(store, killed.info.run_id, "pretrain.train_loss")] in ([5], [5, 10])
    assert Path(cache_dir("checkpoints") / f"{killed.info.run_id}.pt").exists()

    code, out = finished(torchrun(*ARGS))
    assert code == 0, out[-3000:]
    assert "resuming pretraining run" in out and out.count("pretrain epoch 3/3") == 1  # rank 0 alone shows progress
    run = only_run(store)
    assert run.info.run_id == killed.info.run_id and run.info.status == "FINISHED" and "transferlab.resumed_after" in run.data.tags
    assert run.data.tags[tracking.KIND] == "pretrain" and run.data.tags["transferlab.world_size"] == "2"
    assert run.data.tags[tracking.KEY] == PretrainSpec.parse(SOURCE, "all", BACKBONE, TRAINING, 0).key(tl.select(SOURCE))  # the 1-process key
    trained = history(store, run.info.run_id, "pretrain.train_loss")
    assert [s for s, _ in trained] == [5, 10, 15]  # one set of metrics: each evaluation once
    np.testing.assert_allclose([v for _, v in trained], losses, rtol=LOSS_RTOL)
    assert np.abs(np.subtract([v for _, v in history(store, run.info.run_id, "pretrain.val_top1")], top1)).max() <= 100 / 32  # one image at most
    model = PretrainSpec.parse(SOURCE, "all", BACKBONE, TRAINING, 0).backbone.build(8, 16)
    tracking.load_weights(run, model)  # the logged network is the plain one, its batch norms as built
    assert not os.listdir(cache_dir("checkpoints"))  # deleted at the end; no rank wrote another


def test_ranks_share_rank_0s_optimizer_state_and_a_global_batch_norm_matches_one_process():
    """2 gloo ranks spawned here: the global batch norm's output, gradients and running statistics equal BatchNorm2d's
    on the whole batch; the optimizer state of rank 0 arrives at rank 1."""
    torch.multiprocessing.spawn(ranks.global_norm_and_optimizer, args=(str(Path(os.environ["TRANSFERLAB_CACHE"]) / "rendezvous"),), nprocs=2)
