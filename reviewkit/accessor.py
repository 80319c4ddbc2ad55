"""``df.reviewkit``: the analysis API as a pandas DataFrame accessor.

Registered when pandas is imported (see ``reviewkit._pandas_hook``), so
``df.reviewkit.analyze()`` works in any notebook that has imported reviewkit.
"""

from __future__ import annotations

from typing import Any

import pandas as pd


@pd.api.extensions.register_dataframe_accessor("reviewkit")
class ReviewkitAccessor:
    """``df.reviewkit.analyze(text=...)`` and ``df.reviewkit.summarize(by=...)``."""

    def __init__(self, df: pd.DataFrame) -> None:
        self._df = df

    def analyze(self, text: str = "content", **options: Any) -> pd.DataFrame:
        """Same as ``reviewkit.analyze(df, text=..., **options)``."""
        from reviewkit.analysis import analyze

        return analyze(self._df, text=text, **options)

    def summarize(self, by: str = "restaurant_id", **options: Any) -> pd.DataFrame:
        """Same as ``reviewkit.summarize(df, by=..., **options)``."""
        from reviewkit.summary import summarize

        return summarize(self._df, by=by, **options)
