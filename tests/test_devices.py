"""devices.py and the GPU-only behaviour of training: device resolution, bf16 autocast, channels_last, pinned uploads,
pretraining that learns and checkpoints on the device, torch.compile, streamed vs resident batches.

Every test here carries the `device` marker: benchmarks/gpu_check.sh runs this whole file (and the [cuda] cases of the
other files) on a GPU machine; on a CPU-only machine the [cuda] cases are skipped.
"""

import dataclasses
import math
import os

import numpy as np
import pytest
import torch

import transferlab as tl
from transferlab import devices
from transferlab.devices import autocast, device_name, memory_bytes, memory_format, prepare, resolve_device, synchronize, upload
from transferlab.image_cache import image_cache
from transferlab.training import pretrain
from transferlab.training_spec import Training

pytestmark = pytest.mark.device

TINY = "synthetic(branching=(2, 2, 3), train=10, val=4, test=0)"  # 8 classes, 80 training images, 32 val
BACKBONE = "timm('test_resnet')"
COMPILE_ON_CPU = "TRANSFERLAB_TEST_COMPILE"  # set to 1 to also compile on the CPU (about a minute on 2 cores with a cold cache)


def conv_model(width: int = 8) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, width, 3, padding=1), torch.nn.BatchNorm2d(width), torch.nn.ReLU(),
                               torch.nn.Conv2d(width, width, 3, padding=1), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                               torch.nn.Linear(width, 4))


# ---- devices.py -----------------------------------------------------------------------------------------------


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_cuda_without_a_cuda_device_is_a_spec_error():
    with pytest.raises(tl.SpecError, match="no CUDA device"):
        resolve_device("cuda")
    with pytest.raises(tl.SpecError, match="no CUDA device"):
        resolve_device(Training(device="cuda").device)
    assert resolve_device("auto") == torch.device("cpu")


def test_resolve_device_gives_the_device_that_tensors_report(device):
    assert resolve_device(device.type) == device == torch.empty(0, device=device.type).device
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_autocast_gives_bf16_activations_on_cuda_and_fp32_on_the_cpu(device):
    model = prepare(conv_model(), device)
    seen = []
    model[0].register_forward_hook(lambda module, inputs, output: seen.append((inputs[0].dtype, output.dtype)))
    x = torch.randn(2, 3, 8, 8, device=device).contiguous(memory_format=memory_format(device))
    with autocast(device):
        logits = model(x)
    expected = torch.bfloat16 if device.type == "cuda" else torch.float32
    assert seen == [(torch.float32, expected)] and logits.dtype == expected
    assert torch.nn.functional.cross_entropy(logits, torch.zeros(2, dtype=torch.int64, device=device)).dtype == torch.float32
    with torch.no_grad():
        assert model(x).dtype == torch.float32  # outside autocast: fp32 everywhere


def test_prepare_puts_kernels_channels_last_on_cuda_and_keeps_them_contiguous_on_the_cpu(device):
    model = conv_model()
    prepared = prepare(model, device)
    assert prepared is model  # in place; without compile the module itself
    kernels = [p for p in model.parameters() if p.ndim == 4]
    assert len(kernels) == 2 and all(p.device == device for p in model.parameters())
    if device.type == "cuda":
        assert memory_format(device) == torch.channels_last and torch.backends.cudnn.benchmark
        assert all(p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous() for p in kernels)
    else:
        assert memory_format(device) == torch.contiguous_format
        assert all(p.is_contiguous() for p in kernels)
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        reference = conv_model().eval()(x)
        out = prepared.eval()(x.to(device).contiguous(memory_format=memory_format(device)))
    tolerance = 1e-2 if device.type == "cuda" else 1e-5  # cuDNN may use TF32 (10-bit mantissa) for fp32 convolutions
    torch.testing.assert_close(out.cpu(), reference, rtol=tolerance, atol=tolerance)


def test_upload_gives_an_equal_tensor_on_the_device(device):
    images = torch.randint(0, 256, (16, 12, 12, 3), dtype=torch.uint8)
    theta = torch.randn(16, 2, 3)
    for source in (images, theta, theta.transpose(1, 2)):  # uint8, float, and a non-contiguous view
        copy = upload(source, device)
        doubled = copy.to(torch.float32) * 2  # work queued right behind the asynchronous copy sees the data
        synchronize(device)
        assert copy.device == device and copy.dtype == source.dtype and copy.shape == source.shape
        assert torch.equal(copy.cpu(), source) and torch.equal(doubled.cpu(), source.to(torch.float32) * 2)


def test_seeded_blocks_draw_the_seeds_numbers_and_restore_the_generators(device):
    torch.rand(3), torch.rand(3, device=device)  # the generators are in some state of their own
    cpu_state = torch.get_rng_state()
    cuda_state = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    draws = []
    for seed, stream in ((0, "init"), (0, "init"), (1, "init"), (0, "pretrain")):
        with devices.seeded(seed, stream, device):
            draws.append((torch.rand(4), torch.rand(4, device=device).cpu()))
    assert all(torch.equal(a, b) for a, b in zip(draws[0], draws[1]))
    assert not torch.equal(draws[0][0], draws[2][0]) and not torch.equal(draws[0][0], draws[3][0])
    assert torch.equal(torch.get_rng_state(), cpu_state)
    if cuda_state is not None:
        assert torch.equal(torch.cuda.get_rng_state(device), cuda_state)
    assert len({devices.torch_seed(seed, stream) for seed in range(3) for stream in ("init", "pretrain", "finetune")}) == 9


def test_memory_and_name_describe_the_device(device):
    assert memory_bytes(device) > 1 << 30
    name = device_name(device)
    assert name == (torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)")


# ---- pretraining on the device --------------------------------------------------------------------------------


def setup(source_spec: str = TINY, resolution: int = 16):
    source = tl.source(source_spec)
    manifest = tl.select(source_spec)
    return manifest, image_cache(source, resolution), manifest.split(source.index, "val")


def train(spec: Training, checkpoint, data, seed: int = 0):
    """Pretrain a fresh test_resnet; return (backbone, model, last metrics, logged (metrics, step) pairs)."""
    manifest, images, val = data
    backbone = tl.get_registry().parse("backbone", BACKBONE)
    model = backbone.build_seeded(manifest.num_classes, spec.resolution, seed)
    logged = []
    metrics = pretrain(backbone, model, images, manifest, val, spec, checkpoint, lambda m, s: logged.append((m, s)), seed=seed,
                       progress=False)
    return backbone, model, metrics, logged


def check_checkpoint(path, backbone, model, num_classes: int, steps: int) -> None:
    """The checkpoint loads with weights_only=True into a fresh model that then computes what the trained one does."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert state["step"] == steps
    trained = {k: v.cpu() for k, v in model.state_dict().items()}
    assert state["model"].keys() == trained.keys() and all(torch.equal(state["model"][k], trained[k]) for k in trained)
    fresh = backbone.build(num_classes, 16)
    fresh.load_state_dict(state["model"])
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(fresh.eval()(x), model.cpu().eval()(x), rtol=1e-4, atol=1e-4)  # layouts may differ


def test_pretrain_learns_on_the_device_in_bf16_channels_last_and_checkpoints(device, tmp_path):
    data = setup("synthetic(branching=(2, 2, 3), train=40, val=10, test=0)")
    spec = Training(epochs=6, batch_size=32, resolution=16, optimizer="adamw", lr=0.01, weight_decay=0.05, device=device.type)
    manifest = data[0]
    backbone = tl.get_registry().parse("backbone", BACKBONE)
    model = backbone.build_seeded(manifest.num_classes, 16, seed=0)
    seen = set()
    first_conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    first_conv.register_forward_hook(lambda module, inputs, output: seen.add(
        (module.training, inputs[0].device, inputs[0].is_contiguous(memory_format=memory_format(device)), output.dtype)))
    logged = []
    metrics = pretrain(backbone, model, data[1], manifest, data[2], spec, tmp_path / "ck.pt", lambda m, s: logged.append((m, s)),
                       progress=False)
    activations = torch.bfloat16 if device.type == "cuda" else torch.float32
    assert seen == {(True, device, True, activations), (False, device, True, activations)}  # training and evaluation
    assert [s for _, s in logged] == [10, 20, 30, 40, 50, 60]
    assert metrics["pretrain.val_top1"] >= 35  # chance is 12.5 %; about 54 % on the CPU
    assert logged[-1][0]["pretrain.train_loss"] < logged[0][0]["pretrain.train_loss"] - 0.3
    assert all(math.isfinite(m["pretrain.train_loss"]) and m["pretrain.images_per_s"] > 0 for m, _ in logged)
    assert all(p.device == device for p in model.parameters())
    check_checkpoint(tmp_path / "ck.pt", backbone, model, manifest.num_classes, 60)


def test_streamed_and_resident_training_give_the_same_loss_curve(device, tmp_path):
    """Exactly on the CPU; on CUDA within the run-to-run noise of cuDNN's autotuned (non-deterministic) kernels."""
    data = setup()
    spec = Training(epochs=3, batch_size=16, resolution=16, lr=0.05, device=device.type)
    _, resident, _, resident_log = train(spec, tmp_path / "resident.pt", data)
    _, streamed, _, streamed_log = train(dataclasses.replace(spec, device_share=1e-12), tmp_path / "streamed.pt", data)
    losses = [[m["pretrain.train_loss"] for m, _ in log] for log in (resident_log, streamed_log)]
    accuracies = [[m["pretrain.val_top1"] for m, _ in log] for log in (resident_log, streamed_log)]
    assert [s for _, s in streamed_log] == [s for _, s in resident_log] == [5, 10, 15]
    if device.type == "cpu":
        assert losses[0] == losses[1] and accuracies[0] == accuracies[1]
        assert all(torch.equal(a, b) for a, b in zip(resident.state_dict().values(), streamed.state_dict().values()))
    else:
        np.testing.assert_allclose(losses[1], losses[0], rtol=0.02)
        assert max(abs(a - b) for a, b in zip(*accuracies)) <= 100 * 3 / 32  # at most 3 of 32 val images classified otherwise


def test_compiled_pretraining_trains_and_checkpoints_like_eager(device, tmp_path):
    if device.type == "cpu" and not os.environ.get(COMPILE_ON_CPU):
        pytest.skip(f"compiling on the CPU takes about a minute on 2 cores with a cold cache; set {COMPILE_ON_CPU}=1 to run it")
    data = setup()
    spec = Training(epochs=None, steps=3, batch_size=16, resolution=16, lr=0.05, device=device.type)
    _, _, eager, _ = train(spec, tmp_path / "eager.pt", data)
    backbone, model, compiled, logged = train(dataclasses.replace(spec, compile=True), tmp_path / "compiled.pt", data)
    assert [s for _, s in logged] == [3] and math.isfinite(compiled["pretrain.train_loss"])
    tolerance = 0.03 if device.type == "cuda" else 1e-3  # inductor reorders float arithmetic; bf16 on CUDA
    assert compiled["pretrain.train_loss"] == pytest.approx(eager["pretrain.train_loss"], rel=tolerance)
    assert not any("_orig_mod" in k for k in torch.load(tmp_path / "compiled.pt", weights_only=True)["model"])
    check_checkpoint(tmp_path / "compiled.pt", backbone, model, data[0].num_classes, 3)
