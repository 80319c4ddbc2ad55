"""Per-restaurant (or any group) sentiment summaries of an analyzed DataFrame."""

from __future__ import annotations

import pandas as pd

from reviewkit.aspect_prompts import ASPECT_LABELS
from reviewkit.scoring import SCORE, SENTIMENT

SUMMARY_COLUMNS = [
    "total",
    "labelled",
    "unlabelled",
    "positive",
    "negative",
    "positive_ratio",
    "negative_ratio",
    "mean_score",
]


def summarize(
    df: pd.DataFrame, by: str | list[str] = "restaurant_id", *, sentiment: str = SENTIMENT, score: str = SCORE
) -> pd.DataFrame:
    """Counts and ratios per group of an ``analyze`` result.

    ``total`` counts every row; ``unlabelled`` the rows without a label (no text), kept
    apart so that ratios are over ``labelled`` rows. One ``<label>`` count column per
    label of the Categorical (``neutral`` too when it was asked for); ``mean_score`` is
    the mean probability of positive. Groups keep pandas' sorted order.

    When ``analyze(aspects=...)`` columns are present, per aspect ``<name>_mentions`` (reviews
    that mention it), ``<name>_negative`` (those negative about it) and
    ``<name>_positive_share`` (positive share of its mentions, NaN without any), and
    ``top_negative_aspect``: the aspect with the most negative mentions, the one that drives the
    group's negatives (ties go to the aspect listed first; NaN when no aspect is negative).
    """
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"summarize() needs a pandas DataFrame, got {type(df).__name__}")
    keys = [by] if isinstance(by, str) else list(by)
    missing = [c for c in keys + [sentiment, score] if c not in df.columns]
    if missing:
        raise KeyError(
            f"columns {missing} not found (analyze the DataFrame first?); "
            f"the DataFrame's columns are {list(df.columns)}"
        )
    labels = (
        list(df[sentiment].cat.categories)
        if isinstance(df[sentiment].dtype, pd.CategoricalDtype)
        else sorted(df[sentiment].dropna().unique())
    )
    for needed in ("positive", "negative"):
        if needed not in labels:
            labels.append(needed)
    grouped = df.groupby(keys, sort=True, dropna=False, observed=True)
    counts = pd.crosstab([df[k] for k in keys], df[sentiment].astype("object")).reindex(columns=labels, fill_value=0)
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
    out = out[SUMMARY_COLUMNS[:5] + extra + SUMMARY_COLUMNS[5:]]
    return _with_aspects(out, df, keys)


def aspect_names(df: pd.DataFrame) -> list[str]:
    """The aspects whose ``analyze(aspects=...)`` columns ``df`` holds, in column order."""
    names = []
    for column in df.columns:
        if (
            isinstance(column, str)
            and column.startswith("aspect_")
            and not column.endswith("_score")
            and isinstance(df[column].dtype, pd.CategoricalDtype)
            and set(df[column].cat.categories) == set(ASPECT_LABELS)
        ):
            names.append(column[len("aspect_") :])
    return names


def _with_aspects(out: pd.DataFrame, df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    names = aspect_names(df)
    if not names:
        return out
    grouped = df.groupby(keys, sort=True, dropna=False, observed=True)
    negatives = {}
    for name in names:
        column = df[f"aspect_{name}"].astype("object")
        mentions = grouped[f"aspect_{name}"].agg(lambda c: int(c.isin(["positive", "negative"]).sum()))
        positive = column.eq("positive").groupby([df[k] for k in keys], dropna=False).sum()
        negative = column.eq("negative").groupby([df[k] for k in keys], dropna=False).sum()
        out[f"{name}_mentions"] = mentions.astype("int64")
        out[f"{name}_negative"] = negative.reindex(out.index).astype("int64")
        out[f"{name}_positive_share"] = positive.reindex(out.index) / mentions.where(mentions > 0)
        negatives[name] = out[f"{name}_negative"]
    counts = pd.DataFrame(negatives)
    out["top_negative_aspect"] = counts.idxmax(axis=1).where(counts.max(axis=1) > 0)
    return out
