"""WordNet access routes: nltk's own data first, else a staged WordNet database folder, else an error naming both."""

import shutil
from pathlib import Path

import nltk
import pytest

from transferlab import DataError
from transferlab.cache import cache_dir
from transferlab_wordnet.access import LEXNAMES, OPTIONAL_FILES, REQUIRED_FILES, WORDNET_DIR_ENV, find_wordnet, load_wordnet, stage_wordnet


@pytest.fixture
def database(loaded_wordnet, tmp_path):
    """A WordNet database folder: a copy of the files of the WordNet the tests load, wherever that came from."""
    folder = tmp_path / "dict"
    folder.mkdir()
    for name in REQUIRED_FILES + OPTIONAL_FILES:
        with loaded_wordnet.root.join(name).open() as file:  # nltk's path pointers read folders and zip files alike
            (folder / name).write_bytes(file.read())
    return folder


@pytest.fixture
def no_nltk_data(monkeypatch):
    """nltk finds no data of its own (not even a developer's ~/nltk_data)."""
    monkeypatch.setattr(nltk.data, "path", [])
    monkeypatch.delenv("NLTK_DATA", raising=False)


def test_a_database_folder_is_staged_as_copies_and_loaded(database, monkeypatch, no_nltk_data):
    monkeypatch.setenv(WORDNET_DIR_ENV, str(database))
    reader = load_wordnet()
    assert reader.synset_from_pos_and_offset("n", 1440764).name() == "tench.n.01"
    assert reader.synset("dog.n.01").lexname() == "noun.animal"
    staged = cache_dir("nltk_data") / "corpora" / "wordnet"
    assert not any(p.is_symlink() for p in staged.iterdir())
    lexnames = (staged / "lexnames").read_text().splitlines()
    assert len(lexnames) == len(LEXNAMES) == 45 and lexnames[5] == "05\tnoun.animal\t1" and lexnames[-1] == "44\tadj.ppl\t3"


def test_staging_twice_copies_once(database, no_nltk_data):
    first = stage_wordnet(database)
    stamp = (Path(first) / "data.noun").stat().st_mtime_ns
    assert stage_wordnet(database) == first and (Path(first) / "data.noun").stat().st_mtime_ns == stamp


def test_without_wordnet_the_error_names_both_routes(tmp_path, monkeypatch, no_nltk_data):
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv(WORDNET_DIR_ENV, str(tmp_path / "empty"))
    with pytest.raises(DataError) as info:
        load_wordnet()
    message = str(info.value)
    assert "python -m nltk.downloader wordnet" in message and "apt-get install wordnet-base wordnet-sense-index" in message
    assert WORDNET_DIR_ENV in message and "data.noun" in message


def test_find_wordnet_names_the_folder_to_stage_and_stages_nothing(database, tmp_path, monkeypatch, no_nltk_data):
    monkeypatch.setenv(WORDNET_DIR_ENV, str(database))
    monkeypatch.setenv("TRANSFERLAB_CACHE", str(tmp_path / "fresh-cache"))
    assert find_wordnet() == database and not (tmp_path / "fresh-cache").exists()


def test_nltk_data_comes_first(database, tmp_path, monkeypatch, no_nltk_data):
    staged = stage_wordnet(database)
    shutil.copytree(staged, tmp_path / "nltk_data" / "corpora" / "wordnet")
    monkeypatch.setattr(nltk.data, "path", [str(tmp_path / "nltk_data")])
    monkeypatch.setenv(WORDNET_DIR_ENV, str(tmp_path / "nowhere"))
    monkeypatch.setenv("TRANSFERLAB_CACHE", str(tmp_path / "fresh-cache"))
    assert load_wordnet().synset("dog.n.01").offset() == 2084071
    assert not (tmp_path / "fresh-cache" / "nltk_data").exists()


def test_another_wordnet_version_is_refused(database, monkeypatch, no_nltk_data):
    data_adj = database / "data.adj"
    data_adj.write_text(data_adj.read_text().replace("WordNet 3.0 Copyright", "WordNet 3.1 Copyright", 1))
    monkeypatch.setenv(WORDNET_DIR_ENV, str(database))
    with pytest.raises(DataError, match="version 3.1"):
        load_wordnet()
