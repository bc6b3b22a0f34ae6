"""`python -m recruit` does what the `recruit` command does."""

from recruit.cli import main

main()
