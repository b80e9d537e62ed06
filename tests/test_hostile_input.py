"""Hostile spec strings never crash: each is a parse or one `Error:` line with exit code 2, before any work or MLflow run."""

import importlib.util
import json
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mlflow import MlflowClient

from transferlab.cli import cli, error_line
from transferlab.errors import SpecError
from transferlab.specs import MAX_CHAIN_STEPS, MAX_SPEC_CHARS, Call, parse_chain
from transferlab.subset import seed_value

pytest_plugins = ["mlflow_store"]

SMALL = "synthetic(train=4, val=1, test=1)"


def one_error_line(*args: str) -> str:
    """Run the CLI; assert exit 2 with exactly one `Error:` line on stderr, nothing raised; return that line."""
    result = CliRunner().invoke(cli, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert len(lines[0]) < 400  # a bounded excerpt, never the whole spec
    return lines[0]


@pytest.mark.parametrize("option, spec", [
    ("--source", "synthetic(part='held\udcffout')"),  # a byte that is not UTF-8, as Python decodes it from argv
    ("--policy", "all\udcff"),
    ("--policy", "random_classes(k=\udcff)"),
])
def test_a_byte_that_is_not_utf8_is_one_line(option, spec):
    line = one_error_line("subset", option, spec)
    assert "not UTF-8" in line and "\\udcff" in line


def test_an_escaped_surrogate_in_a_string_value_is_refused():
    assert "lone surrogate" in one_error_line("subset", "--source", "class_list(dataset='a\\udcff.txt')")


def test_the_error_line_escapes_surrogates_a_strict_stream_cannot_write():
    assert error_line(SpecError("root '\udcff' is missing")) == "Error: root '\\udcff' is missing"


@pytest.mark.parametrize("chain", [" | ".join(["all"] * 3000), "|".join(["a"] * 3000), "|".join(["all"] * (MAX_CHAIN_STEPS + 1))])
def test_a_long_chain_is_one_line(chain):
    line = one_error_line("subset", "--source", SMALL, "--policy", chain)
    assert f"{MAX_SPEC_CHARS:,} characters" in line or f"{MAX_CHAIN_STEPS} steps" in line


def test_a_chain_at_the_limit_parses():
    assert len(parse_chain("|".join(["all"] * MAX_CHAIN_STEPS))) == MAX_CHAIN_STEPS


@pytest.mark.parametrize("spec, message", [
    ("all(k=" + "-" * 9000 + "1)", "nested too deeply"),  # RecursionError in the parser
    ("all(k=" + "-" * 400 + "x)", "is not a Python literal"),  # parses, but ast.unparse of it in the message recursed
    ("a." * 900 + "b(k=1)", "expected `name`"),  # the same for a call that is not `name(...)`
    ("all(k=" + "[" * 500 + "]" * 500 + ")", "too many nested parentheses"),
])
def test_deep_nesting_is_one_line(spec, message):
    assert message in one_error_line("subset", "--source", SMALL, "--policy", spec)


def test_a_100k_character_expression_is_one_line():
    line = one_error_line("subset", "--source", SMALL, "--policy", "all(k=" + "1+" * 50_000 + "1)")
    assert f"at most {MAX_SPEC_CHARS:,} characters" in line and "100,008 characters" in line


def test_a_4400_digit_integer_is_one_line():
    assert "4300 digits" in one_error_line("subset", "--source", SMALL, "--policy", "random_classes(k=" + "9" * 4400 + ")")


@pytest.mark.parametrize("digits", [40, 4000])
def test_a_huge_integer_that_parses_is_refused_by_its_field(digits):
    line = one_error_line("subset", "--source", SMALL, "--policy", f"random_classes(k=0x{'f' * digits})")
    assert f"an integer of {4 * digits:,} bits" in line and "2**63 - 1" in line


def test_a_folder_name_too_long_for_the_system_is_a_data_error_naming_the_root():
    line = one_error_line("subset", "--source", f"image_folder(root={'a' * 300!r})")
    assert line.startswith("Error: image_folder: root 'aaaa") and "(300 characters)" in line and "File name too long" in line


@pytest.mark.parametrize("root, message", [("a\x00b", "holds a NUL character"), ("~nobody_here_at_all/x", "cannot be resolved"),
                                           ("a/" * 2000, "is too long")])
def test_a_root_the_system_cannot_look_up_is_a_data_error(root, message):
    assert message in one_error_line("subset", "--source", f"image_folder(root={root!r})")


@pytest.mark.parametrize("source", ["mnist", "cifar100"])
def test_download_offline_is_one_line(source, tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    line = one_error_line("subset", "--source", f"{source}(root={str(tmp_path)!r}, download=True)")
    assert line.startswith(f"Error: {source}: could not download to {str(tmp_path)!r}: ") and "name resolution" in line


@pytest.mark.parametrize("training, message", [
    (f"train(epochs=0x{'f' * 40}, device='cpu')", "expects int | None, got an integer of 160 bits"),
    (f"train(epochs={2**40}, device='cpu')", "epochs must be at most 100,000"),
    (f"train(steps={2**62}, device='cpu')", "steps must be at most 100,000,000"),
    (f"train(batch_size={2**40}, device='cpu')", "batch_size must be at most 1,048,576"),
])
def test_huge_training_lengths_are_refused_before_any_run(store, training, message):
    assert message in one_error_line("pretrain", "--source", SMALL, "--training", training, "--no-wait")
    client = MlflowClient()
    assert client.search_runs([e.experiment_id for e in client.search_experiments()]) == []


def test_seeds_above_2_53_are_never_rounded():
    assert seed_value("9007199254740993") == 2**53 + 1  # through a float it would be 2**53
    assert seed_value(" 1e3 ") == 1000 and seed_value("7.0") == 7 and seed_value(5.0) == 5 and seed_value(2**63 - 1) == 2**63 - 1
    for bad in (float(2**53), 2.0**60, "9223372036854775808", 2**63, "1e999999999", "1.5", "nan", "-1", True, -1):
        with pytest.raises(SpecError, match="whole number >= 0 below 2\\*\\*63"):
            seed_value(bad)


def test_neighbouring_big_seeds_choose_different_subsets():
    def digest(seed: str) -> str:
        result = CliRunner().invoke(cli, ["subset", "--source", SMALL, "--policy", "random_classes(k=3)", "--seed", seed, "--json"])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)["digest"]

    assert digest("9007199254740993") != digest("9007199254740992")
    assert "below 2**63" in CliRunner().invoke(cli, ["subset", "--seed", str(2**63)]).stderr


# ---- properties ------------------------------------------------------------------------------------------------

# every code point, with the troublesome ones (surrogates from argv bytes, NUL, controls, syntax) made common
any_text = st.text(st.sampled_from("\udcff\ud800\x00\n\t\x1b\u202e|()[]{}'\"=,.*\\ é☃0x1") | st.integers(0, 0x10FFFF).map(chr),
                   max_size=80)
odd_values = ["None", "...", "1j", "b'x'", "'\\udcff'", "'\\x00'", "float('nan')", "1e999", "0x" + "f" * 80, "x", "[", "'", "{1: 2}",
              "{[1]}"]
literal = st.recursive(  # source text of values, most of them literals
    st.integers(-2**80, 2**80).map(str) | st.integers(-2**80, 2**80).map(hex) | st.floats().map(repr) | st.text(max_size=8).map(repr)
    | st.booleans().map(repr) | st.sampled_from(odd_values),
    lambda inner: (st.lists(inner, max_size=3).map(lambda items: f"[{', '.join(items)}]")
                   | st.tuples(inner, inner).map(lambda pair: f"({pair[0]}, {pair[1]})")),
    max_leaves=6,
)
names = st.sampled_from(["all", "random_classes", "images_per_class", "fixed_budget", "exclude", "fraction", "split", "synthetic",
                         "image_folder", "mnist", "class_list", "nope", "train"]) | st.from_regex(r"[A-Za-z_]\w{0,10}", fullmatch=True)
params = st.sampled_from(["k", "n", "p", "take", "images", "classes", "part", "how", "train", "val", "test", "seed", "size", "root",
                          "branching", "heldout", "download", "dataset", "bogus"])
call = st.builds(lambda name, args, kwargs: f"{name}({', '.join([*args, *(f'{k}={v}' for k, v in kwargs.items())])})",
                 names, st.lists(literal, max_size=2), st.dictionaries(params, literal, max_size=3)) | names
chain = st.lists(call, min_size=1, max_size=4).map(" | ".join)
spec_text = any_text | chain | st.builds(lambda a, b: a + b, chain, any_text)


@settings(max_examples=200, deadline=None)
@given(text=spec_text)
def test_parse_chain_returns_calls_or_raises_spec_error(text):
    try:
        calls = parse_chain(text)
    except SpecError as exc:
        assert "\n" not in str(exc) and len(str(exc)) < 400
        return
    assert calls and all(isinstance(c, Call) and c.name.isidentifier() for c in calls)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(source=spec_text | st.just(SMALL), policy=spec_text)
def test_subset_exits_0_or_with_one_error_line(source, policy):
    result = CliRunner().invoke(cli, ["subset", f"--source={source}", f"--policy={policy}"])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code in (0, 2), result.output
    if result.exit_code == 2:
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr


def test_the_hostile_input_benchmark_runs_clean_on_a_slice(capsys):
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "hostile_inputs.py"
    spec = importlib.util.spec_from_file_location("hostile_inputs", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["hostile_inputs"] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    try:
        assert module.main(["--limit", "30"]) == 0, capsys.readouterr().out
    finally:
        del sys.modules["hostile_inputs"]
    assert urllib.request.urlopen is not module.offline
    assert "│ all        │ 150 " in capsys.readouterr().out


@pytest.mark.parametrize("experiment", ["x" * 600, "bad\udcff"])
def test_an_experiment_name_mlflow_cannot_take_is_one_line_before_any_run(store, experiment):
    line = one_error_line("pretrain", "--source", SMALL, "--experiment", experiment)
    assert "experiment name" in line
    assert MlflowClient().search_runs([e.experiment_id for e in MlflowClient().search_experiments()]) == []


def test_a_file_the_cli_cannot_write_is_one_line(tmp_path):
    for args in (["subset", "--source", SMALL, "--save", "/proc/forbidden/here"], ["subset", "--source", SMALL, "--save", str(tmp_path / ("n" * 300))],
                 ["show", SMALL, "--out", "/proc/x.png"]):
        line = one_error_line(*args)
        assert line.startswith("Error: '/proc") or "File name too long" in line
