"""The benchmark's reviews: the labelled CSVs, cycled and numbered so every text is distinct.

Also the small arithmetic the figures share (rates, ratios that tolerate a missing value,
accuracy), so that every phase computes them the same way.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DATA_FILES = ("nsmc_sample_ko.csv", "sentence_polarity_sample_en.csv")
LABELS = ("positive", "negative")


def find_data_dir(option: str | None) -> Path:
    """``--data-dir``, else tests/data in the repo, else ../shared/data next to it."""
    candidates = [Path(option)] if option else [REPO / "tests" / "data", REPO.parent / "shared" / "data"]
    for folder in candidates:
        if all((folder / name).is_file() for name in DATA_FILES):
            return folder
    raise SystemExit(f"no review CSVs ({', '.join(DATA_FILES)}) in {', '.join(map(str, candidates))}: pass --data-dir")


def load_reviews(folder: Path) -> list[tuple[str, str]]:
    """(text, label) pairs, the Korean and English files interleaved."""
    per_file = []
    for name in DATA_FILES:
        with open(folder / name, encoding="utf-8", newline="") as fh:
            per_file.append(
                [
                    (row["text"], row["label"])
                    for row in csv.DictReader(fh)
                    if row["text"].strip() and row["label"] in LABELS
                ]
            )
    mixed: list[tuple[str, str]] = []
    for i in range(max(map(len, per_file))):
        mixed += [rows[i] for rows in per_file if i < len(rows)]
    return mixed


def make_reviews(base: Sequence[tuple[str, str]], n: int) -> tuple[list[str], list[str]]:
    """N distinct texts: the base reviews cycled, each numbered ``(k) text`` by its cycle k.

    The number comes first: after a shared ending, a repeated review's first KV blocks
    would be prefix-cache hits (free work). Every text is numbered, so the tokens per
    review are the same at N = 1,000 and N = 5,000 (three more with the Gemma tokenizer
    for k < 10).
    """
    texts, labels = [], []
    for i in range(n):
        text, label = base[i % len(base)]
        texts.append(f"({i // len(base)}) {text}")
        labels.append(label)
    return texts, labels


def rate(n: float, seconds: float) -> float | None:
    return n / seconds if seconds > 0 else None


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def accuracy(predicted: Sequence[Any], gold: Sequence[str]) -> float:
    return sum(p == g for p, g in zip(predicted, gold, strict=True)) / len(gold) if gold else float("nan")
