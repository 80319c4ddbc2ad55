"""The seed's SentimentAnalyzer calls on the real engine."""

import asyncio
import time
import warnings

import pytest
from serve_support import check_aspects

from reviewkit.seed_api import SentimentAnalyzer

REVIEWS = [
    {"id": 1, "restaurant_id": 3, "content": "맛있어요! 사장님도 친절하세요", "created_at": "2024-01-01"},
    {"id": 2, "restaurant_id": 3, "content": "Cold food and a rude waiter."},
    {"id": 3, "restaurant_id": 3, "content": "Best noodles in town, will be back!"},
    {"id": 4, "restaurant_id": 3, "content": ""},
]


def test_analyze_returns_the_seed_counts_and_a_label_per_review(engine):
    result = SentimentAnalyzer(cache=False).analyze(REVIEWS, restaurant_id=3)
    assert result["restaurant_id"] == 3
    assert (result["positive_count"], result["negative_count"], result["total_count"]) == (2, 1, 4)
    assert (result["positive_ratio"], result["negative_ratio"]) == (50, 25)  # % of total_count
    assert result["unlabelled_count"] == 1
    assert [r["id"] for r in result["reviews"]] == [1, 2, 3, 4]
    assert [r["sentiment"] for r in result["reviews"]] == ["positive", "negative", "positive", None]


def test_restaurant_id_comes_from_the_reviews_and_mixed_ids_are_refused(engine):
    assert SentimentAnalyzer().analyze(REVIEWS[:2])["restaurant_id"] == 3
    with pytest.raises(ValueError, match="several restaurants"):
        SentimentAnalyzer().analyze(REVIEWS[:2] + [{"restaurant_id": 9, "content": "ok"}])
    with pytest.raises(KeyError, match="content"):
        SentimentAnalyzer().analyze([{"id": 1, "restaurant_id": 3}], restaurant_id=3)
    empty = SentimentAnalyzer().analyze([], restaurant_id=5)
    assert (empty["total_count"], empty["positive_ratio"], empty["reviews"]) == (0, 0, [])


def test_analyze_async_does_not_block_the_event_loop(engine):
    reviews = [{"id": i, "restaurant_id": 1, "content": f"async review {i}: lovely bibimbap"} for i in range(60)]

    async def main():
        ticks = 0
        task = asyncio.create_task(SentimentAnalyzer(cache=False).analyze_async(reviews, 1))
        while not task.done():
            ticks += 1
            await asyncio.sleep(0.01)
        return ticks, task.result()

    ticks, result = asyncio.run(main())
    assert result["total_count"] == 60
    assert ticks > 5  # the loop kept running while the engine worked


def test_analyze_async_retries_engine_failures_but_not_bad_input(engine):
    class FlakyEngine:
        """The real engine behind a connection that fails ``hiccups`` times, or is down for ``down_for`` s."""

        def __init__(self, hiccups=0, down_for=0.0):
            self.hiccups, self.up_at = hiccups, time.monotonic() + down_for

        def __getattr__(self, name):
            return getattr(engine, name)

        def score_labels(self, prompts, label_ids):
            if self.hiccups or time.monotonic() < self.up_at:
                self.hiccups = max(0, self.hiccups - 1)
                raise RuntimeError("engine hiccup")
            return engine.score_labels(prompts, label_ids)

    # Two passing hiccups: the rows are scored apart and retried alone, none is lost.
    flaky = FlakyEngine(hiccups=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no row got NaN
        result = asyncio.run(SentimentAnalyzer(flaky, cache=False).analyze_async(REVIEWS[:3], 3, max_retries=0))
    assert result["positive_count"] == 2 and result["unlabelled_count"] == 0 and flaky.hiccups == 0
    # An outage (every call fails for 1 s): the whole call is retried with backoff (0.5 s, 1 s).
    started = time.perf_counter()
    result = asyncio.run(
        SentimentAnalyzer(FlakyEngine(down_for=1.0), cache=False).analyze_async(REVIEWS[:3], 3, max_retries=3)
    )
    assert result["positive_count"] == 2 and result["unlabelled_count"] == 0
    assert time.perf_counter() - started >= 1.5  # backoff 0.5 s + 1 s
    with pytest.raises(RuntimeError, match="hiccup"):
        asyncio.run(
            SentimentAnalyzer(FlakyEngine(down_for=600), cache=False).analyze_async(REVIEWS[:1], 3, max_retries=1)
        )
    with pytest.raises(KeyError):
        asyncio.run(SentimentAnalyzer(cache=False).analyze_async([{"id": 1}], 3))


MIXED = [
    {"id": "k", "restaurant_id": 8, "content": "맛은 정말 좋은데 직원이 너무 불친절해요"},
    {"id": "e", "restaurant_id": 8, "content": "the food was delicious but the waiter was rude"},
    {"id": "x", "restaurant_id": 8, "content": None},
]


def test_aspects_label_each_review_as_analyze_does_and_summarize_the_restaurant(engine, fresh_cache):
    import pandas as pd

    import reviewkit

    # One cache: the three calls read the same overall scores (a recomputation may differ in the last digits).
    analyzer = SentimentAnalyzer(cache=fresh_cache)
    plain = analyzer.analyze(MIXED)
    result = analyzer.analyze(MIXED, aspects=True)
    frame = reviewkit.analyze(pd.DataFrame(MIXED), aspects=True, cache=fresh_cache, progress=False)
    for j, review in enumerate(result["reviews"]):
        assert list(review["aspects"]) == ["taste", "service", "price", "portion", "wait"]
        for name, found in review["aspects"].items():
            expected = frame[f"aspect_{name}"].iloc[j]
            assert found["label"] == (None if pd.isna(expected) else expected)
            score = frame[f"aspect_{name}_score"].iloc[j]
            assert (found["score"] is None) == pd.isna(score) and (pd.isna(score) or abs(found["score"] - score) < 1e-6)
    check_aspects(result, ["taste", "service", "price", "portion", "wait"])
    row = reviewkit.summarize(frame, by="restaurant_id").iloc[0]  # one definition of the counting
    for name in ("taste", "service", "price", "portion", "wait"):
        found = result["aspect_summary"][name]
        assert (found["mentions"], found["negative"]) == (row[f"{name}_mentions"], row[f"{name}_negative"])
        share = row[f"{name}_positive_share"]
        assert found["positive_share"] == (None if pd.isna(share) else share)
    top = row["top_negative_aspect"]
    assert result["aspect_summary"]["top_negative_aspect"] == (None if pd.isna(top) else top)
    assert result["aspect_summary"]["price"]["mentions"] == 0 and result["aspect_summary"]["taste"]["mentions"] == 2
    # The seed's part is the same as without aspects, and without them the answer is the seed's.
    for review in result["reviews"]:
        del review["aspects"]
    del result["aspect_summary"]
    assert result == plain and analyzer.analyze(MIXED, aspects=None) == plain
    assert set(plain) == {
        "restaurant_id",
        "positive_count",
        "negative_count",
        "total_count",
        "positive_ratio",
        "negative_ratio",
        "unlabelled_count",
        "reviews",
    }
    assert all(set(r) == {"id", "sentiment", "sentiment_score"} for r in plain["reviews"])


def test_bad_aspects_are_refused_before_any_scoring_and_not_retried(engine):
    from reviewkit.aspect_prompts import AspectError

    calls = []

    class Counting:
        def __getattr__(self, name):
            return getattr(engine, name)

        def score_labels(self, prompts, label_ids):
            calls.append(len(prompts))
            return engine.score_labels(prompts, label_ids)

    analyzer = SentimentAnalyzer(Counting(), cache=False)
    for bad, problem in (
        (["taste", "smell"], "unknown aspect 'smell'"),
        (["wait", "wait"], "given twice"),
        ([], "empty"),
    ):
        with pytest.raises(AspectError, match=problem):
            analyzer.analyze(MIXED[:1], aspects=bad)
    with pytest.raises(ValueError, match="mention"):
        analyzer.analyze(MIXED[:1], aspects=True, mention="always")
    started = time.perf_counter()
    with pytest.raises(AspectError):
        asyncio.run(analyzer.analyze_async(MIXED[:1], aspects=["smell"], max_retries=3))
    assert time.perf_counter() - started < 0.5 and calls == []  # refused at once: no retry, no engine call
    out = asyncio.run(analyzer.analyze_async(MIXED[:2], aspects=["price"]))
    assert out["aspect_summary"] == {
        "price": {"mentions": 0, "positive": 0, "negative": 0, "positive_share": None},
        "top_negative_aspect": None,
    }
