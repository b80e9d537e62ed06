"""Frozen features: batched extraction in inference mode and the on-disk cache that makes it happen once."""

import hashlib
from collections.abc import Callable

import numpy as np
import torch

from . import progress
from .backbones import Backbone
from .cache import atomic_path, cache_dir, cache_key, size_text
from .devices import autocast
from .loader import batches, normalize

FEATURES_VERSION = 1  # bump when extraction changes, so old caches are not reused


def extract_features(backbone: Backbone, model: torch.nn.Module, images: np.ndarray, samples: np.ndarray,
                     device: torch.device, batch_size: int = 256, what: str | None = None) -> np.ndarray:
    """Penultimate features float32 [n, D] of `images[samples]` (uint8 [N, R, R, 3]), in order; bf16 autocast on CUDA.
    With `what` (e.g. 'features of <target> train'), progress shows on stderr (see transferlab.progress)."""
    out = np.empty((len(samples), backbone.feature_dim(model)), np.float32)
    stream = batches(images, samples, np.zeros(len(samples)), batch_size, device, shuffle=False, seed=0, epoch=0, resident=False)
    start = 0
    with progress.step(what or "", len(samples), enabled=what is not None) as shown, torch.inference_mode(), autocast(device):
        for x, _ in stream:
            out[start:start + len(x)] = backbone.features(model, normalize(x)).float().cpu().numpy()
            start += len(x)
            shown.advance(len(x))
        shown.finish(f"{len(samples):,} images in {shown.seconds():.1f} s, {len(samples) / max(shown.seconds(), 1e-9):,.0f} images/s")
    return out


def cached_features(key: tuple, compute: Callable[[], np.ndarray]) -> np.ndarray:
    """The array cached under `key` in cache_dir('features'), computed and written atomically on first use."""
    path = cache_dir("features") / f"features-{cache_key(FEATURES_VERSION, *key)}.npy"
    try:
        return np.load(path)
    except (OSError, ValueError, EOFError):
        pass
    features = compute()
    with atomic_path(path, f"{size_text(features.nbytes)} of frozen features", features.nbytes) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, features)
    return features


def weights_digest(model: torch.nn.Module) -> str:
    """sha256 over every parameter and buffer (names, dtypes, shapes, bytes): equal digests mean equal weights."""
    h = hashlib.sha256(b"transferlab-weights-v1")
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}\x00".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
