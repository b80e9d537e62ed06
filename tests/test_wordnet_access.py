"""WordNet access routes: nltk's own data first, else a staged WordNet database folder, else an error naming both."""

import shutil
from pathlib import Path

import nltk
import pytest

from transferlab import DataError
from transferlab.cache import cache_dir
from transferlab_wordnet.access import DEBIAN_DIR, LEXNAMES, OPTIONAL_FILES, REQUIRED_FILES, WORDNET_DIR_ENV, load_wordnet, stage_wordnet

pytestmark = pytest.mark.skipif(not (Path(DEBIAN_DIR) / "index.sense").is_file(),
                                reason=f"needs WordNet 3.0 in {DEBIAN_DIR} (apt-get install wordnet-base wordnet-sense-index)")


@pytest.fixture
def no_nltk_data(monkeypatch):
    """nltk finds no data of its own (not even a developer's ~/nltk_data)."""
    monkeypatch.setattr(nltk.data, "path", [])
    monkeypatch.delenv("NLTK_DATA", raising=False)


def copy_database(folder: Path) -> Path:
    """A copy of the Debian WordNet database folder."""
    folder.mkdir(parents=True)
    for name in REQUIRED_FILES + OPTIONAL_FILES:
        shutil.copyfile(Path(DEBIAN_DIR) / name, folder / name)
    return folder


def test_a_database_folder_is_staged_as_copies_and_loaded(tmp_path, monkeypatch, no_nltk_data):
    monkeypatch.setenv(WORDNET_DIR_ENV, str(copy_database(tmp_path / "dict")))
    reader = load_wordnet()
    assert reader.synset_from_pos_and_offset("n", 1440764).name() == "tench.n.01"
    assert reader.synset("dog.n.01").lexname() == "noun.animal"
    staged = cache_dir("nltk_data") / "corpora" / "wordnet"
    assert not any(p.is_symlink() for p in staged.iterdir())
    lexnames = (staged / "lexnames").read_text().splitlines()
    assert len(lexnames) == len(LEXNAMES) == 45 and lexnames[5] == "05\tnoun.animal\t1" and lexnames[-1] == "44\tadj.ppl\t3"


def test_staging_twice_copies_once(tmp_path, no_nltk_data):
    folder = copy_database(tmp_path / "dict")
    first = stage_wordnet(folder)
    stamp = (Path(first) / "data.noun").stat().st_mtime_ns
    assert stage_wordnet(folder) == first and (Path(first) / "data.noun").stat().st_mtime_ns == stamp


def test_without_wordnet_the_error_names_both_routes(tmp_path, monkeypatch, no_nltk_data):
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv(WORDNET_DIR_ENV, str(tmp_path / "empty"))
    with pytest.raises(DataError) as info:
        load_wordnet()
    message = str(info.value)
    assert "python -m nltk.downloader wordnet" in message and "apt-get install wordnet-base wordnet-sense-index" in message
    assert WORDNET_DIR_ENV in message and "data.noun" in message


def test_nltk_data_comes_first(tmp_path, monkeypatch, no_nltk_data):
    staged = stage_wordnet(copy_database(tmp_path / "dict"))
    shutil.copytree(staged, tmp_path / "nltk_data" / "corpora" / "wordnet")
    monkeypatch.setattr(nltk.data, "path", [str(tmp_path / "nltk_data")])
    monkeypatch.setenv(WORDNET_DIR_ENV, str(tmp_path / "nowhere"))
    monkeypatch.setenv("TRANSFERLAB_CACHE", str(tmp_path / "fresh-cache"))
    assert load_wordnet().synset("dog.n.01").offset() == 2084071
    assert not (tmp_path / "fresh-cache" / "nltk_data").exists()


def test_another_wordnet_version_is_refused(tmp_path, monkeypatch, no_nltk_data):
    folder = copy_database(tmp_path / "dict")
    data_adj = folder / "data.adj"
    data_adj.write_text(data_adj.read_text().replace("WordNet 3.0 Copyright", "WordNet 3.1 Copyright", 1))
    monkeypatch.setenv(WORDNET_DIR_ENV, str(folder))
    with pytest.raises(DataError, match="version 3.1"):
        load_wordnet()
