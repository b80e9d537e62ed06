"""Contact sheets: one labelled image per class of a source, as a PNG a person can look at."""

import math
import os
import re
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

from .cache import atomic_path
from .data_index import DataIndex
from .errors import SpecError
from .sources import Source

GAP = 6  # pixels between cells and around the sheet
EMPTY = (225, 225, 225)  # tile colour of a class with no image in the split


def contact_sheet(source: Source, out_path: str | os.PathLike, split: str = "train", tile: int = 64) -> Path:
    """Write a PNG grid of the first image of every class in `split`, each `tile` px wide, named underneath."""
    if tile < 8:
        raise SpecError(f"contact sheet tiles must be at least 8 pixels wide, got {tile}")
    index = source.index
    font = ImageFont.load_default()
    labels = [wrap(name, font, tile) for name in index.class_names]
    line_height = font.getbbox("Ag/")[3] + 2
    cell_h = tile + 2 + line_height * max((len(lines) for lines in labels), default=1)
    cols = columns(source)
    rows = math.ceil(index.num_classes / cols)
    sheet = Image.new("RGB", (GAP + cols * (tile + GAP), GAP + rows * (cell_h + GAP)), "white")
    draw = ImageDraw.Draw(sheet)
    for c, sample in enumerate(first_samples(index, split)):
        x, y = GAP + (c % cols) * (tile + GAP), GAP + (c // cols) * (cell_h + GAP)
        sheet.paste(tile_image(source, sample, tile), (x, y))
        for i, line in enumerate(labels[c]):
            width = draw.textlength(line, font=font)
            draw.text((x + (tile - width) / 2, y + tile + 2 + i * line_height), line, fill="black", font=font)
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp:
        sheet.save(tmp, format="PNG")
    return out_path


def first_samples(index: DataIndex, split: str) -> np.ndarray:
    """The first sample of every class in `split` (-1 where a class has none)."""
    samples = index.split_samples(split)
    labels, first = np.unique(index.labels[samples], return_index=True)
    out = np.full(index.num_classes, -1, dtype=np.int64)
    out[labels] = samples[first]
    return out


def columns(source: Source) -> int:
    """About √n columns, rounded to whole sibling groups when the classes' parents all have the same number of them."""
    n = source.index.num_classes
    cols = max(1, math.ceil(math.sqrt(n)))
    tree = source.tree
    group_sizes = np.unique(np.unique(tree.parents[tree.class_nodes], return_counts=True)[1])
    if len(group_sizes) == 1 and group_sizes[0] <= cols:
        group = int(group_sizes[0])
        cols = group * round(cols / group)
    return cols


def tile_image(source: Source, sample: int, tile: int) -> Image.Image:
    """One sample fitted to a square tile: nearest-neighbour when enlarged, Lanczos when reduced."""
    if sample < 0:
        return Image.new("RGB", (tile, tile), EMPTY)
    image = Image.fromarray(np.asarray(source.load(np.array([sample]))[0]))
    method = Image.Resampling.NEAREST if min(image.size) <= tile else Image.Resampling.LANCZOS
    return ImageOps.fit(image, (tile, tile), method=method)


def wrap(text: str, font: ImageFont.ImageFont, width: int) -> list[str]:
    """Split `text` after '/', '_', '-' or spaces into lines at most `width` px wide; an over-long piece ends in '…'."""
    lines: list[str] = []
    for piece in re.findall(r"[^/_\- ]+[/_\- ]*|[/_\- ]+", text):
        if lines and font.getlength(lines[-1] + piece) <= width:
            lines[-1] += piece
        else:
            lines.append(piece)
    return [fit(line.strip(), font, width) for line in lines] or [""]


def fit(line: str, font: ImageFont.ImageFont, width: int) -> str:
    """`line`, shortened with '…' until it is at most `width` px wide."""
    if font.getlength(line) <= width:
        return line
    while line and font.getlength(line + "…") > width:
        line = line[:-1]
    return line + "…"
