"""analyze() on the real CPU engine: columns, row order, bad input, cache, interrupts."""

import math
import warnings

import pandas as pd
import pytest

import reviewkit
from reviewkit.analysis import analyze
from reviewkit.prompts import PromptTemplate


def test_columns_index_and_order_are_kept(engine, fresh_cache):
    df = pd.DataFrame(
        {
            "content": ["맛있어요! 또 올게요", "cold food, rude staff", "맛있어요! 또 올게요"],
            "restaurant_id": [7, 8, 9],
        },
        index=["b", "a", "b"],
    )  # duplicate index, unsorted
    out = analyze(df, cache=fresh_cache, progress=False)
    assert list(out.columns) == ["content", "restaurant_id", "sentiment", "sentiment_score"]
    assert list(out.index) == ["b", "a", "b"]
    assert out["restaurant_id"].tolist() == [7, 8, 9]
    assert isinstance(out["sentiment"].dtype, pd.CategoricalDtype)
    assert list(out["sentiment"].cat.categories) == ["positive", "negative"]
    assert out["sentiment"].tolist() == ["positive", "negative", "positive"]
    assert out["sentiment_score"].between(0, 1).all()
    assert out["sentiment_score"].iloc[0] == out["sentiment_score"].iloc[2]
    assert "sentiment" not in df.columns  # the input is not modified
    stats = reviewkit.last_run()
    assert (stats.rows, stats.unique_texts, stats.computed) == (3, 2, 2)  # duplicates computed once


def test_missing_text_gives_nan_without_a_model_call(engine, fresh_cache):
    df = pd.DataFrame({"content": [None, float("nan"), "", "   \n", pd.NA, "great ramen"]})
    out = analyze(df, cache=fresh_cache, progress=False)
    assert out["sentiment"].isna().tolist() == [True] * 5 + [False]
    assert out["sentiment_score"].isna().tolist() == [True] * 5 + [False]
    stats = reviewkit.last_run()
    assert stats.empty_rows == 5 and stats.computed == 1
    assert "no text 5" in stats.counts_line()


def test_non_strings_emoji_and_mixed_languages(engine, fresh_cache):
    df = pd.DataFrame({"content": [42, 3.5, "😋😋🔥", "The 비빔밥 was 최고, loved it!", b"bytes"]})
    out = analyze(df, cache=fresh_cache, progress=False)
    assert out["sentiment"].notna().all()
    assert out["sentiment"].tolist()[3] == "positive"


def test_all_rows_empty_needs_no_engine_and_empty_frame_keeps_columns(fresh_cache):
    out = analyze(pd.DataFrame({"content": [None, " "]}), cache=fresh_cache, progress=False)
    assert out["sentiment"].isna().all() and len(out) == 2
    empty = analyze(pd.DataFrame({"content": pd.Series([], dtype=object), "x": []}), cache=fresh_cache, progress=False)
    assert len(empty) == 0 and list(empty.columns) == ["content", "x", "sentiment", "sentiment_score"]


def test_very_long_text_is_truncated_counted_and_warned_once(engine, fresh_cache):
    long_text = "The food was great. " * 2000  # far beyond the 2,048-token model length
    df = pd.DataFrame({"content": [long_text, long_text + "!", "short and sweet"]})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = analyze(df, cache=fresh_cache, progress=False)
    truncation = [w for w in caught if "truncated" in str(w.message)]
    assert len(truncation) == 1 and "2 review(s)" in str(truncation[0].message)
    assert reviewkit.last_run().truncated == 2
    assert out["sentiment"].notna().all()


def test_bad_input_errors_name_the_problem(engine):
    with pytest.raises(TypeError, match="DataFrame"):
        analyze(["a list"])
    with pytest.raises(KeyError, match=r"'review'.*\['content', 'stars'\]"):
        analyze(pd.DataFrame({"content": ["x"], "stars": [5]}), text="review")
    with pytest.raises(ValueError, match="chunk_size"):
        analyze(pd.DataFrame({"content": ["x"]}), chunk_size=0)
    with pytest.raises(TypeError, match="labels"):
        analyze(pd.DataFrame({"content": ["x"]}), labels="positive")


def test_result_cache_makes_a_rerun_free_and_can_be_bypassed(engine, fresh_cache):
    df = pd.DataFrame({"content": [f"review number {i}: decent noodles" for i in range(40)]})
    first = analyze(df, cache=fresh_cache, progress=False)
    assert reviewkit.last_run().computed == 40
    second = analyze(df, cache=fresh_cache, progress=False)
    stats = reviewkit.last_run()
    assert (stats.cached, stats.computed, stats.prompt_tokens) == (40, 0, 0)
    pd.testing.assert_frame_equal(first, second)
    analyze(df, cache=False, progress=False)
    assert reviewkit.last_run().computed == 40
    assert len(fresh_cache) == 40


def test_an_interrupt_keeps_the_finished_chunks(engine, fresh_cache, monkeypatch):
    df = pd.DataFrame({"content": [f"visit {i}: friendly staff, tasty soup" for i in range(30)]})
    real_score = type(engine).score_labels
    calls = []

    def score_then_interrupt(self, prompts, label_ids):
        calls.append(len(prompts))
        if len(calls) == 2:  # the user presses stop during the second chunk
            raise KeyboardInterrupt
        return real_score(self, prompts, label_ids)

    monkeypatch.setattr(type(engine), "score_labels", score_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        analyze(df, cache=fresh_cache, chunk_size=10, progress=False)
    monkeypatch.setattr(type(engine), "score_labels", real_score)
    out = analyze(df, cache=fresh_cache, chunk_size=10, progress=False)
    stats = reviewkit.last_run()
    assert (stats.cached, stats.computed) == (10, 20)
    assert out["sentiment"].notna().all()


def test_neutral_label_is_an_option(engine, fresh_cache):
    df = pd.DataFrame({"content": ["Amazing food!", "Disgusting and rude.", "It opens at 11am."]})
    out = analyze(df, labels=("positive", "negative", "neutral"), cache=fresh_cache, progress=False)
    assert list(out["sentiment"].cat.categories) == ["positive", "negative", "neutral"]
    assert out["sentiment"].tolist()[:2] == ["positive", "negative"]


def test_colliding_labels_are_refused(engine):
    prompt = PromptTemplate(
        labels=("very good", "very bad"), examples=(("Loved it", "very good"), ("Hated it", "very bad"))
    )
    with pytest.raises(ValueError, match="start with the same token"):
        analyze(pd.DataFrame({"content": ["x"]}), prompt=prompt)
    with pytest.raises(ValueError, match="no built-in examples"):
        analyze(pd.DataFrame({"content": ["x"]}), labels=("positive", "mixed"))


def test_custom_prompt_and_accessor(engine, fresh_cache):
    prompt = PromptTemplate(
        labels=("good", "bad"),
        examples=(("Loved it", "good"), ("Hated it", "bad"), ("Superb", "good"), ("Awful", "bad")),
    )
    df = pd.DataFrame({"text": ["wonderful dinner", "terrible dinner"]})
    out = df.reviewkit.analyze(text="text", prompt=prompt, cache=fresh_cache, progress=False)
    assert out["sentiment"].tolist() == ["good", "bad"]
    assert out["sentiment_score"].iloc[0] > 0.5 > out["sentiment_score"].iloc[1]  # P(first label)


def test_run_figures_and_seed_style_log_line(engine, fresh_cache, caplog):
    df = reviewkit.sample_reviews()
    with caplog.at_level("INFO", logger="reviewkit"):
        out = analyze(df, cache=fresh_cache, progress=False)
    stats = reviewkit.last_run()
    counts = out["sentiment"].value_counts()
    assert stats.label_counts == {"positive": counts["positive"], "negative": counts["negative"]}
    line = f"analyzed 48 reviews: positive {counts['positive']} ({round(100 * counts['positive'] / 48)}%)"
    assert line in caplog.text
    assert stats.prompt_tokens > 0 and stats.cached_prompt_tokens > 0
    assert 0 < stats.prefix_cache_hit_rate < 1
    assert stats.reviews_per_s > 0 and not math.isnan(stats.engine_reviews_per_s)
    print(stats)


def test_activity_file_is_busy_while_analyzing(engine, fresh_cache, monkeypatch):
    from reviewkit.activity import read_activity

    seen = []
    real_score = type(engine).score_labels

    def spy(self, prompts, label_ids):
        seen.append(read_activity()["state"])
        return real_score(self, prompts, label_ids)

    monkeypatch.setattr(type(engine), "score_labels", spy)
    analyze(pd.DataFrame({"content": ["activity check: fine pizza"]}), cache=fresh_cache, progress=False)
    assert seen and set(seen) == {"busy"}
    assert read_activity()["state"] == "idle"
