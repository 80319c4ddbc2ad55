"""Inputs of the groups that compare another engine with in-process scoring (remote, Ray),
and their in-process results, computed once per session on one fresh float32 engine.

Why float32: the product's CPU default is bfloat16, where a prompt's scores move by up to
0.03 with what else the engine batches with it and with which of its prefix blocks come from
the cache (measured between two fresh engines given the same reviews in other batches).
That is the engine's arithmetic, not the path under test; in float32 both sides must agree
to 1e-3, which checks what those tests are about: the same token ids, label tokens,
truncation, calibration and order, through HTTP or through Ray.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from rk_support import DATA

#: Engine options of the compared engines and of the reference (see the module docstring).
FLOAT32 = {"dtype": "float32"}
LONG_REVIEW = "맛있어요 " * 2000  # 10,000 characters: longer than the model length once tokenized


# -- the remote tests' inputs ---------------------------------------------------------------


def remote_texts() -> list[str]:
    """Reviews from the bundled sample and the labelled test data, plus one over-long review."""
    import reviewkit

    texts = list(reviewkit.sample_reviews()["content"])
    for name in ("nsmc_sample_ko.csv", "sentence_polarity_sample_en.csv"):
        with open(DATA / name, encoding="utf-8", newline="") as fh:
            texts += [row["text"] for row in csv.DictReader(fh)][:120]
    return [*texts, LONG_REVIEW]


def remote_bad_frame() -> pd.DataFrame:
    values = [
        float("nan"),
        "",
        "   ",
        "🍜🔥👍😋",
        "맛있어요 but the service was slow",
        LONG_REVIEW,
        None,
        12345,
        "맛있어요 but the service was slow",
        "cold food, rude staff 😡",
    ]
    return pd.DataFrame({"content": values}, index=[3, 1, 1, 7, 2, 2, 9, 0, 5, 3])  # duplicate index


# -- the Ray tests' inputs --------------------------------------------------------------------

RAY_N = 200
RAY_BAD_ROWS = [
    ("bad-nan", np.nan),
    ("bad-empty", ""),
    ("bad-blank", "  \n"),
    ("bad-emoji", "😋😋🔥"),
    ("bad-mixed", "The 비빔밥 was 최고, loved it!"),
    ("bad-long", LONG_REVIEW),
    ("bad-int", 42),
]


def ray_samples() -> pd.DataFrame:
    ko = pd.read_csv(DATA / "nsmc_sample_ko.csv").head(RAY_N // 2)
    en = pd.read_csv(DATA / "sentence_polarity_sample_en.csv").head(RAY_N // 2)
    both = pd.concat([ko, en]).sample(frac=1, random_state=7)  # interleaved languages
    return pd.DataFrame({"id": both["id"].to_numpy(), "content": both["text"].to_numpy()})


def ray_with_bad_rows() -> pd.DataFrame:
    df = pd.concat([ray_samples(), pd.DataFrame(RAY_BAD_ROWS, columns=["id", "content"])], ignore_index=True)
    return df.set_index(pd.Index([f"r{(i * 37) % len(df)}" for i in range(len(df))]))  # neither sorted nor 0..n


# -- the results ------------------------------------------------------------------------------


@dataclass
class References:
    remote_texts: list[str]
    remote: Any  # ScoredTexts of remote_texts
    remote_stats: Any  # its run figures
    remote_long: Any  # LONG_REVIEW scored alone (a long prompt's prefill chunks follow its batch)
    remote_bad_frame: pd.DataFrame
    remote_bad: pd.DataFrame  # analyze(remote_bad_frame)
    ray: pd.DataFrame  # analyze(ray_with_bad_rows())
    ray_aspects: pd.DataFrame  # analyze(ray_with_bad_rows(), aspects=True)


def compute() -> References:
    """Load a fresh float32 engine, score every input, unload (one engine at a time)."""
    import reviewkit

    reviewkit.unload()  # the session engine: bfloat16, and its prefix cache is warm
    reviewkit.load("embedded", **FLOAT32)
    try:
        texts, bad = remote_texts(), remote_bad_frame()
        scored = reviewkit.score_texts(texts, cache=False, progress=False)
        stats = reviewkit.last_run()
        long = reviewkit.score_texts([LONG_REVIEW], cache=False, progress=False)
        bad_out = reviewkit.analyze(bad, text="content", cache=False, progress=False)
        ray = reviewkit.analyze(ray_with_bad_rows(), cache=False, progress=False)
        ray_aspects = reviewkit.analyze(ray_with_bad_rows(), aspects=True, cache=False, progress=False)
    finally:
        reviewkit.unload()
    return References(texts, scored, stats, long, bad, bad_out, ray, ray_aspects)
