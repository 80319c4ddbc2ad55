"""``df.reviewkit``: the analysis API as a pandas DataFrame accessor.

Registered when pandas is imported (see ``reviewkit._pandas_hook``), so
``df.reviewkit.analyze()`` works in any notebook that has imported reviewkit. The methods
spell out their parameters, as pandas' own accessors do, so that Shift-Tab in Jupyter
and an IDE show them; each passes them on unchanged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import pandas as pd

from reviewkit.prompts import DEFAULT_LABELS
from reviewkit.scoring import DEFAULT_CHUNK_SIZE, SCORE, SENTIMENT

if TYPE_CHECKING:  # pragma: no cover
    from reviewkit.cache import ResultCache
    from reviewkit.engines.base import Engine
    from reviewkit.prompts import PromptTemplate


@pd.api.extensions.register_dataframe_accessor("reviewkit")
class ReviewkitAccessor:
    """``df.reviewkit.analyze(text=...)`` and ``df.reviewkit.summarize(by=...)``."""

    def __init__(self, df: pd.DataFrame) -> None:
        self._df = df

    def analyze(
        self,
        text: str = "content",
        *,
        labels: Sequence[str] = DEFAULT_LABELS,
        prompt: PromptTemplate | dict[str, PromptTemplate] | None = None,
        engine: Engine | None = None,
        cache: bool | ResultCache = True,
        calibrate_scores: bool = True,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        progress: bool = True,
        aspects: Any = None,
        mention: str = "words",
    ) -> pd.DataFrame:
        """``reviewkit.analyze(df, text, ...)``: a copy with ``sentiment`` and ``sentiment_score``
        columns, and ``aspect_<name>`` ones with ``aspects=`` (see :func:`reviewkit.analyze`)."""
        from reviewkit import analysis  # at call time: this module is imported while pandas loads

        return analysis.analyze(
            self._df,
            text,
            labels=labels,
            prompt=prompt,
            engine=engine,
            cache=cache,
            calibrate_scores=calibrate_scores,
            chunk_size=chunk_size,
            progress=progress,
            aspects=aspects,
            mention=mention,
        )

    def summarize(
        self, by: str | list[str] = "restaurant_id", *, sentiment: str = SENTIMENT, score: str = SCORE
    ) -> pd.DataFrame:
        """``reviewkit.summarize(df, by, ...)``: counts and ratios per group of an analyzed frame."""
        from reviewkit import summary

        return summary.summarize(self._df, by, sentiment=sentiment, score=score)
