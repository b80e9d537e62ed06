"""The synthetic hierarchical source: procedurally drawn images whose tree levels control separate visual factors."""

import dataclasses
import hashlib
import itertools
import math
import os
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
from pathlib import Path
from typing import Literal

import numpy as np
from rich.console import Console
from rich.progress import Progress

from transferlab import SPLITS, ClassTree, DataIndex, Source, SpecError, atomic_path, cache_dir, cache_key

GENERATOR_VERSION = 1  # bump whenever the drawing changes, so old caches are not reused
CHUNK = 64  # images per random stream; fixed, so pixels never depend on the number of threads
MAX_PER_CLASS = 100_000  # images per class and split: 80 classes of them are 24 GB of 32×32 pixels; more is surely a typo
SHOW_PROGRESS_FROM = 10_000  # images; smaller sets generate in well under a second

# Tree level i sets factor i for every image of a class; factors beyond the tree's depth vary at random per image,
# except the background, which stays plain. Position, scale, rotation, colour, brightness and noise always vary.
SHAPES = ("circle", "square", "triangle", "star", "cross", "diamond", "crescent", "heart")
# Evenly spaced hues (fractions of the colour circle), ordered so that every prefix is spread out.
HUES = {"red": 0 / 8, "cyan": 4 / 8, "lime": 2 / 8, "purple": 6 / 8, "gold": 1 / 8, "blue": 5 / 8, "green": 3 / 8, "pink": 7 / 8}
HUE_VALUES = np.array(list(HUES.values()), dtype=np.float32)
TEXTURES = ("solid", "stripes", "checker", "dots", "rings", "grid", "waves", "speckle")
BACKGROUNDS = ("plain", "gradient", "clouds", "bars")
FACTORS = (("shape", SHAPES), ("hue", tuple(HUES)), ("texture", TEXTURES), ("background", BACKGROUNDS))

HUE_JITTER = 0.02  # ± fraction of the colour circle; the hue spacing is 1/8 = 0.125
TEXTURE_PERIOD = 6.0  # pixels at 32 px; textures scale with the image size


@dataclasses.dataclass(frozen=True)
class Synthetic(Source):
    """Procedural 32×32 shapes; tree levels are shape, hue, texture (and background); no files needed."""

    name = "synthetic"

    seed: int = 0
    branching: tuple[int, ...] = (4, 4, 5)
    heldout: int = 1
    part: Literal["pretrain", "heldout"] = "pretrain"
    train: int = 300
    val: int = 50
    test: int = 50
    size: int = 32

    def validate(self) -> None:
        """Check the seed, the tree shape, the held-out count, the split sizes and the image size."""
        if self.seed < 0:
            raise SpecError(f"synthetic: seed must be >= 0, got {self.seed}")
        if not 1 <= len(self.branching) <= len(FACTORS):
            raise SpecError(f"synthetic: branching needs 1 to {len(FACTORS)} levels ({', '.join(f for f, _ in FACTORS)}), got {len(self.branching)}")
        for level, ((factor, values), count) in enumerate(zip(FACTORS, self.branching)):
            if not 1 <= count <= len(values):
                raise SpecError(f"synthetic: branching[{level}] counts {factor}s and must lie in 1..{len(values)} ({', '.join(values)}), got {count}")
        if not 0 <= self.heldout < self.branching[-1]:
            raise SpecError(f"synthetic: heldout must lie in 0..{self.branching[-1] - 1} so that every group keeps a pretraining class (the last level has {self.branching[-1]}), got {self.heldout}")
        if self.part == "heldout" and self.heldout == 0:
            raise SpecError("synthetic: part='heldout' needs heldout >= 1")
        if not (1 <= self.train <= MAX_PER_CLASS and 0 <= self.val <= MAX_PER_CLASS and 0 <= self.test <= MAX_PER_CLASS):
            raise SpecError(f"synthetic: needs train >= 1 and val, test >= 0 images per class, at most {MAX_PER_CLASS:,} each, "
                            f"got train={self.train}, val={self.val}, test={self.test}")
        if not 8 <= self.size <= 128:
            raise SpecError(f"synthetic: size must lie in 8..128 pixels, got {self.size}")

    @cached_property
    def leaves(self) -> tuple[tuple[int, ...], ...]:
        """Factor values of every exposed class, in class order."""
        cut = self.branching[-1] - self.heldout
        combos = itertools.product(*map(range, self.branching))
        return tuple(c for c in combos if (c[-1] >= cut) == (self.part == "heldout"))

    def class_path(self, leaf: tuple[int, ...]) -> tuple[str, ...]:
        """Factor names of a leaf, coarsest first, e.g. ('circle', 'red', 'stripes')."""
        return tuple(values[v] for (_, values), v in zip(FACTORS, leaf))

    def build_index(self) -> DataIndex:
        """Every split grouped, classes in order inside it; no files."""
        counts = self.split_counts()
        labels = np.concatenate([np.repeat(np.arange(len(self.leaves)), n) for n in counts])
        splits = np.repeat(np.arange(len(SPLITS)), [n * len(self.leaves) for n in counts])
        classes = tuple("/".join(self.class_path(leaf)) for leaf in self.leaves)
        return DataIndex(labels=labels, splits=splits, classes=classes, class_names=classes)

    def build_tree(self) -> ClassTree:
        """Root 'synthetic', one node per level prefix (shape, shape/hue, ...), the exposed classes as leaves."""
        return ClassTree.from_paths([self.class_path(leaf) for leaf in self.leaves], root=self.name)

    @cached_property
    def fingerprint(self) -> str:
        """Identity of the data: spec, index and generator version (new drawing code means new pixels)."""
        return hashlib.sha256(f"{self.spec()}\x00{self.index.fingerprint()}\x00{GENERATOR_VERSION}".encode()).hexdigest()

    def label(self) -> str:
        """`synthetic`, or `synthetic_heldout` for the held-out classes (the default transfer target)."""
        return self.name if self.part == "pretrain" else f"{self.name}_heldout"

    def split_counts(self) -> tuple[int, int, int]:
        """Images per class in train, val and test."""
        return self.train, self.val, self.test

    def load(self, samples: np.ndarray, size: int | None = None) -> np.ndarray:
        """Pixels of the given samples as uint8 [n, H, W, 3], read from the disk cache."""
        pixels = np.asarray(self.pixels[np.asarray(samples, dtype=np.int64)])
        return pixels if size is None or size == self.size else resize(pixels, size)

    @cached_property
    def pixels(self) -> np.ndarray:
        """Every image of this spec, memory-mapped from the cache (generated on first use)."""
        path = self.cache_path
        pixels = read_cache(path, self.array_shape)
        if pixels is None:
            self.write_cache(path)
            pixels = read_cache(path, self.array_shape)
        return pixels

    @property
    def array_shape(self) -> tuple[int, int, int, int]:
        """Shape of the pixel array: [samples, size, size, 3]."""
        return len(self.index), self.size, self.size, 3

    @property
    def cache_path(self) -> Path:
        """The .npy file holding this spec's pixels."""
        return cache_dir("synthetic") / f"synthetic-{cache_key(self.spec(), GENERATOR_VERSION)}.npy"

    def write_cache(self, path: Path) -> None:
        """Generate every image into a temporary .npy beside `path`, then move it into place."""
        jobs = self.jobs()
        size = math.prod(self.array_shape)
        with atomic_path(path, f"the images of {self.spec()}", size) as tmp:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=self.array_shape)
            with open(tmp, "r+b") as f:  # reserve the disk first: a store into a page of the map that the disk has no room for is SIGBUS
                os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)
            with ThreadPoolExecutor(max_workers=workers()) as pool, \
                    Progress(console=Console(stderr=True), transient=True, disable=len(out) < SHOW_PROGRESS_FROM) as progress:
                task = progress.add_task(f"generating {self.spec()}", total=len(out))
                for n in pool.map(lambda job, out=out: self.run_job(out, *job), jobs):
                    progress.advance(task, n)
            out.flush()
            del out

    def jobs(self) -> list[tuple[int, tuple[int, ...], int, int, int]]:
        """(output row, leaf, split, chunk, count) for every chunk of every class and split."""
        jobs, row = [], 0
        for split, per_class in enumerate(self.split_counts()):
            for leaf in self.leaves:
                for chunk, first in enumerate(range(0, per_class, CHUNK)):
                    n = min(CHUNK, per_class - first)
                    jobs.append((row + first, leaf, split, chunk, n))
                row += per_class
        return jobs

    def run_job(self, out: np.ndarray, row: int, leaf: tuple[int, ...], split: int, chunk: int, n: int) -> int:
        """Render one chunk into `out[row:row + n]`; return n."""
        factors = leaf + (-1,) * (len(FACTORS) - len(leaf))
        seeds = np.random.SeedSequence([self.seed, GENERATOR_VERSION, *(v + 1 for v in factors), split, chunk])
        out[row:row + n] = render(seeds, n, self.size, factors)
        return n


def workers() -> int:
    """Threads that generate images: one per CPU this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def read_cache(path: Path, shape: tuple[int, ...]) -> np.ndarray | None:
    """The cached array at `path` if it exists and has the expected shape, else None."""
    try:
        pixels = np.load(path, mmap_mode="r")
    except (OSError, ValueError, EOFError):
        return None
    return pixels if pixels.shape == shape and pixels.dtype == np.uint8 else None


def resize(pixels: np.ndarray, size: int) -> np.ndarray:
    """Resize uint8 [n, H, W, 3] images to size×size (antialiased bilinear)."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float()
    y = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return y.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


# ---- drawing ---------------------------------------------------------------------------------------------------


# Per-image nuisance parameters and their uniform ranges (image units: the image spans -1..1).
NUISANCE = {
    "cx": (-0.15, 0.15), "cy": (-0.15, 0.15), "scale": (0.55, 0.78), "angle": (0, 2 * np.pi),
    "hue_shift": (-HUE_JITTER, HUE_JITTER), "saturation": (0.65, 0.95), "value": (0.75, 1.0),
    "texture_angle": (0, np.pi), "texture_phase": (0, 2 * np.pi), "texture_period": (0.9, 1.1),
    "background_shade": (0.15, 0.8), "background_angle": (0, 2 * np.pi), "background_phase": (0, 2 * np.pi),
    "brightness": (0.85, 1.15), "noise": (0.01, 0.05),
}


def draw_params(rng: np.random.Generator, n: int, factors: tuple[int, ...]) -> dict[str, np.ndarray]:
    """One row of uniforms per image (so the first k images never depend on n); factor -1 varies at random."""
    uniforms = rng.random((n, len(FACTORS) + len(NUISANCE)))
    params = {}
    for i, ((name, values), fixed) in enumerate(zip(FACTORS, factors)):
        if fixed >= 0:
            params[name] = np.full(n, fixed)
        elif name == "background":
            params[name] = np.zeros(n, np.int64)  # plain unless the background is a tree level
        else:
            params[name] = (uniforms[:, i] * len(values)).astype(np.int64)
    for i, (name, (lo, hi)) in enumerate(NUISANCE.items(), start=len(FACTORS)):
        params[name] = (lo + (hi - lo) * uniforms[:, i]).astype(np.float32).reshape(n, 1, 1)
    return params


def render(seeds: np.random.SeedSequence, n: int, size: int, factors: tuple[int, ...]) -> np.ndarray:
    """Draw n images as uint8 [n, size, size, 3]; parameters, speckle and pixel noise come from three streams of `seeds`."""
    param_rng, speckle_rng, noise_rng = map(np.random.default_rng, seeds.spawn(3))
    p = draw_params(param_rng, n, factors)
    p["speckle"] = speckle_rng.random((n, (size + 1) // 2, (size + 1) // 2), dtype=np.float32)
    grid = (np.arange(size, dtype=np.float32) + 0.5) * (2 / size) - 1
    x, y = grid[None, None, :] - p["cx"], grid[None, :, None] - p["cy"]  # image units, centred on the object
    cos, sin, scale = np.cos(p["angle"]), np.sin(p["angle"]), p["scale"]
    u, v = (cos * x + sin * y) / scale, (cos * y - sin * x) / scale  # the object's own frame
    pixel = size / 2  # pixels per image unit
    alpha = np.empty((n, size, size), np.float32)
    for shape, rows in groups(p["shape"]):
        alpha[rows] = coverage(SHAPE_SDF[SHAPES[shape]](u[rows], v[rows]) * (scale[rows] * pixel))
    shade = np.empty((n, size, size), np.float32)
    for texture, rows in groups(p["texture"]):
        shade[rows] = TEXTURE[TEXTURES[texture]](x[rows] * pixel, y[rows] * pixel, pick(p, rows), size)
    back = np.empty((n, size, size), np.float32)
    for background, rows in groups(p["background"]):
        back[rows] = BACKGROUND[BACKGROUNDS[background]](x[rows] + p["cx"][rows], y[rows] + p["cy"][rows], pick(p, rows))
    colour = hsv_to_rgb(HUE_VALUES[p["hue"]] + p["hue_shift"][:, 0, 0], p["saturation"][:, 0, 0])  # [n, 3] at value 1
    fore = (p["value"] * p["brightness"]) * shade
    back *= p["brightness"]
    img = back[..., None] + alpha[..., None] * (fore[..., None] * colour[:, None, None, :] - back[..., None])
    img += noise_rng.standard_normal(img.shape, dtype=np.float32) * p["noise"][..., None]
    img *= 255
    img += 0.5
    np.clip(img, 0, 255, out=img)
    return img.astype(np.uint8)



def groups(values: np.ndarray):
    """(value, row selector) for each distinct value; a plain slice when all rows share it."""
    distinct = np.unique(values)
    if len(distinct) == 1:
        yield int(distinct[0]), slice(None)
        return
    for value in distinct:
        yield int(value), values == value


def pick(p: dict[str, np.ndarray], rows) -> dict[str, np.ndarray]:
    """The parameters of the selected rows."""
    return {name: value[rows] for name, value in p.items()}


def coverage(distance_px: np.ndarray) -> np.ndarray:
    """Antialiased coverage from a signed distance in pixels (negative inside)."""
    return np.clip(0.5 - distance_px, 0, 1, out=distance_px)


def hsv_to_rgb(hue: np.ndarray, saturation: np.ndarray) -> np.ndarray:
    """RGB [n, 3] at value 1 for hue in turns and saturation in 0..1."""
    k = (np.array([5, 3, 1], np.float32)[None, :] + hue[:, None] * 6) % 6
    return 1 - saturation[:, None] * np.clip(np.minimum(k, 4 - k), 0, 1)


# Shapes: signed distance in the object's frame (radius about 1), negative inside.


def _box(u, v, a, b):
    return np.maximum(np.abs(u) - a, np.abs(v) - b)


def _polygon(u, v, sides, apothem):
    out = None
    for k in range(sides):
        t = 2 * np.pi * (k + 0.25) / sides
        d = u * np.float32(np.cos(t)) + v * np.float32(np.sin(t))
        out = d if out is None else np.maximum(out, d)
    return out - apothem


def _star(u, v):
    r = np.hypot(u, v)
    t = np.abs((np.arctan2(v, u) * (5 / (2 * np.pi))) % 1 - 0.5) * 2  # 1 on a point, 0 between points
    return (r - (0.42 + 0.58 * t)) * 0.6


def _heart(u, v):
    s = np.float32(np.sqrt(0.5))
    v = v + 0.08
    square = _box((u + v) * s, (v - u) * s, 0.5, 0.5)
    lobes = np.minimum(np.hypot(u - 0.354, v - 0.354), np.hypot(u + 0.354, v - 0.354)) - 0.5
    return np.minimum(square, lobes)


SHAPE_SDF = {
    "circle": lambda u, v: np.hypot(u, v) - 0.85,
    "square": lambda u, v: _box(u, v, 0.75, 0.75),
    "triangle": lambda u, v: _polygon(u, v + 0.1, 3, 0.55),
    "star": _star,
    "cross": lambda u, v: np.minimum(_box(u, v, 0.9, 0.3), _box(u, v, 0.3, 0.9)),
    "diamond": lambda u, v: (np.abs(u) * 0.55 + np.abs(v) * 1.0 - 0.55) * np.float32(1 / np.hypot(0.55, 1.0)),
    "crescent": lambda u, v: np.maximum(np.hypot(u, v) - 0.9, 0.72 - np.hypot(u - 0.42, v)),
    "heart": _heart,
}


# Textures: brightness factor of the object, in pixel coordinates centred on the object (type matters, orientation does not).


DARK = 0.45  # brightness of a texture's dark parts


def _frame(x, y, p, size):
    """Texture coordinates: rotated by the texture angle, in radians of the texture period."""
    k = (2 * np.pi / (TEXTURE_PERIOD * size / 32)) / p["texture_period"]
    cos, sin = np.cos(p["texture_angle"]), np.sin(p["texture_angle"])
    return (cos * x + sin * y) * k, (cos * y - sin * x) * k


def _two_tone(signal, sharpness=2.5):
    """Map a signal around 0 to DARK..1 with soft edges."""
    t = np.clip(0.5 + sharpness * signal, 0, 1)
    return DARK + (1 - DARK) * t


def _solid(x, y, p, size):
    return np.ones_like(x)


def _stripes(x, y, p, size):
    a, _ = _frame(x, y, p, size)
    return _two_tone(np.sin(a + p["texture_phase"]))


def _checker(x, y, p, size):
    a, b = _frame(x, y, p, size)
    return _two_tone(np.sin(a + p["texture_phase"]) * np.sin(b) * 1.5)


def _dots(x, y, p, size):
    a, b = _frame(x, y, p, size)
    return _two_tone(0.9 - np.cos(a + p["texture_phase"]) - np.cos(b))


def _rings(x, y, p, size):
    k = (2 * np.pi / (TEXTURE_PERIOD * size / 32)) / p["texture_period"]
    return _two_tone(np.sin(np.hypot(x, y) * k + p["texture_phase"]))


def _grid(x, y, p, size):
    a, b = _frame(x, y, p, size)
    return _two_tone(0.75 - np.maximum(np.cos(a + p["texture_phase"]), np.cos(b)), sharpness=4)


def _waves(x, y, p, size):
    a, b = _frame(x, y, p, size)
    return _two_tone(np.sin(a + 1.6 * np.sin(b * 0.5) + p["texture_phase"]))


def _speckle(x, y, p, size):
    blocks = np.repeat(np.repeat(p["speckle"], 2, axis=1), 2, axis=2)[:, :size, :size]
    return _two_tone(blocks - 0.5, sharpness=10)


TEXTURE = {
    "solid": _solid, "stripes": _stripes, "checker": _checker, "dots": _dots,
    "rings": _rings, "grid": _grid, "waves": _waves, "speckle": _speckle,
}


# Backgrounds: grey level in image coordinates (-1..1).


def _plain(x, y, p):
    return np.broadcast_to(p["background_shade"], x.shape).astype(np.float32)


def _gradient(x, y, p):
    t = np.cos(p["background_angle"]) * x + np.sin(p["background_angle"]) * y
    return np.clip(p["background_shade"] + 0.3 * t, 0, 1)


def _clouds(x, y, p):
    w = np.sin(3.1 * x + p["background_phase"]) * np.sin(2.3 * y + p["background_angle"]) + np.sin(1.7 * (x + y) + p["background_angle"])
    return np.clip(p["background_shade"] + 0.12 * w, 0, 1)


def _bars(x, y, p):
    t = np.cos(p["background_angle"]) * x + np.sin(p["background_angle"]) * y
    return np.clip(p["background_shade"] + 0.15 * np.sign(np.sin(t * 4 * np.pi + p["background_phase"])), 0, 1)


BACKGROUND = {"plain": _plain, "gradient": _gradient, "clouds": _clouds, "bars": _bars}
