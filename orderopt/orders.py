"""Heuristic task orders from the transfer matrix: what a person would try before any search.

- :func:`greedy_bwt_order` — Omni-Thinker's greedy rule: place first the task the remaining tasks hurt least.
- :func:`structured_first_order` — structured tasks (verifiable rewards, entropy falls) before open ones (entropy
  rises), each group in greedy BWT order.
- :func:`graph_order` — on the transfer graph, the order with the least total predicted forgetting: the sum, over
  every pair j before k, of how much training k later costs j (exact by dynamic programming over subsets up to 16
  tasks, greedy beyond).

Where no pair probe j→k was run, "how much k costs j once j is trained" is estimated by k's single-probe transfer onto
j (:attr:`TransferMatrix.backward`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from orderopt.probe import TransferMatrix

__all__ = ["graph_order", "greedy_bwt_order", "heuristic_orders", "structured_first_order"]

#: above this many tasks the exact order (2^K subsets) gives way to the greedy one
EXACT_MAX_TASKS = 16


def heuristic_orders(tm: TransferMatrix) -> dict[str, list[str]]:
    """Every heuristic order, by name.

    Example:
        >>> heuristic_orders(TransferMatrix.load("studies/reference"))  # doctest: +SKIP
        {'greedy_bwt': ['names', ...], 'structured_first': ['arith', ...], 'graph': ['names', ...]}
    """
    return {
        "greedy_bwt": greedy_bwt_order(tm),
        "structured_first": structured_first_order(tm),
        "graph": graph_order(tm),
    }


def greedy_bwt_order(tm: TransferMatrix, tasks: Sequence[str] | None = None) -> list[str]:
    """Repeatedly place next the remaining task with the best (least negative) mean backward transfer from the
    other remaining tasks — the ones that will be trained after it. Ties: the suite's order."""
    back = tm.backward
    rest = [tm.index(t) for t in (tasks if tasks is not None else tm.tasks)]
    order = []
    while rest:
        scores = [np.mean([back[j, k] for k in rest if k != j]) if len(rest) > 1 else 0.0 for j in rest]
        pick = rest[int(np.argmax(scores))]
        order.append(tm.tasks[pick])
        rest.remove(pick)
    return order


def structured_first_order(tm: TransferMatrix) -> list[str]:
    """Structured tasks first, then open ones (Omni-Thinker's curriculum), each group in greedy BWT order."""
    structured = [t for t in tm.tasks if tm.domains[t] == "structured"]
    others = [t for t in tm.tasks if tm.domains[t] != "structured"]
    return greedy_bwt_order(tm, structured) + greedy_bwt_order(tm, others)


def graph_order(tm: TransferMatrix) -> list[str]:
    """The order minimising total predicted forgetting on the transfer graph: Σ over j before k of
    max(0, −w(k→j)), w how training k after j moves j (:attr:`TransferMatrix.backward`: the pair probe's BWT, else
    the single-probe transfer)."""
    n = len(tm.tasks)
    # cost[j, k]: forgetting of j when k is trained after it
    cost = np.where(np.eye(n, dtype=bool), 0.0, np.maximum(0.0, -np.nan_to_num(tm.backward)))
    if n > EXACT_MAX_TASKS:
        return _greedy_min_cost(tm.tasks, cost)
    return [tm.tasks[i] for i in _exact_min_cost(cost)]


def _exact_min_cost(cost: np.ndarray) -> list[int]:
    """Linear ordering with the least Σ_{j before k} cost[j, k], by DP over the set of tasks placed first."""
    n = len(cost)
    best: dict[int, tuple[float, tuple[int, ...]]] = {0: (0.0, ())}
    for mask in range(1 << n):
        if mask not in best:
            continue
        value, order = best[mask]
        rest = [k for k in range(n) if not mask >> k & 1]
        for k in rest:
            # placing k next: every task still unplaced comes after k, and each costs k what it makes k forget
            add = sum(cost[k, m] for m in rest if m != k)
            new = mask | 1 << k
            if new not in best or value + add < best[new][0] - 1e-12:
                best[new] = (value + add, (*order, k))
    return list(best[(1 << n) - 1][1])


def _greedy_min_cost(tasks: Sequence[str], cost: np.ndarray) -> list[str]:
    rest, order = list(range(len(tasks))), []
    while rest:
        pick = min(rest, key=lambda k: sum(cost[k, m] for m in rest if m != k))
        order.append(tasks[pick])
        rest.remove(pick)
    return order
