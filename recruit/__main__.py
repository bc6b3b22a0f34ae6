"""`python -m recruit` does what the `recruit` command does."""

from recruit.cli import main

# Guarded: letter printing starts worker processes that import this module again.
if __name__ == "__main__":
    main()
