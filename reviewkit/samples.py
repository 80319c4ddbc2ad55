"""The bundled demo data: restaurant reviews in Korean and English."""

from __future__ import annotations

from importlib.resources import files

import pandas as pd


def sample_reviews() -> pd.DataFrame:
    """48 reviews of 5 restaurants (Korean and English), in the seed's payload columns:
    ``id``, ``restaurant_id``, ``restaurant``, ``content``, ``created_at``."""
    with files("reviewkit").joinpath("data/restaurant_reviews.csv").open("rb") as f:
        return pd.read_csv(f, parse_dates=["created_at"])
