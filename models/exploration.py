"""Exploration slots filled by Thompson sampling over categories.

A share of each served list goes to items the fused ranking would not show, chosen from
categories by Thompson sampling on each category's Beta posterior (e.g. of click-through):
per slot, draw θ_c ~ Beta(α_c, β_c) for every category that still has unused items, take the
category with the largest θ, and serve its next item. Categories the user is likely to enjoy
are explored most often, uncertain ones (wide posteriors) still get drawn now and then.

Explored items are marked with the single contribution key
:data:`~recstream.models.fusion.EXPLORATION_KEY` (value θ, the sampled category mean, which
is also their score, so contributions still sum to the score). They carry no signals,
so feedback on them moves no signal weight (the η rule needs the item's served signals).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from recstream.models.errors import ValidationError
from recstream.models.fusion import EXPLORATION_KEY, RankedItem


@dataclass(frozen=True, slots=True)
class CategoryArm:
    """One category's Beta posterior and its exploration candidates.

    ``alpha``, ``beta`` > 0: Beta posterior parameters (prior + successes, prior + failures).
    ``item_ids``: candidate items of this category, in the order they should be tried (any
    sequence: a lazy one is only read for the arms a draw picks)
    (e.g. most popular first).
    """

    category: str
    alpha: float
    beta: float
    item_ids: Sequence[str]

    def __post_init__(self) -> None:
        for name, value in (("alpha", self.alpha), ("beta", self.beta)):
            if not (math.isfinite(value) and value > 0.0):
                raise ValidationError(f"{name} of category {self.category!r} must be > 0")


def exploration_slots(share: float, k: int) -> int:
    """Number of exploration slots in a list of ``k``: ⌊share·k⌋.

    Rounded down so exploration never takes more than the configured share; a share below
    1/k therefore explores nothing in lists of length k. A 1e-9 slack absorbs binary
    rounding of the product (0.29·100 evaluates to 28.999999999999996 but means 29 slots).
    """
    if not (math.isfinite(share) and 0.0 <= share <= 1.0):
        raise ValidationError(f"share must be in [0, 1], got {share}")
    if k < 0:
        raise ValidationError(f"k must be ≥ 0, got {k}")
    return min(k, math.floor(share * k + 1e-9))


def _slot_positions(n_explore: int, length: int) -> list[int]:
    # Spread explored items evenly: position ⌊(j+1)·L/(m+1)⌋ for j = 0..m−1. They are neither
    # buried at the bottom (where position bias would starve them of feedback) nor put above
    # the best fused item (position 0) unless every slot is exploration. Positions are distinct
    # because consecutive ones are ≥ L/(m+1) ≥ 1 apart for m < L, and j for m = L.
    return [((j + 1) * length) // (n_explore + 1) for j in range(n_explore)]


def allocate_exploration(
    ranked: Sequence[RankedItem],
    explore_candidates: Sequence[CategoryArm],
    share: float,
    k: int,
    rng: np.random.Generator | int,
) -> list[RankedItem]:
    """Serve up to ``k`` items: the best of ``ranked`` plus ⌊share·k⌋ explored items.

    ``ranked``: the fused ranking, best first. Items already in ``ranked[:k]`` (which the
    list could show anyway) are never picked for exploration, and no item appears twice.
    When the categories run out of items the unused slots go back to ``ranked``. ``rng``: a
    Generator, or an int seed; the result is a deterministic function of the inputs and seed.
    Returns ``min(k, len(ranked) + n_explored)`` items; explored ones have ``explored`` True.
    """
    generator = np.random.default_rng(rng) if isinstance(rng, int) else rng
    alphas = np.array([arm.alpha for arm in explore_candidates], dtype=np.float64)
    betas = np.array([arm.beta for arm in explore_candidates], dtype=np.float64)
    items = [arm.item_ids for arm in explore_candidates]
    return allocate_from_posteriors(ranked, alphas, betas, items, share, k, generator)


def allocate_from_posteriors(
    ranked: Sequence[RankedItem],
    alphas: npt.NDArray[np.float64],
    betas: npt.NDArray[np.float64],
    items: Sequence[Sequence[str]],
    share: float,
    k: int,
    generator: np.random.Generator,
) -> list[RankedItem]:
    """:func:`allocate_exploration` over arms given as arrays: arm i has the Beta posterior
    (alphas[i], betas[i]), both > 0 (the caller's invariant: not checked here, this runs for
    every list), and candidates items[i]. The engine's path: no CategoryArm per category."""
    wanted = exploration_slots(share, k)
    taken = {item.item_id for item in ranked[:k]}
    cursors = [0] * len(items)

    def next_unused(arm_index: int) -> str | None:
        arm_items = items[arm_index]
        while cursors[arm_index] < len(arm_items):
            item_id = arm_items[cursors[arm_index]]
            cursors[arm_index] += 1
            if item_id not in taken:
                return item_id
        return None

    explored: list[RankedItem] = []
    active = np.ones(len(items), dtype=bool)
    while len(explored) < wanted and active.any():
        live = np.flatnonzero(active)
        # One fresh posterior draw per slot (not one draw per list): each slot is a separate
        # Thompson decision, so a list can explore several categories.
        theta = generator.beta(alphas[live], betas[live])
        choice = int(np.argmax(theta))
        arm_index = int(live[choice])
        item_id = next_unused(arm_index)
        if item_id is None:
            active[arm_index] = False  # exhausted; redraw among the rest for this slot
            continue
        taken.add(item_id)
        sampled = float(theta[choice])
        explored.append(
            RankedItem(item_id=item_id, score=sampled, contributions={EXPLORATION_KEY: sampled})
        )

    exploit = list(ranked[: k - len(explored)])
    length = len(exploit) + len(explored)
    served: list[RankedItem | None] = [None] * length
    for position, item in zip(_slot_positions(len(explored), length), explored, strict=True):
        served[position] = item
    fill = iter(exploit)
    return [item if item is not None else next(fill) for item in served]
