"""WordNet 3.0 through nltk: nltk's own data, else a WordNet database folder staged into a private nltk data folder.

nltk is imported where WordNet is needed, not at plugin load: importing it takes over a second.
"""

import os
import shutil
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from transferlab import DataError, cache_dir, storage

if TYPE_CHECKING:
    from .nltk_reader import WordNetReader

WORDNET_DIR_ENV = "TRANSFERLAB_WORDNET_DIR"
DEBIAN_DIR = "/usr/share/wordnet"  # Debian packages wordnet-base and wordnet-sense-index
VERSION = "3.0"  # ImageNet wnids are WordNet 3.0 noun offsets

POS = ("noun", "verb", "adj", "adv")
REQUIRED_FILES = tuple(f"{kind}.{pos}" for kind in ("data", "index") for pos in POS) + tuple(f"{pos}.exc" for pos in POS)
OPTIONAL_FILES = ("index.sense", "cntlist.rev")  # only sense keys and lemma counts read them
# The lexicographer files in number order (WordNet's lexnames(5WN)); no Debian package ships this table.
LEXNAMES = (
    "adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal", "noun.artifact", "noun.attribute",
    "noun.body", "noun.cognition", "noun.communication", "noun.event", "noun.feeling", "noun.food", "noun.group",
    "noun.location", "noun.motive", "noun.object", "noun.person", "noun.phenomenon", "noun.plant", "noun.possession",
    "noun.process", "noun.quantity", "noun.relation", "noun.shape", "noun.state", "noun.substance", "noun.time",
    "verb.body", "verb.change", "verb.cognition", "verb.communication", "verb.competition", "verb.consumption",
    "verb.contact", "verb.creation", "verb.emotion", "verb.motion", "verb.perception", "verb.possession", "verb.social",
    "verb.stative", "verb.weather", "adj.ppl",
)
HOW_TO_INSTALL = (
    "WordNet 3.0 was not found. Either download nltk's copy (`python -m nltk.downloader wordnet`), "
    f"or install the WordNet database (`apt-get install wordnet-base wordnet-sense-index`, which fills {DEBIAN_DIR}) "
    f"or point {WORDNET_DIR_ENV} at a WordNet 3.0 dict folder (data.noun, index.noun, ...)"
)


@cache
def wordnet() -> "WordNetReader":
    """The WordNet 3.0 reader, loaded once per process."""
    return load_wordnet()


def load_wordnet() -> "WordNetReader":
    """A fresh reader on the WordNet `find_wordnet` names, a database folder staged first."""
    found = find_wordnet()
    return open_reader(stage_wordnet(found) if isinstance(found, Path) else found)


def find_wordnet():
    """nltk's own `corpora/wordnet` (an nltk path pointer) if present, else the database folder to stage, else a DataError."""
    import nltk

    try:
        return nltk.data.find("corpora/wordnet")
    except LookupError:
        return database_dir()


def database_dir() -> Path:
    """The WordNet database folder to stage: `$TRANSFERLAB_WORDNET_DIR`, else Debian's folder; DataError if incomplete."""
    folder = Path(os.environ.get(WORDNET_DIR_ENV) or DEBIAN_DIR).expanduser()
    missing = [f for f in REQUIRED_FILES if not (folder / f).is_file()]
    if missing:
        raise DataError(f"{HOW_TO_INSTALL}. ({folder} lacks {', '.join(missing)})")
    return folder


def stage_wordnet(folder: Path) -> Path:
    """Copy a WordNet database folder (plus the lexnames table) into the private nltk data folder; return the corpus root."""
    import nltk

    data_root = cache_dir("nltk_data")
    target = data_root / "corpora" / "wordnet"
    files = [f for f in REQUIRED_FILES + OPTIONAL_FILES if (folder / f).is_file()]
    if not is_staged(folder, target, files):
        tmp = target.with_name(f".wordnet.{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            with storage(data_root, "a copy of WordNet", sum((folder / f).stat().st_size for f in files)):
                tmp.mkdir(parents=True)
                for name in files:
                    shutil.copyfile(folder / name, tmp / name)  # copies, never links: nltk refuses links out of its data path
                table = "".join(f"{i:02d}\t{name}\t{POS.index(name.split('.')[0]) + 1}\n" for i, name in enumerate(LEXNAMES))
                (tmp / "lexnames").write_text(table)
                for path in (data_root, tmp.parent, tmp, *tmp.iterdir()):
                    path.chmod(0o755 if path.is_dir() else 0o644)  # nltk refuses group- or world-writable data
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)  # a half copy would never be used
            raise
        shutil.rmtree(target, ignore_errors=True)
        try:
            tmp.rename(target)
        except OSError:  # another process staged it first
            shutil.rmtree(tmp, ignore_errors=True)
    if str(data_root) not in nltk.data.path:
        nltk.data.path.insert(0, str(data_root))
    return nltk.data.find("corpora/wordnet", paths=[str(data_root)])


def is_staged(folder: Path, target: Path, files: list[str]) -> bool:
    """Whether `target` already holds the lexnames table and same-sized copies of `files`."""
    return (target / "lexnames").is_file() and all(
        (target / f).is_file() and (target / f).stat().st_size == (folder / f).stat().st_size for f in files
    )


def open_reader(root) -> "WordNetReader":
    """A WordNet reader on an nltk corpus root; DataError unless it is WordNet 3.0."""
    from .nltk_reader import open_corpus

    reader = open_corpus(root)
    version = reader.get_version()
    if version != VERSION:
        raise DataError(f"WordNet at {root} is version {version}, but ImageNet wnids are WordNet {VERSION} offsets. {HOW_TO_INSTALL}")
    return reader
