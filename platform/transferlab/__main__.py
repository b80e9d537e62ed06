"""`python -m transferlab` runs the CLI."""

from .cli import main

main()
