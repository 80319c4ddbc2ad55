"""Dollars from throughput: what a pod's hour buys in reviews."""

from __future__ import annotations

import math


def cost_per_1000_reviews(price_per_hour: float, reviews_per_s: float) -> float:
    """$ per 1,000 reviews on a pod billed ``price_per_hour`` running at ``reviews_per_s``."""
    if price_per_hour < 0:
        raise ValueError(f"price_per_hour must be >= 0, got {price_per_hour!r}")
    if not reviews_per_s > 0 or math.isinf(reviews_per_s):
        raise ValueError(f"reviews_per_s must be a positive number, got {reviews_per_s!r}")
    return price_per_hour / 3600.0 / reviews_per_s * 1000.0
