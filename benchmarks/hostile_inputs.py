"""Hostile spec strings through the CLI's parsing: each must end cleanly (exit 0, or exit 2 with one `Error:` line).

A fixed, seeded corpus per option (--source, --policy, --training, --backbone, --tasks): the cases of issue 9 item 7,
random bytes, random unicode, deep nesting, huge numbers, wrong types, unknown names, quotes, and well-formed calls of
every registered component with extreme values. Source and policy specs run through `transferlab subset` in-process;
training, backbone and tasks specs through the parsing `pretrain` and `transfer` do first (PretrainSpec.parse,
TransferSpec.parse), with the CLI's error line, so nothing trains and MLflow is never touched. Downloads are cut off
(the run acts offline). Exits 1 if any case gives a traceback, runs over the per-case time limit, or ends untidily; a
case that crashes the interpreter itself (a segfault in C code) ends the run with faulthandler's traceback and a non-zero
status (--verbose names each case before it runs).

    python benchmarks/hostile_inputs.py [--limit N] [--seed 0] [--timeout 5] [--show 5] [--verbose]
"""

import argparse
import dataclasses
import faulthandler
import random
import signal
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from click.testing import CliRunner
from rich.console import Console
from rich.table import Table

from transferlab.cli import cli, error_line
from transferlab.defaults import DEFAULTS
from transferlab.errors import TransferlabError
from transferlab.pipeline import PretrainSpec, TransferSpec
from transferlab.plugins import get_registry
from transferlab.specs import MAX_CHAIN_STEPS, MAX_SPEC_CHARS
from transferlab.training_spec import Training

KINDS = ("source", "policy", "training", "backbone", "tasks")
PER_KIND = 150  # 750 cases in all
SMALL_SOURCE = "synthetic(train=4, val=1, test=1)"
VERDICTS = ("clean", "traceback", "hang", "untidy")
REGISTRY_KIND = {"source": "source", "policy": "policy", "backbone": "backbone", "tasks": "task"}


class Hang(BaseException):
    """A case ran past its time limit (a BaseException, so neither click nor the code under test swallows it)."""


@dataclasses.dataclass
class Outcome:
    """How one case ended (a verdict of VERDICTS; 'untidy': an exit or error output of another shape), and details."""

    verdict: str
    detail: str = ""


def extreme_ints() -> list[int]:
    """Ints at the edges: small, int32, float-exact, int64 and beyond."""
    return [0, 1, -1, 2, 3, 7, 10, 255, 1000, 2**31, 2**31 - 1, 2**53 + 1, 2**62, 2**63 - 1, 2**63, -2**63, 2**64, 10**18, 10**30]


def literal(rng: random.Random, depth: int = 0) -> str:
    """Source text of a random Python literal: extreme numbers, odd strings, containers."""
    choice = rng.randrange(12 if depth < 3 else 8)
    if choice == 0:
        return str(rng.choice(extreme_ints()))
    if choice == 1:
        return rng.choice(["0x" + "f" * rng.randint(1, 3000), "0b" + "1" * rng.randint(60, 70), "0o777", "-0x8000000000000000", "1_000"])
    if choice == 2:
        return rng.choice(["1e308", "1e309", "-1e999", "1e-400", "-0.0", "0.1", "1.5", "1e3", "9007199254740993.0", "1j", "-1-2j", "0.0"])
    if choice == 3:
        return repr(rng.choice(["", "x", "a|b", "\x00", "\n", "\udcff", "é", "☃", "\u202e", "../..", "~", "/", "/dev/null", "\\", "'",
                                '"']))
    if choice == 4:
        return rng.choice(["True", "False", "None", "...", "b'\\xff'", "'\\udcff'", "'\\x00'", "r'\\n'", "'''x'''", "u'x'"])
    if choice == 5:
        return repr("".join(chr(rng.randrange(0x20, 0x2FFF)) for _ in range(rng.randint(0, 40))))
    if choice == 6:
        return str(rng.randint(-5, 400))
    if choice == 7:
        return repr(rng.choice(["sgd", "adamw", "cosine", "step", "cpu", "cuda", "auto", "exact", "available", "A", "B", "resnet18",
                                "imagenet-1k", "n01440764", "pretrain", "heldout", "on", "off"]))
    items = [literal(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    if choice == 8:
        return "[" + ", ".join(items) + "]"
    if choice == 9:
        return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
    if choice == 10:
        return "{" + ", ".join(f"{i}: {v}" for i, v in enumerate(items)) + "}"
    return "{" + ", ".join(items or ["1"]) + "}"


def component_call(rng: random.Random, kind: str, roots: list[str]) -> str:
    """A well-formed call of a registered component (or a near miss) with random, often extreme, values."""
    if kind == "training":
        names, fields = ["train"], {"train": [f.name for f in dataclasses.fields(Training)]}
    else:
        entries = list(get_registry().entries(REGISTRY_KIND[kind]))
        names = [e.name for e in entries]
        fields = {e.name: [f.name for f in dataclasses.fields(e.cls)] for e in entries}
    name = rng.choice(names) if rng.random() < 0.9 else rng.choice(["nope", "Synthetic", "random_class", "resnet18", "train_", "é"])
    params = []
    for field in rng.sample(fields.get(name, ["k"]), k=min(len(fields.get(name, ["k"])), rng.randint(0, 3))):
        value = repr(rng.choice(roots)) if field in ("root", "dataset") and rng.random() < 0.7 else literal(rng)
        params.append(f"{field}={value}")
    if rng.random() < 0.1:
        params.append(f"{rng.choice(['bogus', 'Root', 'k', 'n'])}={literal(rng)}")
    return f"{name}({', '.join(params)})" if params or rng.random() < 0.5 else name


def listed_cases(kind: str, roots: list[str]) -> list[str]:
    """The cases of issue 9 item 7, in the shape of this option's specs."""
    call = {"source": "synthetic", "policy": "all", "training": "train", "backbone": "timm", "tasks": "linear"}[kind]
    cases = [
        f"{call}(x='\udcff')", f"{call}\udcff", "\udcff",  # a byte that is not UTF-8, as Python gives it from argv
        " | ".join([call] * 3000), "|".join([call] * (MAX_CHAIN_STEPS + 1)), "|".join([call] * 4999),  # long chains
        f"{call}(x=" + "[" * 500 + "]" * 500 + ")", "(" * 300 + call + ")" * 300, "-" * 9000 + "1", "a." * 4900 + "b",  # nesting
        f"{call}(x=" + "1+" * 50_000 + "1)", "x" * (MAX_SPEC_CHARS + 1),  # 100k characters, and one over the limit
        f"{call}(x=" + "9" * 4400 + ")", f"{call}(x=0x" + "f" * 4000 + ")",  # the int limit, and a huge int that parses
    ]
    if kind == "source":
        cases += [f"image_folder(root={'a' * 300!r})", f"image_folder(root={roots[0] + '/' + 'b' * 256!r})",
                  f"mnist(root={roots[0]!r}, download=True)", f"cifar100(root={roots[0]!r}, download=True)",
                  f"fashion_mnist(root={roots[0]!r}, download=True)", "image_folder(root='a\\x00b')", f"image_folder(root={'a/' * 2000!r})",
                  f"synthetic(train={2**62})", f"synthetic(seed={2**63})", "class_list(dataset='/dev/null\\x00.txt')",
                  "image_folder(root='~nobody_here/x')", "class_list(dataset='~nobody_here/x.txt')", "class_list(dataset='/dev/null.txt')"]
    if kind == "training":
        cases += [f"train(epochs=0x{'f' * 40})", f"train(epochs={2**62})", f"train(steps={2**63 - 1})", f"train(batch_size={2**40})",
                  "train(lr=1e308)", "train(lr=1e309)", "train(epochs=1.0)"]
    return cases


def random_text(rng: random.Random) -> str:
    """Noise: random bytes decoded as argv is (surrogateescape), random code points, or spec-like shards."""
    choice = rng.randrange(4)
    if choice == 0:
        return bytes(rng.randrange(256) for _ in range(rng.randint(1, 60))).decode("utf-8", "surrogateescape")
    if choice == 1:
        return "".join(chr(rng.choice([rng.randrange(0x20), rng.randrange(0x110000)])) for _ in range(rng.randint(1, 40)))
    if choice == 2:
        shards = ["(", ")", "[", "]", "{", "}", "'", '"', "|", "=", ",", "*", "**", ":", "\\", " ", "x", "1", "lambda", "\n"]
        return "".join(rng.choice(shards) for _ in range(rng.randint(1, 40)))
    depth = rng.randint(50, 3000)
    opener, closer = rng.choice([("(", ")"), ("[", "]"), ("{", "}"), ("f(", ")"), ("-", ""), ("not ", ""), ("~", ""), ("x.", "y")])
    return opener * depth + "1" + closer * depth


def corpus(seed: int = 0, per_kind: int = PER_KIND, roots: list[str] | None = None) -> list[tuple[str, str]]:
    """(option, spec text) pairs: for each option the listed cases, then noise and calls up to `per_kind`; seeded."""
    roots = roots or ["/nonexistent"]
    cases = []
    for kind in KINDS:
        rng = random.Random(f"{seed}:{kind}")
        texts = listed_cases(kind, roots)
        while len(texts) < per_kind:
            r = rng.random()
            if r < 0.35:
                texts.append(random_text(rng))
            elif r < 0.85:
                texts.append(component_call(rng, kind, roots))
            else:
                texts.append(" | ".join(component_call(rng, kind, roots) for _ in range(rng.randint(2, 5))))
        cases += [(kind, t) for t in texts[:per_kind]]
    return cases


def one_line(text: str) -> bool:
    """Whether the text is exactly one `Error: ...` line."""
    lines = text.strip("\n").split("\n")
    return len(lines) == 1 and lines[0].startswith("Error: ")


def via_cli(args: list[str]) -> Outcome:
    """Run the CLI in-process."""
    result = CliRunner().invoke(cli, args)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        return Outcome("traceback", "".join(traceback.format_exception(result.exception)[-3:]))
    if result.exit_code == 0 or (result.exit_code == 2 and one_line(result.stderr)):
        return Outcome("clean", f"exit {result.exit_code}")
    return Outcome("untidy", f"exit {result.exit_code}: {result.stderr[:300]!r}")


def via_parse(parse: Callable[[], object]) -> Outcome:
    """Run a parsing function, a user error turned into the CLI's error line."""
    try:
        parse()
    except TransferlabError as exc:
        line = error_line(exc)
        return Outcome("clean", "exit 2") if one_line(line) else Outcome("untidy", line[:300])
    except Exception as exc:  # a crash is what this benchmark counts
        return Outcome("traceback", "".join(traceback.format_exception(exc)[-3:]))
    return Outcome("clean", "exit 0")


def run_case(kind: str, text: str) -> Outcome:
    """Run one spec the way the CLI would; how it ended."""
    d = DEFAULTS
    if kind == "source":
        return via_cli(["subset", f"--source={text}", "--policy=all"])
    if kind == "policy":
        return via_cli(["subset", f"--source={SMALL_SOURCE}", f"--policy={text}"])
    if kind == "training":
        return via_parse(lambda: PretrainSpec.parse(SMALL_SOURCE, d["policy"], d["backbone"], text, 0))
    if kind == "backbone":
        return via_parse(lambda: PretrainSpec.parse(SMALL_SOURCE, d["policy"], text, d["training"], 0))
    return via_parse(lambda: TransferSpec.parse(SMALL_SOURCE, text))


def timed(kind: str, text: str, limit: float) -> tuple[Outcome, float]:
    """run_case under a SIGALRM time limit."""
    def expire(signum, frame):
        raise Hang()

    previous = signal.signal(signal.SIGALRM, expire)
    start = time.perf_counter()
    signal.setitimer(signal.ITIMER_REAL, limit)
    try:
        outcome = run_case(kind, text)
    except Hang:
        outcome = Outcome("hang", f"over {limit} s")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    return outcome, time.perf_counter() - start


def offline(*args, **kwargs):
    """urlopen for a machine without a network."""
    raise urllib.error.URLError("offline: hostile_inputs.py never downloads")


def run_corpus(cases: list[tuple[str, str]], limit: float, verbose: bool = False) -> tuple[dict[str, Counter], list, tuple[float, str]]:
    """Every case under the time limit, offline: verdict counts per option, the failures, and the slowest case."""
    counts: dict[str, Counter] = {kind: Counter() for kind in KINDS}
    failures, slowest = [], (0.0, "")
    real_urlopen, urllib.request.urlopen = urllib.request.urlopen, offline  # torchvision downloads through it
    try:
        for i, (kind, text) in enumerate(cases):
            if verbose:
                print(f"{i} --{kind} {text[:100]!r}", file=sys.stderr, flush=True)
            outcome, seconds = timed(kind, text, limit)
            counts[kind][outcome.verdict] += 1
            counts[kind]["exit 0"] += outcome.detail == "exit 0"
            slowest = max(slowest, (seconds, f"--{kind} {text[:60]!r}"))
            if outcome.verdict != "clean":
                failures.append((kind, text, outcome))
    finally:
        urllib.request.urlopen = real_urlopen
    return counts, failures, slowest


def main(argv: list[str] | None = None) -> int:
    """Run the corpus (or its first --limit cases per option), print the table; 1 if any case failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, help="Run only the first N cases of each option.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the corpus.")
    parser.add_argument("--timeout", type=float, default=5.0, help="Seconds per case before it counts as a hang.")
    parser.add_argument("--show", type=int, default=5, help="Failures to print in full.")
    parser.add_argument("--verbose", action="store_true", help="Name each case on stderr before running it.")
    args = parser.parse_args(argv)
    if not faulthandler.is_enabled():  # pytest enables it on its own streams
        faulthandler.enable()
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "a_file").write_text("not a folder")
        roots = [tmp, str(Path(tmp) / "missing"), str(Path(tmp) / "a_file"), "a" * 300, "/nonexistent", "~nobody_here/x", "\x00"]
        cases = corpus(args.seed, roots=roots)
        if args.limit is not None:
            cases = [c for kind in KINDS for c in [c for c in cases if c[0] == kind][:args.limit]]
        counts, failures, slowest = run_corpus(cases, args.timeout, args.verbose)
    table = Table("option", "tried", "clean exits", "(exit 0)", "tracebacks", "hangs", "untidy",
                  title=f"hostile spec strings (seed {args.seed})")
    total = sum(counts.values(), Counter())
    for name, c in [*((f"--{kind}", counts[kind]) for kind in KINDS), ("all", total)]:
        tried = sum(c[k] for k in VERDICTS)
        table.add_row(name, str(tried), *(str(c[k]) for k in ("clean", "exit 0", *VERDICTS[1:])), style="bold" if name == "all" else None)
    Console().print(table)
    Console().print(f"slowest case: {slowest[0]:.2f} s ({slowest[1]})", markup=False)
    for kind, text, outcome in failures[:args.show]:
        Console().print(f"\n[{outcome.verdict}] --{kind} {text[:200]!r}\n{outcome.detail}", markup=False)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
