"""Measuring accuracy honestly: a fixed selection/evaluation split and confidence intervals.

Prompt choices (examples, label words, calibration) are made on the *selection* part of
labelled data only; the *evaluation* part is never looked at while choosing, so its
accuracy is what a user can expect on reviews the recipe was not tuned on. The split is
by a hash of each row's id: stable across machines, runs and row order.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

SELECTION = "selection"
EVALUATION = "evaluation"


def split_part(row_id: Any) -> str:
    """``"selection"`` or ``"evaluation"`` for a row id (half each, by a hash of the id)."""
    digest = hashlib.sha256(str(row_id).encode("utf-8")).digest()
    return SELECTION if digest[0] % 2 == 0 else EVALUATION


def split(df: pd.DataFrame, id_column: str = "id") -> tuple[pd.DataFrame, pd.DataFrame]:
    """The (selection, evaluation) parts of labelled data, each in the input's order."""
    parts = df[id_column].map(split_part)
    return df[parts == SELECTION], df[parts == EVALUATION]


@dataclass(frozen=True)
class Accuracy:
    """An accuracy with its 95 % Wilson score interval."""

    correct: int
    total: int

    @property
    def value(self) -> float:
        return self.correct / self.total if self.total else float("nan")

    @property
    def interval(self) -> tuple[float, float]:
        """95 % Wilson interval (better than the normal one near 0 or 1 and for small n)."""
        if not self.total:
            return (float("nan"), float("nan"))
        z, n, p = 1.959964, self.total, self.value
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        return (centre - half, centre + half)

    def __str__(self) -> str:
        low, high = self.interval
        return f"{self.value:.3f} (95% CI {low:.3f}-{high:.3f}, n={self.total})"


def accuracy(predicted: pd.Series | list, gold: pd.Series | list) -> Accuracy:
    """Share of ``predicted`` labels equal to ``gold`` (a missing prediction counts as wrong)."""
    predicted, gold = list(predicted), list(gold)
    if len(predicted) != len(gold):
        raise ValueError(f"{len(predicted)} predictions for {len(gold)} gold labels")
    return Accuracy(sum(str(p) == str(g) for p, g in zip(predicted, gold)), len(gold))


def aspect_accuracy(predicted: pd.DataFrame, gold: pd.DataFrame, aspects: list[str]) -> dict[str, Accuracy]:
    """Aspect figures over the cells (review × aspect) of ``predicted`` (``aspect_<name>``
    columns of ``analyze(aspects=...)``) against ``gold`` (one ``<name>`` column per aspect of
    ``positive``/``negative``/``none``), rows aligned by position:

    ``cells``: the label of every cell; ``mention``: mentioned or not (``none``);
    ``polarity``: positive vs negative on the cells the gold mentions (a ``none`` prediction
    there counts as wrong); ``polarity_found``: the same on the cells both mention (the
    polarity step alone); ``majority``: ``none`` everywhere, the baseline to beat.
    """
    if len(predicted) != len(gold):
        raise ValueError(f"{len(predicted)} predicted rows for {len(gold)} gold rows")
    pred = [str(v) for a in aspects for v in predicted[f"aspect_{a}"].astype("object")]
    true = [str(v) for a in aspects for v in gold[a]]
    mentioned = [(p, t) for p, t in zip(pred, true) if t != "none"]
    return {
        "cells": accuracy(pred, true),
        "mention": accuracy([p != "none" for p in pred], [t != "none" for t in true]),
        "polarity": accuracy([p for p, _ in mentioned], [t for _, t in mentioned]),
        "polarity_found": accuracy([p for p, t in mentioned if p != "none"], [t for p, t in mentioned if p != "none"]),
        "majority": accuracy(["none"] * len(true), true),
    }
