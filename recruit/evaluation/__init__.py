"""Judging a search against the hidden truth of a made-up extract (`recruit evaluate`).

truth.py reads the truth.csv `recruit synth` writes (its columns named in
synthetic_ehr.truth_columns); judge.py compares a stored run with it; ceiling.py works out the
best precision a ranking by recorded features could reach. The results are plain data: the CLI
prints them (recruit/cli_render.py) and --json writes them.
"""

from recruit.evaluation.judge import Evaluation, evaluate_run, write_json

__all__ = ["Evaluation", "evaluate_run", "write_json"]
