"""transferlab's benchmarks: each bench_*.py runs alone, and `python -m benchmarks` runs them side by side (see suite.py)."""
