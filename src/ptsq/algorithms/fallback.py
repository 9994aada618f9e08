"""Accuracy-driven fp32 fallback: put ranked layers back to fp32 a group at a time until a budget holds.

Used by dynamic mode (layers ranked by how far each alone moves the output) and by the accuracy budget
(layers ranked by their solo score on the budget's metric). ``evaluate(layers)`` measures the model with
those layers in fp32; a trial is kept when it raises ``score`` (or always, with ``only_improving=False``),
and the search stops as soon as ``met`` holds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")


@dataclass
class Trial(Generic[T]):
    layers: list[str]  # every layer in fp32 in this trial
    result: T
    accepted: bool


def greedy_fallback(
    ranked: Sequence[str],
    evaluate: Callable[[list[str]], T],
    score: Callable[[T], Any],
    met: Callable[[T], bool],
    *,
    base_score: Any,
    limit: int,
    group: int = 1,
    only_improving: bool = True,
    on_trial: Callable[[Trial[T]], None] | None = None,
) -> tuple[list[str], list[Trial[T]]]:
    """Try ``ranked[:limit * group]`` in groups of ``group``; returns (layers chosen, every trial)."""
    chosen: list[str] = []
    best = base_score
    trials: list[Trial[T]] = []
    for i in range(0, min(len(ranked), limit * group), group):
        layers = chosen + list(ranked[i : i + group])
        result = evaluate(layers)
        s = score(result)
        accepted = s > best or not only_improving
        trial = Trial(layers, result, accepted)
        trials.append(trial)
        if on_trial is not None:
            on_trial(trial)
        if accepted:
            chosen, best = layers, s
            if met(result):
                break
    return chosen, trials


__all__ = ["Trial", "greedy_fallback"]
