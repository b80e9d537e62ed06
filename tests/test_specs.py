"""Spec strings: parsing, canonical form, errors, and the parse∘canonical round trip."""

import dataclasses
from typing import Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transferlab.components import Component, signature
from transferlab.errors import SpecError
from transferlab.registry import Registry
from transferlab.specs import Call, parse_chain, parse_one


@dataclasses.dataclass(frozen=True)
class Widget(Component):
    """A policy-kind component with one field of every supported type."""

    kind = "policy"
    name = "widget"
    n: int
    rate: float = 0.5
    label: str = "x"
    flag: bool = False
    mode: Literal["fast", "slow"] = "fast"
    tags: tuple[str, ...] = ()
    pair: tuple[int, int] = (1, 2)
    limit: int | None = None


@dataclasses.dataclass(frozen=True)
class Plain(Component):
    """A component without parameters."""

    kind = "policy"
    name = "plain"


@pytest.fixture(scope="module")
def registry():
    reg = Registry()
    reg.add("policy", Widget, "tests")
    reg.add("policy", Plain, "tests")
    return reg


def test_parse_forms():
    assert parse_one("plain") == Call("plain")
    assert parse_one(" widget( 3 , rate=0.25 ) ") == Call("widget", (3,), (("rate", 0.25),))
    calls = parse_chain("widget(n=1, label='a|b') | plain|widget(n=2)")
    assert [c.name for c in calls] == ["widget", "plain", "widget"]
    assert calls[0].kwargs == (("n", 1), ("label", "a|b"))


def test_canonical_sorts_and_fills_defaults(registry):
    w = registry.parse("policy", "widget(tags=('b',), n=3)")
    assert w.spec() == "widget(flag=False, label='x', limit=None, mode='fast', n=3, pair=[1, 2], rate=0.5, tags=['b'])"
    assert registry.parse("policy", "plain").spec() == "plain"
    assert w.flat_params("policy.0")["policy.0.tags"] == "['b']"
    assert w.digest() == registry.parse("policy", w.spec()).digest()


def test_values_are_coerced(registry):
    w = registry.parse("policy", "widget(n=1, rate=2, tags=['a', 'b'], pair=[3, 4], limit=7)")
    assert w.rate == 2.0 and isinstance(w.rate, float)
    assert w.tags == ("a", "b") and w.pair == (3, 4) and w.limit == 7


@pytest.mark.parametrize("text, message", [
    ("", "empty spec"),
    ("widget(n=", "malformed spec"),
    ("widget n=1", "malformed spec"),
    ("1 + 2", "expected `name`"),
    ("a.b(n=1)", "expected `name`"),
    ("widget(n=open('x'))", "is not a Python literal"),
    ("widget(n=__import__('os').getpid())", "is not a Python literal"),
    ("widget(**{'n': 1})", "`**` is not allowed"),
    ("widget(*[1])", "`*` is not allowed"),
    ("widget(n=1, n=2)", "given twice"),
    ("widget(1, n=2)", "given twice"),
    ("widgt(n=1)", "did you mean 'widget'"),
    ("nothing_like_it", "registered: plain, widget"),
    ("widget(n=1, size=2)", "has no parameter 'size'"),
    ("widget(rate=0.1)", "is missing 'n'"),
    ("widget(n='3')", "parameter 'n' expects int"),
    ("widget(n=True)", "parameter 'n' expects int"),
    ("widget(n=1, rate='a')", "parameter 'rate' expects float"),
    ("widget(n=1, rate=float('nan'))", "is not a Python literal"),
    ("widget(n=1, mode='medium')", "expects 'fast'|'slow'"),
    ("widget(n=1, tags='ab')", "expects list[str]"),
    ("widget(n=1, pair=[1])", "needs 2 items"),
    ("widget(1, 0.5, 'x', False, 'fast', (), (1, 2), None, 9)", "takes 8 parameters"),
])
def test_errors_are_specific(registry, text, message):
    with pytest.raises(SpecError, match=None) as info:
        registry.parse_chain("policy", text)
    assert message in str(info.value)


def test_signature_lists_types_and_defaults():
    assert signature(Widget).startswith("widget(n: int, rate: float = 0.5, label: str = 'x', flag: bool = False, mode: 'fast'|'slow' = 'fast'")


def test_chain_is_refused_where_one_component_is_expected(registry):
    with pytest.raises(SpecError, match="chain of 2"):
        registry.parse("policy", "plain | plain")


widget_params = st.fixed_dictionaries(
    {"n": st.integers(-10**12, 10**12)},
    optional={
        "rate": st.floats(allow_nan=False, allow_infinity=False) | st.integers(-1000, 1000),
        "label": st.text(max_size=12),
        "flag": st.booleans(),
        "mode": st.sampled_from(["fast", "slow"]),
        "tags": st.lists(st.text(max_size=5), max_size=4).map(lambda v: v if len(v) % 2 else tuple(v)),
        "pair": st.tuples(st.integers(-5, 5), st.integers(-5, 5)),
        "limit": st.none() | st.integers(0, 100),
    },
)


@settings(max_examples=300, deadline=None)
@given(params=widget_params, spaces=st.sampled_from(["", " ", "  "]))
def test_parse_canonical_is_stable(registry, params, spaces):
    text = "widget(" + f",{spaces}".join(f"{k}{spaces}={spaces}{v!r}" for k, v in params.items()) + ")"
    first = registry.parse("policy", text)
    canonical = first.spec()
    again = registry.parse("policy", canonical)
    assert again == first
    assert again.spec() == canonical
    assert registry.parse_chain("policy", f"{canonical} | plain | {canonical}")[2] == first


@pytest.mark.parametrize("text, hint", [
    ("image_folder(root=data)", "text goes in quotes: \"root='data'\""),
    ("image_folder(root=data/train)", "text goes in quotes: \"root='data/train'\""),
    ("exclude(classes=['goldfish', tench])", "text goes in quotes: 'tench'"),
    ("image_folder(root=f(x))", None),
    ("exclude(classes=[tench])", "text goes in quotes: 'tench'"),
    ("random_classes(k=5) images_per_class(n=4)", "put `|` between them: 'random_classes(k=5) | images_per_class(n=4)'"),
    ("random_classes(k=5)images_per_class", "put `|` between them: 'random_classes(k=5) | images_per_class'"),
    ("random_classes(k=5) | images_per_class(n=4", None),
])
def test_malformed_specs_say_what_to_write_instead(text, hint):
    with pytest.raises(SpecError) as info:
        parse_chain(text)
    message = str(info.value)
    assert len(message.splitlines()) == 1
    if hint is None:
        assert "quotes" not in message and "put `|`" not in message
    else:
        assert message.endswith(hint), message
