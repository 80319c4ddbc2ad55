"""The bundled demo data: restaurant reviews in Korean and English."""

from __future__ import annotations

from importlib.resources import files

import pandas as pd


def sample_reviews() -> pd.DataFrame:
    """48 reviews of 5 restaurants (Korean and English), in the seed's payload columns:
    ``id``, ``restaurant_id``, ``restaurant``, ``content``, ``created_at``."""
    with files("reviewkit").joinpath("data/restaurant_reviews.csv").open("rb") as f:
        return pd.read_csv(f, parse_dates=["created_at"])


def varied_reviews(n: int, seed: int = 0) -> pd.DataFrame:
    """``n`` distinct reviews made of 1-3 sentences of the bundled ones (same language).

    For throughput and cost experiments: realistic lengths, both languages, and the same
    texts on every machine for a given ``seed``. Column ``content``.
    """
    import random
    import re

    from reviewkit.prompts import language_of

    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    sentences: dict[str, list[str]] = {"ko": [], "en": []}
    for text in sample_reviews()["content"]:
        parts = [s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if s.strip()]
        sentences[language_of(text)].extend(parts)
    rng = random.Random(seed)
    texts: dict[str, None] = {}
    while len(texts) < n:
        pool = sentences[rng.choice(["ko", "en"])]
        texts[" ".join(rng.sample(pool, rng.randint(1, 3)))] = None
    return pd.DataFrame({"content": list(texts)})


def aspect_reviews(part: str | None = None) -> pd.DataFrame:
    """240 hand-labelled restaurant reviews (120 Korean, 120 English) for aspect accuracy.

    Columns ``id``, ``language``, ``split``, ``text`` and one per aspect (``taste``,
    ``service``, ``price``, ``portion``, ``wait``: ``positive``/``negative``/``none``).
    ``split`` was fixed once, before any prompt choice (alternate rows per language):
    aspect words and prompts are chosen on ``"selection"``, figures are measured on
    ``"evaluation"``. ``part`` picks one of them; None gives all rows.
    """
    with files("reviewkit").joinpath("data/aspect_reviews.csv").open("rb") as f:
        df = pd.read_csv(f, keep_default_na=False)
    if part is None:
        return df
    if part not in ("selection", "evaluation"):
        raise ValueError(f"part must be 'selection', 'evaluation' or None, got {part!r}")
    return df[df["split"] == part].reset_index(drop=True)
