"""Per-restaurant (or any group) sentiment summaries of an analyzed DataFrame."""

from __future__ import annotations

import pandas as pd

from reviewkit.scoring import SCORE, SENTIMENT

SUMMARY_COLUMNS = ["total", "labelled", "unlabelled", "positive", "negative",
                   "positive_ratio", "negative_ratio", "mean_score"]


def summarize(df: pd.DataFrame, by: str | list[str] = "restaurant_id", *,
              sentiment: str = SENTIMENT, score: str = SCORE) -> pd.DataFrame:
    """Counts and ratios per group of an ``analyze`` result.

    ``total`` counts every row; ``unlabelled`` the rows without a label (no text), kept
    apart so that ratios are over ``labelled`` rows. One ``<label>`` count column per
    label of the Categorical (``neutral`` too when it was asked for); ``mean_score`` is
    the mean probability of positive. Groups keep pandas' sorted order.
    """
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"summarize() needs a pandas DataFrame, got {type(df).__name__}")
    keys = [by] if isinstance(by, str) else list(by)
    missing = [c for c in keys + [sentiment, score] if c not in df.columns]
    if missing:
        raise KeyError(f"columns {missing} not found (analyze the DataFrame first?); "
                       f"the DataFrame's columns are {list(df.columns)}")
    labels = list(df[sentiment].cat.categories) if isinstance(df[sentiment].dtype, pd.CategoricalDtype) \
        else sorted(df[sentiment].dropna().unique())
    for needed in ("positive", "negative"):
        if needed not in labels:
            labels.append(needed)
    grouped = df.groupby(keys, sort=True, dropna=False, observed=True)
    counts = pd.crosstab([df[k] for k in keys], df[sentiment].astype("object")) \
        .reindex(columns=labels, fill_value=0)
    out = pd.DataFrame({"total": grouped.size()})
    out = out.join(counts).fillna(0)
    out[labels] = out[labels].astype("int64")
    out["labelled"] = out[labels].sum(axis=1)
    out["unlabelled"] = out["total"] - out["labelled"]
    labelled = out["labelled"].where(out["labelled"] > 0)
    out["positive_ratio"] = out["positive"] / labelled
    out["negative_ratio"] = out["negative"] / labelled
    out["mean_score"] = grouped[score].mean()
    extra = [label for label in labels if label not in ("positive", "negative")]
    return out[SUMMARY_COLUMNS[:5] + extra + SUMMARY_COLUMNS[5:]]
