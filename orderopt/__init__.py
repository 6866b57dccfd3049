"""orderopt: find the order and step budgets of multi-task RL post-training without paying for every full run."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
