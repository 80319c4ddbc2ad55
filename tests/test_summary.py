"""summarize(): counts and ratios per group, unlabelled rows apart."""

import numpy as np
import pandas as pd
import pytest

import reviewkit


def _analyzed():
    return pd.DataFrame(
        {
            "restaurant_id": [1, 1, 1, 2, 2, 3],
            "sentiment": pd.Categorical(
                ["positive", "negative", None, "negative", "negative", None], categories=["positive", "negative"]
            ),
            "sentiment_score": [0.9, 0.2, np.nan, 0.1, 0.3, np.nan],
        }
    )


def test_counts_ratios_and_unlabelled_rows():
    s = reviewkit.summarize(_analyzed())
    assert list(s.index) == [1, 2, 3]
    assert s.loc[1, ["total", "labelled", "unlabelled", "positive", "negative"]].tolist() == [3, 2, 1, 1, 1]
    assert s.loc[1, "positive_ratio"] == 0.5 and s.loc[2, "negative_ratio"] == 1.0
    assert s.loc[1, "mean_score"] == pytest.approx(0.55)
    assert s.loc[3, "labelled"] == 0 and np.isnan(s.loc[3, "positive_ratio"])
    assert s["total"].sum() == 6  # no row lost


def test_neutral_gets_its_own_column_and_accessor_works():
    df = _analyzed()
    df["sentiment"] = pd.Categorical(
        ["positive", "neutral", None, "negative", "neutral", None], categories=["positive", "negative", "neutral"]
    )
    s = df.reviewkit.summarize(by="restaurant_id")
    assert list(s.columns) == [
        "total",
        "labelled",
        "unlabelled",
        "positive",
        "negative",
        "neutral",
        "positive_ratio",
        "negative_ratio",
        "mean_score",
    ]
    assert s.loc[2, "neutral"] == 1 and s.loc[2, "negative_ratio"] == 0.5


def test_errors_name_the_missing_columns():
    with pytest.raises(KeyError, match="sentiment"):
        reviewkit.summarize(pd.DataFrame({"restaurant_id": [1]}))
    with pytest.raises(TypeError, match="DataFrame"):
        reviewkit.summarize([1, 2])
