"""nltk's WordNet reader, imported only when WordNet is needed (importing nltk takes over a second)."""

import warnings

from nltk.corpus.reader import WordNetCorpusReader


class WordNetReader(WordNetCorpusReader):
    """nltk's WordNet reader without the WordNet-version map for multilingual data (it reads index.sense twice)."""

    def map_wn(self, version="wordnet"):
        return None


def open_corpus(root) -> WordNetReader:
    """A reader on an nltk corpus root, without nltk's warning that no multilingual data is attached."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The multilingual functions")
        return WordNetReader(root, None)
