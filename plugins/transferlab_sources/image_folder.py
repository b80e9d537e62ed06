"""ImageFolder: class folders of image files (flat, nested, or split into train/val/test)."""

import dataclasses
import hashlib
import os
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
from pathlib import Path
from typing import Literal

import numpy as np

from transferlab import (
    SPLITS,
    ClassTree,
    DataError,
    DataIndex,
    FileSource,
    cache_dir,
    cache_key,
    carve,
    check_val_fraction,
    decode_files,
    is_image_file,
    listing,
    max_pixels,
    probe_image,
    split_code,
    stamps_digest,
    text_keys,
)

PROBE_CHUNK = 256  # files per thread-pool task when reading headers
INDEX_CACHE_VERSION = "image_folder-index-v3"  # v3: duplicates dropped, inner folders' own images
HEAD_BYTES = 4096  # bytes hashed of every file; files alike in size and head are hashed whole
OWN_CLASS = "(own)"  # class id, below a folder, of the images that folder holds beside its subfolders
SPLIT_OF_FOLDER = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}  # top-level split folders


@dataclasses.dataclass(frozen=True)
class Folder:
    """One scanned folder: its mtime and its sorted subfolder and image file names."""

    mtime_ns: int
    subfolders: tuple[str, ...]
    images: tuple[str, ...]


def scan(root: Path, base: str = "", unreadable: list[tuple[str, str]] | None = None) -> dict[str, Folder]:
    """Every folder under root/base by path relative to root ('' is root itself), breadth first in name order; hidden
    entries are ignored. A folder met again (a link to an ancestor, or a second name) is entered once: real folders before
    linked ones, so a link never hides a folder's own name. A subfolder that cannot be listed raises a DataError, or is
    left out and noted in `unreadable` (path, reason) if given."""
    listed: dict[str, tuple[int, list[str], list[str]]] = {}
    seen: set[tuple[int, int]] = set()  # (st_dev, st_ino) of every folder entered, resolved through links
    todo, linked = deque([base]), deque()
    while todo or linked:
        rel = (todo or linked).popleft()
        path = root / rel
        try:
            stat = path.stat()
            if (stat.st_dev, stat.st_ino) in seen:
                continue
            seen.add((stat.st_dev, stat.st_ino))
            folders, links, images = [], [], []
            with os.scandir(path) as entries:
                for entry in entries:
                    if entry.name.startswith("."):
                        continue
                    if is_folder(entry):
                        (links if entry.is_symlink() else folders).append(entry.name)
                    elif is_image_file(entry.name):
                        images.append(entry.name)
        except OSError as exc:
            if unreadable is None or rel == base:
                raise DataError(f"cannot read folder {path}: {exc.strerror or exc}") from None
            unreadable.append((rel, f"cannot list folder ({exc.strerror or exc})"))
            continue
        listed[rel] = (stat.st_mtime_ns, sorted(folders + links), sorted(images))
        todo.extend(f"{rel}/{name}" if rel else name for name in sorted(folders))
        linked.extend(f"{rel}/{name}" if rel else name for name in sorted(links))
    return {rel: Folder(mtime, tuple(s for s in subs if (f"{rel}/{s}" if rel else s) in listed), tuple(images))  # entered ones only
            for rel, (mtime, subs, images) in listed.items()}


def is_folder(entry: os.DirEntry) -> bool:
    """Whether an entry is a folder or a link to one; False for a broken or looping link, which is then a file (probed if
    it has an image name: it fails there)."""
    try:
        return entry.is_dir()
    except OSError:  # is_dir() answers False for a missing target but raises ELOOP for a looping link
        return False


def folder_stamps(root: Path, folder: str, depth: int) -> list[tuple[str, int]]:
    """mtimes of root/folder and its subfolders down to `depth` levels (an mtime changes when an entry is added, removed or renamed)."""
    path = root / folder
    try:
        stamps = [(folder, path.stat().st_mtime_ns)]
        if depth == 0:
            return stamps
        with os.scandir(path) as entries:
            subfolders = sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))
    except OSError as exc:
        raise DataError(f"cannot read folder {path}: {exc.strerror or exc}") from None
    for name in subfolders:
        stamps += folder_stamps(root, f"{folder}/{name}", depth - 1)
    return stamps


def file_stamps(root: Path, names: Sequence[str]) -> list[tuple[str, int, int] | tuple[str]]:
    """(name, mtime, size) of each file under root, or (name,) for a missing one."""
    stamps = []
    for name in names:
        try:
            stat = (root / name).stat()
            stamps.append((name, stat.st_mtime_ns, stat.st_size))
        except FileNotFoundError:
            stamps.append((name,))
    return stamps


def class_folders(folders: dict[str, Folder], base: str, root: Path, mixed: str = "error") -> dict[str, str]:
    """Folders under `base` that hold images: class id (path below base) → folder (path below root). An inner folder's own
    images beside its subfolders are the class `<folder>/(own)` (mixed='class'), left out ('skip') or an error ('error');
    images in `base` itself are left out with 'skip', else an error."""
    prefix = f"{base}/" if base else ""
    classes, mixed_folders, empty = {}, [], []
    for rel, folder in sorted(folders.items()):
        if rel == base:
            if folder.images and mixed != "skip":
                mixed_folders.append(base or ".")
        elif rel.startswith(prefix):
            if folder.images and folder.subfolders and mixed == "error":
                mixed_folders.append(rel)
            elif folder.images and folder.subfolders and mixed == "class":
                classes[f"{rel[len(prefix):]}/{OWN_CLASS}"] = rel
            elif folder.images and not folder.subfolders:
                if rel[len(prefix):] in classes:
                    raise DataError(f"{root / rel} is named {OWN_CLASS}, the class of its parent folder's own images; "
                                    "rename it or pass mixed='skip'")
                classes[rel[len(prefix):]] = rel
            elif not folder.subfolders:
                empty.append(rel)
    problems = []
    if mixed_folders:
        problems.append(f"folders holding both images and subfolders: {', '.join(mixed_folders)} (mixed='class' makes an inner "
                        "folder's own images a class; mixed='skip' leaves them out, and those of the top folder)")
    if empty:
        problems.append(f"folders without any image file: {', '.join(empty)}")
    if not classes and not problems:
        problems.append(f"no class folders with images under {base or '.'}")
    if problems:
        raise DataError(f"class folder problems under {root}: " + "; ".join(problems))
    return classes


def class_name(class_id: str) -> str:
    """A class's name: the last part of its id, or for a folder's own images that folder's name."""
    parts = class_id.split("/")
    return parts[-2] if parts[-1] == OWN_CLASS and len(parts) > 1 else parts[-1]


def split_folders(top: Sequence[str], root: Path, holds_folders: Callable[[str], bool]) -> dict[str, str]:
    """Split of each top-level folder when any is a split folder: named as a split (train, val or valid or validation,
    test) and holding class folders; {} when none is (a folder of images named `train` is a class, as in CIFAR-100)."""
    splits = {name: SPLIT_OF_FOLDER[name] for name in top if name in SPLIT_OF_FOLDER and holds_folders(name)}
    if not splits:
        return {}
    others = [name for name in top if name not in splits]
    if others:
        raise DataError(f"{root} has split folders ({', '.join(splits)}) and other folders beside them: {', '.join(others)}; "
                        "a split layout holds only train/, val/ (or valid/ or validation/) and test/, so move the others away")
    vals = [name for name, split in splits.items() if split == "val"]
    if len(vals) > 1:
        raise DataError(f"{root} has {' and '.join(vals)} folders; keep one val folder")
    if "train" not in splits:
        raise DataError(f"{root} has {' and '.join(top)} folders but no train folder")
    return splits


def split_layout(folders: dict[str, Folder], root: Path, mixed: str = "error") -> dict[str, dict[str, str]]:
    """Class folders per split: root's folders are split folders (see `split_folders`) or are all training classes."""
    top = folders[""].subfolders
    splits = split_folders(top, root, lambda name: bool(folders[name].subfolders))
    if not splits:
        return {"train": class_folders(folders, "", root, mixed)}
    if folders[""].images and mixed != "skip":
        raise DataError(f"{root} holds images beside its {', '.join(top)} folders; put them in class folders inside a split")
    layout = {split: class_folders(folders, name, root, mixed) for split in SPLITS for name, of in splits.items() if of == split}
    unknown = {split: sorted(set(classes) - set(layout["train"])) for split, classes in layout.items()}
    if any(unknown.values()):
        named = "; ".join(f"{split}: {', '.join(ids)}" for split, ids in unknown.items() if ids)
        raise DataError(f"{root}: classes missing from train/ ({named})")
    return layout


def probe_file(path: Path, cap: int) -> tuple[int, int, int, int, bytes, bool, str | None]:
    """A file's size, mtime (ns), device, inode, digest of its first HEAD_BYTES, whether its name is a symlink, and why it
    is not a readable image of at most `cap` pixels (None when it is)."""
    try:
        stat = path.stat()  # a broken or looping symlink fails here
        reason = probe_image(path, cap)
        if reason is None:
            with open(path, "rb") as f:  # just read by the probe: the head costs no further disk access
                head = hashlib.blake2b(f.read(HEAD_BYTES)).digest()
            return stat.st_size, stat.st_mtime_ns, stat.st_dev, stat.st_ino, head, path.is_symlink(), None
    except OSError as exc:
        reason = f"cannot read ({exc.strerror or exc})"
    return 0, 0, 0, 0, b"", False, reason


def probe_all(root: Path, paths: Sequence[str], cap: int) -> tuple[np.ndarray, list[tuple[str, str]], list[int | None]]:
    """(size, mtime_ns) of every file, int64 [n, 2], the failures (relative path, reason), and per file the position of
    an earlier file of the same content (see `duplicates_of`) or None, in the order of `paths`; in a thread pool."""
    def probe_chunk(chunk: Sequence[str]) -> list[tuple[int, int, int, int, bytes, bool, str | None]]:
        return [probe_file(root / p, cap) for p in chunk]

    chunks = [paths[i:i + PROBE_CHUNK] for i in range(0, len(paths), PROBE_CHUNK)]
    with ThreadPoolExecutor() as pool:
        probes = [probe for chunk in pool.map(probe_chunk, chunks) for probe in chunk]
    stamps = np.array([probe[:2] for probe in probes], dtype=np.int64).reshape(-1, 2)
    failures = [(p, probe[-1]) for p, probe in zip(paths, probes) if probe[-1]]
    return stamps, failures, duplicates_of(root, paths, [None if probe[-1] else probe[:6] for probe in probes])


def duplicates_of(root: Path, paths: Sequence[str], probes: Sequence[tuple[int, int, int, int, bytes, bool] | None]) -> list[int | None]:
    """Per readable file (`probes` as from `probe_file`, None for others), the position of the file it copies, else None:
    of a file reached under several names (same device and inode) the first name that is no symlink is kept (the file
    where it lies), else the first; of files with the same bytes (same size and head, then the same sha256) the first."""
    first: dict[tuple, int] = {}
    same: list[int | None] = [None] * len(probes)
    for i in sorted(range(len(probes)), key=lambda i: (probes[i] is None or probes[i][5], i)):
        if probes[i] is not None:
            same[i] = first.setdefault(probes[i][2:4], i)
    alike: dict[tuple, list[int]] = {}
    for i, probe in enumerate(probes):
        if probe is not None and same[i] == i:
            alike.setdefault((probe[0], probe[4]), []).append(i)
    suspects = sorted(i for group in alike.values() if len(group) > 1 for i in group)  # in path order: the first copy is kept
    with ThreadPoolExecutor() as pool:
        digests = dict(zip(suspects, pool.map(lambda i: file_digest(root / paths[i]), suspects)))
    for i in suspects:
        same[i] = first.setdefault(digests[i], i)
    return [None if s is None or s == i else same[s] for i, s in enumerate(same)]


def file_digest(path: Path) -> bytes:
    """sha256 of a file's bytes; its path if it cannot be read (it then matches no other file)."""
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").digest()
    except OSError:
        return os.fsencode(str(path))


def list_files(layout: dict[str, dict[str, str]], folders: dict[str, Folder], classes: Sequence[str]):
    """Per file in (split, class) order: its path relative to root, its label and its split code."""
    label_of = {c: i for i, c in enumerate(classes)}
    paths, labels, splits = [], [], []
    for split, class_dirs in layout.items():
        for class_id in sorted(class_dirs):
            files = folders[class_dirs[class_id]].images
            paths += [f"{class_dirs[class_id]}/{name}" for name in files]
            labels += [label_of[class_id]] * len(files)
            splits += [split_code(split)] * len(files)
    return paths, np.array(labels, dtype=np.int32), np.array(splits, dtype=np.uint8)


def index_files(root: Path, paths: Sequence[str], labels: np.ndarray, splits: np.ndarray, classes: Sequence[str],
                class_names: Sequence[str], corrupt: str, val_fraction: float, test_fraction: float = 0.0,
                skipped_folders: Sequence[str] = ()) -> DataIndex:
    """Index image files (paths relative to root, grouped by folder) in their order: probe, drop or report bad ones, drop
    every copy of a file but the first (links to it, byte-identical files: so that no image sits in two splits or classes)
    and the classes left without files, carve test then val from train (see `carve`), digest stamps; `skipped_folders` (unlisted ones) join the skipped files."""
    stamps, failures, copy_of = probe_all(root, paths, max_pixels())
    if failures and corrupt == "error":
        raise DataError(f"{len(failures)} unreadable image files under {root} "
                        f"(pass corrupt='skip' to leave them out of the index):\n{listing(failures)}")
    bad = {p for p, _ in failures}
    keep = np.array([p not in bad and copy is None for p, copy in zip(paths, copy_of)], dtype=bool)
    kept = [p.rpartition("/") for p, k in zip(paths, keep) if k]
    folder_of, names = [folder for folder, _, _ in kept], [name for _, _, name in kept]
    folders = tuple(dict.fromkeys(folder_of))
    position = {folder: i for i, folder in enumerate(folders)}
    folder_ids = np.array([position[f] for f in folder_of], dtype=np.int32)
    labels, splits = labels[keep], splits[keep]
    present = np.flatnonzero(np.bincount(labels, minlength=len(classes)))  # a class whose every file is a copy of another's goes
    if len(present) < len(classes):
        labels = np.searchsorted(present, labels).astype(np.int32)
        classes, class_names = [classes[c] for c in present], [class_names[c] for c in present]
    if val_fraction > 0 or test_fraction > 0:
        keys = text_keys(f"{classes[label]}/{n}" for label, n in zip(labels.tolist(), names))
        splits = carve(splits, labels, keys, val=val_fraction, test=test_fraction)
    files = np.array([os.fsencode(n) for n in names], dtype=np.bytes_)
    duplicates = tuple(f"{p} = {paths[copy]}" for p, copy in zip(paths, copy_of) if copy is not None)
    return DataIndex(labels=labels, splits=splits, classes=tuple(classes), class_names=tuple(class_names), files=files,
                     folder_ids=folder_ids, folders=folders, skipped=tuple(sorted(bad)) + tuple(skipped_folders),
                     content=stamps_digest(stamps[keep]), duplicates=duplicates)


def cached_index(kind: str, key: str, build: Callable[[], DataIndex]) -> DataIndex:
    """The index cached under `kind-key`, built and saved on the first call."""
    path = cache_dir("index") / f"{kind}-{cache_key(key, max_pixels())}.npz"  # the pixel cap decides which files are skipped
    if path.exists():
        return DataIndex.load(path)
    index = build()
    index.save(path)
    return index


def load_files(root: Path, index: DataIndex, samples: np.ndarray, size: int | None) -> np.ndarray:
    """Decode the samples' files (relative to root) to RGB (see `decode_files`: in processes, or with nvjpeg); every failure in one DataError."""
    paths = [index.path(i) for i in np.asarray(samples, dtype=np.int64).tolist()]
    decoded = decode_files(root, paths, size)
    failures = [(p, reason) for p, (_, reason) in zip(paths, decoded) if reason]
    if failures:
        raise DataError(f"could not decode {len(failures)} of {len(paths)} images under {root}:\n{listing(failures)}")
    images = [pixels for pixels, _ in decoded]
    odd = next((i for i, image in enumerate(images) if image.shape != images[0].shape), None)
    if odd is not None:
        raise DataError(f"images under {root} differ in size ({paths[0]} is {images[0].shape[1]}×{images[0].shape[0]}, "
                        f"{paths[odd]} is {images[odd].shape[1]}×{images[odd].shape[0]}); pass size=N to resize them to N×N")
    return np.stack(images) if images else np.zeros((0, size or 0, size or 0, 3), dtype=np.uint8)


@dataclasses.dataclass(frozen=True)
class ImageFolder(FileSource):
    """Image files in class folders (root/<class>/*.jpg); nested folders form a class tree; optional train/val/test."""

    name = "image_folder"
    location_params = ("root", "corrupt")  # skipped files are recorded in the index itself
    val_fraction: float = 0.1
    corrupt: Literal["error", "skip"] = "error"
    test_fraction: float = 0.0
    mixed: Literal["class", "skip", "error"] = "class"  # what an inner folder's own images beside its subfolders become

    def validate(self) -> None:
        """The root must be an existing folder; val_fraction and test_fraction lie in [0, 1), and so does their sum."""
        self.check_root()
        check_val_fraction(self.name, self.val_fraction)
        check_val_fraction(self.name, self.test_fraction, "test_fraction")
        check_val_fraction(self.name, self.val_fraction + self.test_fraction, "val_fraction + test_fraction")

    @cached_property
    def scanned(self) -> tuple[dict[str, Folder], tuple[tuple[str, str], ...]]:
        """The folders under root (see `scan`), and those that cannot be listed: a DataError naming them unless corrupt='skip'."""
        unreadable: list[tuple[str, str]] = []
        folders = scan(self.path, unreadable=unreadable)
        if unreadable and self.corrupt == "error":
            raise DataError(f"{len(unreadable)} folders under {self.path} cannot be listed "
                            f"(pass corrupt='skip' to leave them out of the index):\n{listing(unreadable)}")
        return folders, tuple(unreadable)

    @cached_property
    def carved(self) -> dict[str, float]:
        """The fractions of train carved as test and val in effect: 0 for a split that root has a folder of (test; val,
        valid or validation), which gives that split itself."""
        folders, _ = self.scanned
        present = set(split_folders(folders[""].subfolders, self.path, lambda name: bool(folders[name].subfolders)).values())
        return {"test": 0.0 if "test" in present else self.test_fraction, "val": 0.0 if "val" in present else self.val_fraction}

    @cached_property
    def has_mixed(self) -> bool:
        """Whether an inner folder (not root, not a split folder) holds images beside subfolders: only then does `mixed` shape the data."""
        folders, _ = self.scanned
        tops = {""} | set(split_folders(folders[""].subfolders, self.path, lambda name: bool(folders[name].subfolders)))
        return any(f.images and f.subfolders for rel, f in folders.items() if rel not in tops)

    def data_params(self) -> dict[str, object]:
        """The parameters that shape the data, the carved fractions as in effect and `mixed` only where it acts (so an
        ignored one changes no key, and trees indexed before it existed keep their fingerprints)."""
        params = super().data_params() | {f"{split}_fraction": fraction for split, fraction in self.carved.items()}
        return params if self.has_mixed else {k: v for k, v in params.items() if k != "mixed"}

    def build_index(self) -> DataIndex:
        """The folder tree's index, reloaded from the cache while no folder under root has changed."""
        folders, unreadable = self.scanned
        return cached_index("image_folder", self.cache_key(folders, unreadable), lambda: self.index_folders(folders, unreadable))

    def cache_key(self, folders: dict[str, Folder], unreadable: Sequence[tuple[str, str]]) -> str:
        """Key of the absolute root, every folder's mtime, the folders that cannot be listed and the parameters that shape the index."""
        mtimes = sorted((rel, f.mtime_ns) for rel, f in folders.items())
        return cache_key(INDEX_CACHE_VERSION, self.path, sorted(self.carved.items()), self.corrupt, self.mixed, mtimes, sorted(unreadable))

    def index_folders(self, folders: dict[str, Folder], unreadable: Sequence[tuple[str, str]] = ()) -> DataIndex:
        """Index the scanned folders: class ids are folder paths (below the split folder), names their last part."""
        layout = split_layout(folders, self.path, self.mixed)
        classes = sorted(layout["train"])
        paths, labels, splits = list_files(layout, folders, classes)
        return index_files(self.path, paths, labels, splits, classes, [class_name(c) for c in classes],
                           self.corrupt, self.carved["val"], self.carved["test"], skipped_folders=[f"{rel}/" for rel, _ in unreadable])

    def build_tree(self) -> ClassTree:
        """Nested class folders as a tree: node ids are folder paths, names their last part."""
        return ClassTree.from_paths([c.split("/") for c in self.index.classes], root=self.name)

    def load(self, samples: np.ndarray, size: int | None = None) -> np.ndarray:
        """Decode the samples' files to RGB; every failure is reported in one DataError."""
        return load_files(self.path, self.index, samples, size)

