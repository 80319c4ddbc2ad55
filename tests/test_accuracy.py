"""Accuracy of the embedded default on the labelled samples in tests/data.

Targets from the product: English >= 0.87, Korean >= 0.80. The figures are printed
(run with -s) and recorded in the README.
"""

import pandas as pd
import pytest

import reviewkit
from conftest import DATA


@pytest.mark.parametrize("name,target", [("sentence_polarity_sample_en.csv", 0.87),
                                         ("nsmc_sample_ko.csv", 0.80)])
def test_accuracy_on_labelled_samples(engine, fresh_cache, name, target):
    data = pd.read_csv(DATA / name)
    out = reviewkit.analyze(data, text="text", cache=fresh_cache, progress=False)
    accuracy = (out["sentiment"].astype(str) == data["label"]).mean()
    print(f"{name}: accuracy {accuracy:.3f} on {len(data)} reviews; {reviewkit.last_run()}")
    assert accuracy >= target
