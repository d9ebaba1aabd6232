"""Equal training tokens for two or more datasets: subsample every larger one to the smallest.

Counts come from one student's tokenizer; the caller runs this once per student. Problems are
dropped as a whole (all of a problem's examples together), in one seeded order shared by every
dataset of the group, with the smallest dataset's problems kept first, so the subsamples are
aligned on the same problems where possible. The result must land within ``tolerance`` of the
smallest total; otherwise ``TokenBudgetError`` names both datasets and their token counts.

The seeded greedy fill nearly always lands within one example of the budget, far inside 1% for
datasets of hundreds of examples; small datasets of long examples fall back to an exact subset sum.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable


class TokenBudgetError(ValueError):
    """Token matching could not bring a dataset to the budget within the tolerance."""


def match_token_totals(
    tokens: dict[str, dict[str, int]],
    tolerance: float,
    problem_order: Callable[[str], str],
    student: str | None = None,
) -> tuple[dict[str, set[str]], int, str]:
    """``tokens[dataset][problem_id]``: a problem's training tokens in that dataset.

    Returns (the problems each dataset keeps, the token budget, the dataset that set it)."""
    totals = {name: sum(per_problem.values()) for name, per_problem in tokens.items()}
    target = min(totals, key=lambda name: (totals[name], list(tokens).index(name)))
    budget = totals[target]
    who = f" for student {student}" if student else ""
    if budget == 0:
        others = ", ".join(f"{name} has {total:,}" for name, total in totals.items() if name != target)
        raise TokenBudgetError(f"token matching{who}: {target} has 0 tokens ({others}); nothing to match to")
    kept: dict[str, set[str]] = {target: set(tokens[target])}
    preferred = set(tokens[target])
    for name, per_problem in tokens.items():
        if name == target:
            continue
        order = sorted(per_problem, key=lambda p: (p not in preferred, problem_order(p)))
        chosen, used = set(), 0
        for problem in order:  # greedy fill: a problem that does not fit is skipped, smaller ones may follow
            if used + per_problem[problem] <= budget:
                chosen.add(problem)
                used += per_problem[problem]
        chosen, used = _close_gap(per_problem, chosen, used, budget, tolerance * budget, problem_order)
        if budget - used > tolerance * budget:
            chosen, used = _subset_sum(per_problem, order, budget, (chosen, used))
        if budget - used > tolerance * budget:
            raise TokenBudgetError(
                f"token matching{who}: cannot bring {name} ({totals[name]:,} tokens) to the {budget:,} tokens of "
                f"{target} within {tolerance:.1%}: the closest subsample has {used:,} tokens"
            )
        kept[name] = chosen
    return kept, budget, target


def _close_gap(
    per_problem: dict[str, int], chosen: set[str], used: int, budget: int, allowed: float, problem_order: Callable[[str], str]
) -> tuple[set[str], int]:
    """Swap a kept problem for a slightly longer dropped one while that brings the total closer to
    the budget without passing it (the greedy fill can stop short when examples are long)."""
    while budget - used > allowed:
        dropped = sorted((per_problem[p], problem_order(p), p) for p in per_problem if p not in chosen)
        sizes = [size for size, _, _ in dropped]
        best = None
        for kept in sorted(chosen, key=problem_order):
            size = per_problem[kept]
            # the longest dropped problem that still fits in place of this one
            index = bisect.bisect_right(sizes, size + budget - used) - 1
            if index >= 0 and sizes[index] > size and (best is None or sizes[index] - size > best[0]):
                best = (sizes[index] - size, kept, dropped[index][2])
        if best is None:
            break
        gain, out, into = best
        chosen = (chosen - {out}) | {into}
        used += gain
    return chosen, used


def _subset_sum(
    per_problem: dict[str, int], order: list[str], budget: int, fallback: tuple[set[str], int], limit: int = 50_000_000
) -> tuple[set[str], int]:
    """The subset of problems whose tokens come closest to ``budget`` from below (0/1 subset sum,
    problems earlier in ``order`` preferred); ``fallback`` when the budget is too large to tabulate."""
    if budget > limit:
        return fallback
    import numpy as np

    reachable = np.zeros(budget + 1, dtype=bool)
    reachable[0] = True
    first = np.full(budget + 1, -1, dtype=np.int64)  # the problem whose addition first reached each total
    sizes = [per_problem[p] for p in order]
    for index, size in enumerate(sizes):
        if size == 0 or size > budget:
            continue
        new = np.flatnonzero(reachable[: budget + 1 - size] & ~reachable[size:]) + size
        reachable[new] = True
        first[new] = index
    best = int(np.flatnonzero(reachable)[-1])
    if best <= fallback[1]:
        return fallback
    chosen, total = set(), best
    while total > 0:
        index = int(first[total])
        chosen.add(order[index])
        total -= sizes[index]
    chosen |= {p for p in order if per_problem[p] == 0}
    return chosen, best
