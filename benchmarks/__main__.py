"""`python -m benchmarks [--tiny] [--only NAME ...]`: the benchmark suite, one table of ratios, results under benchmarks/results/."""

import argparse
import sys
from pathlib import Path

from benchmarks.suite import BENCHES, RESULTS, print_table, run_suite


def main() -> int:
    """Run the suite, print its table; exit 1 if any target was missed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny sizes: seconds per bench (what tests/test_benchmarks.py runs)")
    parser.add_argument("--only", nargs="+", choices=BENCHES, default=BENCHES)
    parser.add_argument("--out", default=str(RESULTS), help="folder of the results files (default benchmarks/results)")
    parser.add_argument("--note", default="", help="a line about the machine's conditions, written into the results")
    args = parser.parse_args()

    result = run_suite(args.tiny, tuple(args.only), Path(args.out), args.note)
    print_table(result)
    print(f"results: {', '.join(result['files'])}")
    return 1 if any(r["passed"] is False for r in result["rows"]) else 0


if __name__ == "__main__":
    sys.exit(main())
