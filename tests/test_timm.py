"""The timm backbone: any timm model by name, checked at parse time, random init, CIFAR stems for small ResNet inputs."""

import numpy as np
import pytest
import timm
import torch

import transferlab as tl
from transferlab.devices import autocast, prepare
from transferlab.features import extract_features
from transferlab.loader import normalize
from transferlab_timm.backbone import TimmBackbone


def backbone(text: str) -> TimmBackbone:
    return tl.get_registry().parse("backbone", text)


def test_spec_names_a_timm_model_and_logs_every_field():
    b = backbone("timm('resnet10t', drop_path_rate=0.1)")
    assert isinstance(b, TimmBackbone) and b.model == "resnet10t" and b.drop_path_rate == 0.1
    assert b.spec() == "timm(drop_path_rate=0.1, drop_rate=0.0, model='resnet10t', small_stem='auto')"
    assert b.flat_params("backbone") == {"backbone.model": "'resnet10t'", "backbone.drop_path_rate": "0.1",
                                         "backbone.drop_rate": "0.0", "backbone.small_stem": "'auto'"}
    assert backbone("timm").model == "resnet18"


def test_unknown_model_fails_at_parse_time_with_close_names(monkeypatch):
    monkeypatch.setattr(timm, "create_model", lambda *a, **k: pytest.fail("nothing may be built"))
    with pytest.raises(tl.SpecError, match=r"unknown timm model 'resnet81'; did you mean 'resnet18'"):
        backbone("timm(model='resnet81')")
    with pytest.raises(tl.SpecError, match="small_stem='on' needs a model from timm's resnet module"):
        backbone("timm(model='convnext_atto', small_stem='on')")
    with pytest.raises(tl.SpecError, match="drop_path_rate and drop_rate must lie in"):
        backbone("timm(drop_path_rate=1.5)")
    with pytest.raises(tl.SpecError, match="small_stem"):
        backbone("timm(small_stem='yes')")


def stem_output(model: torch.nn.Module, resolution: int) -> tuple[int, int]:
    """Spatial size of the last feature map for a `resolution`-pixel input."""
    with torch.no_grad():
        return tuple(model.eval().forward_features(torch.zeros(1, 3, resolution, resolution)).shape[-2:])


def test_small_resnet_inputs_get_the_cifar_stem():
    small = backbone("timm('resnet18')").build(10, 32)
    assert small.conv1.kernel_size == (3, 3) and small.conv1.stride == (1, 1) and isinstance(small.maxpool, torch.nn.Identity)
    assert stem_output(small, 32) == (4, 4)  # downsampling 8, as on CIFAR
    assert stem_output(backbone("timm('resnet18', small_stem='off')").build(10, 32), 32) == (1, 1)
    large = backbone("timm('resnet18')").build(10, 128)
    assert large.conv1.stride == (2, 2) and isinstance(large.maxpool, torch.nn.MaxPool2d)
    deep = backbone("timm('resnet10t', small_stem='on')").build(10, 128)
    assert deep.conv1[0].stride == (1, 1) and stem_output(deep, 32) == (4, 4)


@pytest.mark.parametrize("model", ["test_resnet", "test_convnext", "test_vit"])
def test_models_train_at_the_resolution_and_expose_features_and_a_new_head(model):
    b = backbone(f"timm({model!r})")
    torch.manual_seed(0)
    net = b.build(7, 32)
    x = torch.randn(2, 3, 32, 32)
    assert net(x).shape == (2, 7)
    features = b.features(net, x)
    assert features.shape == (2, b.feature_dim(net))
    assert b.reset_head(net, 3)(x).shape == (2, 3)


@pytest.mark.parametrize("model", ["mobilenetv3_small_050", "lcnet_050"])
def test_feature_dim_is_the_width_of_the_features_of_a_head_with_a_hidden_layer(model):
    """MobileNetV3 and LCNet pool, then widen in a conv_head: the features are head_hidden_size wide, not num_features."""
    b = backbone(f"timm({model!r})")
    net = b.build_seeded(5, 32, seed=0).eval()
    assert net.head_hidden_size != net.num_features
    images = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    features = extract_features(b, net, images, np.arange(6), torch.device("cpu"), batch_size=4)
    assert features.shape == (6, b.feature_dim(net)) == (6, net.head_hidden_size)


def test_weights_are_random_and_parameters_reach_timm(monkeypatch):
    seen = {}
    create = timm.create_model

    def spy(name, **kwargs):
        seen.update(kwargs, name=name)
        return create(name, **kwargs)

    monkeypatch.setattr(timm, "create_model", spy)
    net = backbone("timm('resnet18', drop_path_rate=0.2)").build(5, 64)
    assert seen == {"name": "resnet18", "pretrained": False, "num_classes": 5, "drop_path_rate": 0.2}
    assert max(m.drop_prob for m in net.modules() if type(m).__name__ == "DropPath") == pytest.approx(0.2)
    backbone("timm('test_vit')").build(5, 48)
    assert seen["img_size"] == 48  # fixed-size models are built for the training resolution


def test_bare_timm_model_names_are_backbone_specs():
    from transferlab import get_registry

    registry = get_registry()
    assert registry.parse("backbone", "resnet18").spec() == "timm(drop_path_rate=0.0, drop_rate=0.0, model='resnet18', small_stem='auto')"
    assert registry.parse("backbone", "convnext_atto(drop_path_rate=0.1)").drop_path_rate == 0.1
    with pytest.raises(tl.SpecError, match="unknown backbone .resnet18x."):
        registry.parse("backbone", "resnet18x")


@pytest.mark.parametrize("model", ["test_resnet", "test_convnext", "test_vit"])
def test_models_run_on_the_device_like_on_the_cpu_and_train_a_step(model, device):
    """Eval logits on the device (bf16 autocast and channels_last on CUDA) match the CPU's; backward reaches every parameter."""
    b = backbone(f"timm({model!r})")
    torch.manual_seed(0)
    net = b.build(7, 32).eval()
    images = torch.randint(0, 256, (4, 32, 32, 3), dtype=torch.uint8)
    with torch.no_grad():
        expected = net(normalize(images))
    net = prepare(net, device)
    x = normalize(images.to(device))
    with torch.no_grad(), autocast(device):
        logits = net(x)
        features = b.features(net, x)
    assert logits.device == device and logits.dtype == (torch.bfloat16 if device.type == "cuda" else torch.float32)
    assert features.shape == (4, b.feature_dim(net))
    tolerance = 0.05 if device.type == "cuda" else 1e-5  # bf16: 8 significant bits
    assert (logits.float().cpu() - expected).abs().max() <= tolerance * expected.abs().max() + 1e-6
    net.train()
    with autocast(device):
        loss = torch.nn.functional.cross_entropy(net(x), torch.arange(4, device=device))
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    grads = [p.grad for p in net.parameters() if p.requires_grad]
    assert all(g is not None and g.device == device and torch.isfinite(g).all() for g in grads)
