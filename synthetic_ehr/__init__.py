"""Synthetic GP-practice populations with hidden ground truth (see README.md).

Public API: `generate(out, practices=..., patients=..., seed=..., ...) -> GenerationSummary`.
"""

from .generate import GenerationSummary, generate
from .params import Params, load_params

__all__ = ["GenerationSummary", "Params", "generate", "load_params"]
