"""The seed's SentimentAnalyzer calls on the real engine."""

import asyncio
import time

import pytest

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
        """The real engine behind a connection that fails twice first."""

        def __init__(self):
            self.failures = 2

        def __getattr__(self, name):
            return getattr(engine, name)

        def score_labels(self, prompts, label_ids):
            if self.failures:
                self.failures -= 1
                raise RuntimeError("engine hiccup")
            return engine.score_labels(prompts, label_ids)

    flaky = FlakyEngine()
    started = time.perf_counter()
    result = asyncio.run(SentimentAnalyzer(flaky, cache=False).analyze_async(REVIEWS[:3], 3, max_retries=3))
    assert result["positive_count"] == 2 and flaky.failures == 0
    assert time.perf_counter() - started >= 1.5  # backoff 0.5 s + 1 s
    with pytest.raises(RuntimeError, match="hiccup"):
        asyncio.run(SentimentAnalyzer(FlakyEngine(), cache=False).analyze_async(REVIEWS[:1], 3, max_retries=1))
    with pytest.raises(KeyError):
        asyncio.run(SentimentAnalyzer(cache=False).analyze_async([{"id": 1}], 3))
