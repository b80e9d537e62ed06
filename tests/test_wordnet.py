"""WordNet hierarchy and policies: the paper's label sets to the class, coarsen, exclude_under/overlap, tree_classes, class lists."""

import dataclasses
from collections import Counter

import numpy as np
import pytest

from test_tree_policies import check_clustered, check_coarsened, check_halves, check_spread, halves, under
from transferlab import (
    DataError,
    Manifest,
    PolicyError,
    Seeds,
    Source,
    SpecError,
    Subset,
    get_registry,
    make_manifest,
    policies,
    select,
    source,
)
from transferlab.data_index import DataIndex
from transferlab_subsets.class_policies import split_overlap
from transferlab_wordnet.access import wordnet
from transferlab_wordnet.class_list import read_wnids
from transferlab_wordnet.hierarchy import (
    ROOT,
    bottom_up_levels,
    chain,
    first_hypernym,
    lemma_name,
    top_down_levels,
    wordnet_tree,
)

IMAGENET = "class_list('imagenet-1k')"
BOTTOM_UP = [999, 977, 918, 877, 820, 753, 694, 596, 486, 345, 206, 79, 36, 17, 9, 5, 2, 1]
DOG, CANINE, CHIHUAHUA, TABBY, TENCH, SUN = "n02084071", "n02083346", "n02085620", "n02123045", "n01440764", "n09450163"

pytestmark = pytest.mark.usefixtures("loaded_wordnet")  # every test here needs WordNet; test_tree_policies.py holds those that do not


@pytest.fixture(scope="session")
def imagenet() -> list[str]:
    return read_wnids("imagenet-1k")


def run(policy: str, source_spec: str = IMAGENET) -> Manifest:
    return select(source_spec, policy)


def wnid_file(tmp_path, *wnids: str) -> str:
    path = tmp_path / "wnids.txt"
    path.write_text("".join(f"{w} {lemma_name(w)}\n" for w in wnids))
    return f"class_list({str(path)!r})"


def group_sizes(manifest) -> Counter:
    return Counter({name: int(n) for name, n in zip(manifest.class_names, manifest.class_counts())})


# --- hierarchy ---------------------------------------------------------------------------------------------------------

def test_first_hypernym_is_the_one_whose_name_sorts_first():
    hypernyms = wordnet().synset_from_pos_and_offset("n", int(DOG[1:])).hypernyms()  # in no fixed order in nltk 3.10
    assert sorted(s.name() for s in hypernyms) == ["canine.n.02", "domestic_animal.n.01"]
    assert first_hypernym(DOG) == CANINE
    toy_dog = first_hypernym(CHIHUAHUA)
    assert lemma_name(toy_dog) == "toy dog" and first_hypernym(toy_dog) == DOG
    assert chain(CHIHUAHUA)[0] == ROOT and chain(CHIHUAHUA)[-3:] == (DOG, toy_dog, CHIHUAHUA)


def test_a_synset_with_only_instance_hypernyms_still_reaches_entity():
    assert wordnet().synset_from_pos_and_offset("n", int(SUN[1:])).hypernyms() == []
    assert chain(SUN)[0] == ROOT and lemma_name(first_hypernym(SUN)) == "star"


def test_bottom_up_levels_match_the_papers_label_sets(imagenet):
    assert [len(set(level.values())) for level in bottom_up_levels(imagenet)] == BOTTOM_UP


def test_top_down_levels_match_the_papers_label_sets(imagenet):
    levels = top_down_levels(imagenet)
    assert [len(set(level.values())) for level in levels] == [127, 10, 2]
    largest = Counter(levels[0].values()).most_common(3)
    assert [(lemma_name(w), n) for w, n in largest] == [("mammal", 218), ("device", 124), ("container", 92)]


def test_wordnet_tree_over_imagenet(imagenet):
    tree = wordnet_tree(imagenet)
    assert tree.nodes[0] == ROOT and tree.names[0] == "entity" and tree.num_classes == 1000
    tench = tree.class_nodes[0]
    assert tree.nodes[tench] == TENCH and tree.names[tench] == "tench"
    assert [tree.nodes[a] for a in tree.ancestors(int(tench))] == list(chain(TENCH)[-2::-1])
    assert tree.height == 18


def test_a_class_that_is_an_ancestor_of_another_gets_its_own_leaf():
    tree = wordnet_tree([DOG, CHIHUAHUA])
    dog_leaf, chihuahua_leaf = tree.class_nodes.tolist()
    assert tree.nodes[dog_leaf] == f"{DOG}/self" and tree.nodes[tree.parents[dog_leaf]] == DOG
    assert tree.names[dog_leaf] == tree.names[tree.parents[dog_leaf]] == "dog"
    assert DOG in [tree.nodes[a] for a in tree.ancestors(chihuahua_leaf)]


# --- class lists -------------------------------------------------------------------------------------------------------

def test_class_list_has_one_pseudo_sample_per_class_and_no_images(imagenet):
    src = source(IMAGENET)
    assert src.index.classes == tuple(imagenet) and src.index.class_names[0] == "tench"
    assert src.index.class_counts("train").tolist() == [1] * 1000
    with pytest.raises(DataError, match="a class list has no images"):
        src.load(np.array([0]))


def test_class_list_errors():
    with pytest.raises(SpecError, match="imagenet-21k"):
        source("class_list('imagenet-2k')")
    with pytest.raises(SpecError, match="dataset"):
        source("class_list(name='imagenet-1k')")  # `name` is every component's registered name, not a parameter
    with pytest.raises(DataError, match="cannot be read"):
        source("class_list('/nonexistent/wnids.txt')").index


def test_select_top_down_127_gives_the_wnid_mapping():
    summary = run("wordnet_level(classes=127, method='top_down')").summary()
    assert summary["num_classes"] == 127 and len(summary["class_map"]) == 1000
    mammal = next(c["id"] for c in summary["classes"] if c["name"] == "mammal")
    assert summary["class_map"][CHIHUAHUA] == mammal and summary["class_map"][TABBY] == mammal


# --- wordnet_level and wordnet_depth -----------------------------------------------------------------------------------

@pytest.mark.parametrize("count", [918, 753, 486, 79, 9])
def test_wordnet_level_bottom_up_gives_the_papers_class_counts(count):
    assert run(f"wordnet_level(classes={count})").num_classes == count


def test_wordnet_level_top_down_groups():
    m = run("wordnet_level(classes=127, method='top_down')")
    assert group_sizes(m).most_common(3) == [("mammal", 218), ("device", 124), ("container", 92)]
    assert [run(f"wordnet_level(classes={n}, method='top_down')").num_classes for n in (10, 2)] == [10, 2]


def test_a_count_that_is_no_level_names_the_nearest_levels():
    with pytest.raises(PolicyError) as info:
        run("wordnet_level(classes=100)")
    assert "79 (below) and 206 (above)" in str(info.value) and "bottom_up" in str(info.value) and "coarsen(k=100)" in str(info.value)
    with pytest.raises(PolicyError, match=r"nearest levels: 127 \(below\);"):
        run("wordnet_level(classes=500, method='top_down')")


def test_wordnet_levels_need_wnid_classes():
    with pytest.raises(PolicyError, match="wnids"):
        run("wordnet_level(classes=9)", "synthetic(train=1, val=0, test=0)")
    with pytest.raises(SpecError, match="at least 1"):
        policies("wordnet_level(classes=0)")


def test_wordnet_depth_cuts_chains():
    assert [run(f"wordnet_depth(d={d})").num_classes for d in (17, 5, 0)] == [999, 36, 1]
    assert run("wordnet_depth(d=0)").classes == (ROOT,)


def test_levels_chain_with_other_policies():
    m = run("exclude_under(synsets='pascal_voc') | wordnet_level(classes=2, method='top_down')")
    assert m.num_classes == 2 and m.class_counts().sum() == 771


# --- coarsen -----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("k", [1, 2, 9, 100, 127, 999, 1000])
def test_coarsen_imagenet_to_exactly_k(k):
    check_coarsened(IMAGENET, f"coarsen(k={k})", k)


def test_coarsen_keeps_classes_balanced():
    m = check_coarsened(IMAGENET, "coarsen(k=100)", 100)
    assert m.class_counts().max() <= 17  # the largest of any 100-way cut of the tree: 10 is the mean
    assert check_coarsened(IMAGENET, "wordnet_level(classes=127, method='top_down') | coarsen(k=40)", 40).class_counts().max() == 218


def test_coarsen_21k_style_classes_that_are_ancestors(tmp_path):
    spec = wnid_file(tmp_path, DOG, CHIHUAHUA, "n02085782", TABBY, TENCH)  # dog, two breeds, a cat, a fish
    assert group_sizes(check_coarsened(spec, "coarsen(k=2)", 2)) == {"dog": 3, "vertebrate": 2}
    m = check_coarsened(spec, "coarsen(k=4)", 4)  # the class dog alone keeps its id; its breeds merge under toy dog
    assert dict(zip(m.classes, m.class_counts().tolist())) == {DOG: 1, "n02085374": 2, TABBY: 1, TENCH: 1}


# --- exclude_under and exclude_overlap ---------------------------------------------------------------------------------

def test_exclude_under_pascal_voc_leaves_the_papers_771_classes():
    assert run("exclude_under(synsets='pascal_voc')").num_classes == 771


def test_exclude_under_by_name_wnid_or_list():
    by_name = run("exclude_under(synsets='dog.n.01')")
    assert by_name.num_classes == 882 and by_name.classes == run(f"exclude_under(synsets='{DOG}')").classes
    assert run("exclude_under(synsets=['dog.n.01', 'cat.n.01'])").num_classes < 882


def test_exclude_under_follows_every_path_and_instance_hypernyms(tmp_path):
    # dog's first hypernym is canine; domestic_animal is its second. The sun is an instance of a star.
    spec = wnid_file(tmp_path, CHIHUAHUA, TABBY, SUN, TENCH)
    assert select(spec, "exclude_under(synsets='domestic_animal.n.01')").classes == (SUN, TENCH)
    assert select(spec, "exclude_under(synsets='star.n.01')").classes == (CHIHUAHUA, TABBY, TENCH)
    assert select(spec, f"exclude_under(synsets='{TENCH}')").classes == (CHIHUAHUA, TABBY, SUN)


def test_exclude_under_errors():
    with pytest.raises(SpecError, match="pascal_voc"):
        policies("exclude_under(synsets='dogs')")
    with pytest.raises(SpecError, match="at least one"):
        policies("exclude_under(synsets=[])")
    with pytest.raises(PolicyError, match="dgo.n.01"):
        run("exclude_under(synsets='dgo.n.01')")


def source_classes_kept(m: Manifest) -> set[str]:
    return {c for c, k in zip(m.source_classes, m.class_map.tolist()) if k >= 0}


@pytest.mark.parametrize("chain", [
    "wordnet_level(classes=127, method='top_down') | exclude_under(synsets='pascal_voc')",
    "exclude_under(synsets='pascal_voc') | wordnet_level(classes=2, method='top_down')",
    "coarsen(k=100) | exclude_under(synsets='pascal_voc')",
])
def test_exclude_under_decides_per_source_class_in_either_chain_order(chain):
    alone = run("exclude_under(synsets='pascal_voc')")
    under_pascal = set(alone.source_classes) - set(alone.classes)
    m = run(chain)
    assert len(source_classes_kept(m) & under_pascal) == 0 and source_classes_kept(m) == set(alone.classes)
    assert (m.samples == alone.samples).all()  # the 771-class set's images


def test_exclude_under_after_a_level_keeps_the_levels_labels_of_the_rest():
    level = run("wordnet_level(classes=127, method='top_down')").summary()["class_map"]
    m = run("wordnet_level(classes=127, method='top_down') | exclude_under(synsets='pascal_voc')").summary()
    assert len(m["class_map"]) == 771 and all(level[c] == new for c, new in m["class_map"].items())
    groups = Counter(m["class_map"].values())
    assert 0 < groups["n01861778"] < 218 and m["num_classes"] == len(groups)  # mammal keeps its non-PASCAL members


def test_exclude_overlap_after_a_merge_drops_only_the_overlap(tmp_path):
    target = wnid_file(tmp_path, CHIHUAHUA)
    m = run(f"wordnet_level(classes=127, method='top_down') | exclude_overlap(target={target!r})")
    assert source_classes_kept(m) == set(run("all").classes) - {CHIHUAHUA} and m.num_classes == 127
    assert group_sizes(m)["mammal"] == 217


@dataclasses.dataclass(frozen=True)
class NoIndex(Source):
    """A source whose index must not be built."""

    name = "no_index"

    def build_index(self) -> DataIndex:
        raise AssertionError("the source index was built")


def test_exclude_under_misspelt_synset_fails_before_the_source_index_is_built():
    with pytest.raises(PolicyError, match="dgo.n.01"):
        make_manifest(NoIndex(), policies("all | exclude_under(synsets=['pascal_voc', 'dgo.n.01'])"))
    with pytest.raises(PolicyError, match="n99999999"):
        make_manifest(NoIndex(), policies("exclude_under(synsets='n99999999')"))


def test_exclude_overlap_removes_classes_under_or_above_the_targets(tmp_path):
    (tmp_path / "target").mkdir()
    target = wnid_file(tmp_path / "target", CHIHUAHUA, TENCH)
    assert run(f"exclude_overlap(target={target!r})").num_classes == 998
    spec = wnid_file(tmp_path, DOG, CHIHUAHUA, TABBY)
    assert select(spec, f"exclude_overlap(target={target!r})").classes == (TABBY,)


def test_exclude_overlap_errors():
    with pytest.raises(SpecError, match="not a usable source spec"):
        policies("exclude_overlap(target='no_such_source')")
    with pytest.raises(PolicyError, match="its target"):
        run("exclude_overlap(target='synthetic(train=1, val=0, test=0)')")


def test_wordnet_components_are_registered():
    registry = get_registry()
    assert {"wordnet_level", "wordnet_depth", "coarsen", "exclude_under", "exclude_overlap"} <= {e.name for e in registry.entries("policy")}
    assert "class_list" in {e.name for e in registry.entries("source")}


def test_policies_apply_directly_to_a_subset():
    src = source(IMAGENET)
    subset = policies("wordnet_level(classes=9)")[0].apply(Subset.full(src.index), src.tree, Seeds(0))
    assert subset.num_classes == 9 and set(subset.classes) <= set(src.tree.nodes)


# --- split(how='min_overlap') ------------------------------------------------------------------------------------------

def test_min_overlap_split_of_imagenet_shares_far_less_of_the_tree_than_random():
    src = source(IMAGENET)
    a, b = halves(src, "min_overlap")
    check_halves(src, a, b)
    shared = split_overlap(src.tree, a, b)
    randomly = [split_overlap(src.tree, *halves(src, "random", seed)) for seed in range(3)]
    assert shared <= 5 and min(randomly) >= 50 * shared


def test_min_overlap_split_of_merged_classes():
    a = run("wordnet_level(classes=127, method='top_down') | split(part='A', how='min_overlap')")
    b = run("wordnet_level(classes=127, method='top_down') | split(part='B', how='min_overlap')")
    assert a.num_classes + b.num_classes == 127 and not set(a.classes) & set(b.classes)


# --- tree_classes ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(3))
def test_tree_classes_spread_and_clustered_over_imagenet(seed):
    src = source(IMAGENET)
    everything = under(src.tree, np.arange(1000))
    spread = under(src.tree, check_spread(src, "tree_classes(k=10)", seed))
    assert (everything[spread >= 2] >= 100).all()  # no two spread picks share a WordNet subtree of under 100 classes
    assert 1 <= spread[src.tree.node(DOG)] <= 2  # the 118 dogs get their share, 1.18
    clustered = under(src.tree, check_clustered(src, "tree_classes(k=10, how='clustered')", seed))
    assert everything[clustered == 10].min() == 10  # all ten under one node of exactly ten classes
    merged = run("wordnet_level(classes=127, method='top_down') | tree_classes(k=10, how='clustered')")
    assert merged.num_classes == 10 and set(merged.classes) < set(run("wordnet_level(classes=127, method='top_down')").classes)
