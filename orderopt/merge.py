"""Model merging baselines: task arithmetic and TIES-merging of models fine-tuned from one base."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

__all__ = ["MERGE_METHODS", "merge_state_dicts"]

#: the merging methods of ``merge_state_dicts`` (``schedule.merge_method``)
MERGE_METHODS = ("ties", "task_arithmetic")

StateDict = Mapping[str, torch.Tensor]


def merge_state_dicts(
    base: StateDict, tuned: Sequence[StateDict], *, method: str = "ties", scale: float = 1.0, density: float = 0.2
) -> dict[str, torch.Tensor]:
    """Merge task vectors (tuned − base) into the base.

    ``task_arithmetic``: base + scale · Σ task vectors (Ilharco et al. 2023).
    ``ties``: per task keep the ``density`` fraction of largest-magnitude entries, elect a sign per entry by total
    mass, average the entries that agree with it, add scale · that to the base (Yadav et al. 2023).

    Example:
        >>> base = {"w": torch.zeros(4)}
        >>> a, b = {"w": torch.tensor([1.0, 0, 0, 2])}, {"w": torch.tensor([3.0, 0, 0, -2])}
        >>> merge_state_dicts(base, [a, b], method="task_arithmetic")["w"].tolist()
        [4.0, 0.0, 0.0, 0.0]
    """
    if method not in MERGE_METHODS:
        raise ValueError(f"unknown merge method {method!r}; use ties or task_arithmetic")
    if not tuned:
        raise ValueError("nothing to merge: give at least one fine-tuned model")
    if not 0.0 < density <= 1.0:
        raise ValueError(f"density={density!r} must lie in (0, 1]")
    merged = {}
    for name, theta0 in base.items():
        if not torch.is_floating_point(theta0):
            merged[name] = theta0.clone()
            continue
        deltas = torch.stack([sd[name].float() - theta0.float() for sd in tuned])
        if method == "task_arithmetic":
            delta = deltas.sum(0)
        else:
            delta = _ties(deltas, density)
        merged[name] = (theta0.float() + scale * delta).to(theta0.dtype)
    return merged


def _ties(deltas: torch.Tensor, density: float) -> torch.Tensor:
    flat = deltas.reshape(len(deltas), -1)
    k = max(1, int(round(density * flat.shape[1])))
    # trim: keep each task's top-k magnitudes
    threshold = flat.abs().kthvalue(flat.shape[1] - k + 1, dim=1, keepdim=True).values
    trimmed = torch.where(flat.abs() >= threshold, flat, torch.zeros_like(flat))
    # elect: the sign with more total mass; merge: mean of the entries that agree
    sign = torch.sign(trimmed.sum(0))
    agree = (torch.sign(trimmed) == sign) & (trimmed != 0)
    total = (trimmed * agree).sum(0)
    count = agree.sum(0).clamp(min=1)
    return (total / count).reshape(deltas.shape[1:])
