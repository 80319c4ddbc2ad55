"""Aspects on the real CPU engine: labels, mixed reviews, the cache, the overall label unchanged."""

import math
import warnings

import numpy as np
import pandas as pd
import pytest

import reviewkit
from reviewkit.aspect_prompts import Aspect
from reviewkit.aspects import aspect_prompt_ids, score_aspects
from reviewkit.scoring import tokenize_reviews

MIXED = ["맛은 정말 좋은데 직원이 너무 불친절해요", "the food was delicious but the waiter was rude"]


def test_a_mixed_review_gets_opposite_aspect_labels_in_korean_and_english(engine, fresh_cache):
    out = reviewkit.analyze(pd.DataFrame({"content": MIXED}), aspects=True, cache=fresh_cache, progress=False)
    assert out["aspect_taste"].tolist() == ["positive", "positive"]
    assert out["aspect_service"].tolist() == ["negative", "negative"]
    assert out["aspect_price"].tolist() == ["none", "none"]
    assert (out["aspect_taste_score"] > 0.5).all() and (out["aspect_service_score"] < 0.5).all()
    assert out["aspect_price_score"].isna().all()  # not mentioned: no score


def test_columns_order_index_and_empty_text(engine, fresh_cache):
    df = pd.DataFrame(
        {"content": ["웨이팅이 너무 길어요", None, "   ", "cheap and generous portions"]}, index=[10, 3, 3, 1]
    )
    out = reviewkit.analyze(df, aspects=["wait", "portion"], cache=fresh_cache, progress=False)
    assert list(out.columns) == [
        "content",
        "sentiment",
        "sentiment_score",
        "aspect_wait",
        "aspect_wait_score",
        "aspect_portion",
        "aspect_portion_score",
    ]
    assert list(out.index) == [10, 3, 3, 1]
    assert list(out["aspect_wait"].cat.categories) == ["positive", "negative", "none"]
    assert out["aspect_wait"].iloc[0] == "negative"
    assert out["aspect_wait"].iloc[1:3].isna().all() and out["aspect_portion"].iloc[1:3].isna().all()
    assert out["aspect_portion"].iloc[3] == "positive" and out["aspect_portion"].iloc[0] == "none"


def test_the_overall_sentiment_is_the_same_with_aspects(engine, fresh_cache):
    df = reviewkit.sample_reviews()
    plain = reviewkit.analyze(df, cache=False, progress=False)
    with_aspects = reviewkit.analyze(df, aspects=True, cache=False, progress=False)
    assert (plain["sentiment"] == with_aspects["sentiment"]).all()
    np.testing.assert_allclose(plain["sentiment_score"], with_aspects["sentiment_score"], atol=1e-3)


def test_the_cache_reuses_the_overall_label_and_computes_only_new_aspects(engine, fresh_cache):
    df = pd.DataFrame({"content": ["가격은 착한데 직원이 불친절해요", "slow service and tiny portions"]})
    reviewkit.analyze(df, cache=fresh_cache, progress=False)
    first = reviewkit.analyze(df, aspects=["price"], cache=fresh_cache, progress=False)
    stats = reviewkit.last_run()
    assert stats.computed == 0 and stats.cached == 2  # the overall label came from the cache
    assert stats.aspect_pass.computed == 1  # only the Korean review mentions price: its clause
    again = reviewkit.analyze(df, aspects=["price", "portion"], cache=fresh_cache, progress=False)
    stats = reviewkit.last_run()
    # price: the clause scored just now; portion: a one-clause review, whose overall label is its answer
    assert (stats.aspect_pass.computed, stats.aspect_pass.cached) == (0, 2)
    assert again["aspect_price"].tolist() == first["aspect_price"].tolist()
    pd.testing.assert_series_equal(again["aspect_price_score"], first["aspect_price_score"])
    assert again["aspect_portion"].tolist()[1] == again["sentiment"].tolist()[1]
    assert "aspects: 0 questions computed, 2 cached" in str(stats)


def test_a_custom_aspect_is_asked_in_each_language(engine, fresh_cache):
    parking = Aspect("parking", "주차", "parking")
    df = pd.DataFrame(
        {"content": ["주차가 너무 불편하고 자리가 없어요", "easy free parking right outside", "맛있어요"]}
    )
    out = reviewkit.analyze(df, aspects=[parking, "taste"], cache=fresh_cache, progress=False)
    assert out["aspect_parking"].tolist() == ["negative", "positive", "none"]
    assert out["aspect_taste"].tolist()[2] == "positive"


def test_model_mention_asks_every_aspect_after_the_review_computed_once(engine):
    texts = ["맛도 좋고 직원도 친절하고 가격도 착하고 양도 많고 웨이팅도 없어요 " * 3, "great prices"]
    scored = score_aspects(texts, engine, mention="model", cache=False)
    assert scored.mention == "model" and scored.stats.computed == 10
    assert all(label in ("positive", "negative", "none") for row in scored.labels for label in row)
    # four of five questions reuse the review's blocks: most prompt tokens come from the prefix cache
    assert scored.stats.prefix_cache_hit_rate > 0.6, scored.stats
    built = reviewkit.aspects.aspect_template("ko", ("positive", "negative", "none")).build(
        engine.tokenizer, engine.prefix_block_size
    )
    review = tokenize_reviews(engine, texts[:1])[0]
    question = engine.tokenizer("\nAspect: 맛", add_special_tokens=False)["input_ids"]
    prompt = aspect_prompt_ids(engine, built, review, question)
    head = len(prompt) - len(question) - len(built.suffix_ids)
    assert head % engine.prefix_block_size == 0  # the review ends on a whole KV block


def test_a_row_that_cannot_be_encoded_gets_nan_and_a_warning_the_others_are_answered(engine, fresh_cache):
    texts = pd.Series(["맛있어요", "bad \ud800 text", "rude staff"], dtype=object)  # Arrow strings refuse it
    df = pd.DataFrame({"content": texts.to_numpy()}, index=["a", "b", "c"], dtype=object)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = reviewkit.analyze(df, aspects=["taste", "service"], cache=fresh_cache, progress=False)
    assert out.loc["b", ["aspect_taste", "aspect_service", "sentiment"]].isna().all()
    assert out.loc["a", "aspect_taste"] == "positive" and out.loc["c", "aspect_service"] == "negative"
    assert any("'b'" in str(w.message) for w in caught)
    assert not math.isnan(out.loc["c", "aspect_service_score"])


def test_the_accessor_and_score_texts_layer_pass_aspects(engine, fresh_cache):
    df = pd.DataFrame({"content": ["가성비 최고"]})
    out = df.reviewkit.analyze(aspects=["price"], cache=fresh_cache, progress=False)
    assert out["aspect_price"].tolist() == ["positive"]


@pytest.mark.parametrize("aspects", [["taste"], True])
def test_last_run_records_the_aspect_pass(engine, fresh_cache, aspects):
    reviewkit.analyze(pd.DataFrame({"content": ["맛있어요"]}), aspects=aspects, cache=fresh_cache, progress=False)
    stats = reviewkit.last_run()
    assert stats.aspect_pass is not None and stats.aspect_pass.label_counts["taste"] == 1
    assert stats.as_dict()["aspect_pass"]["rows"] == 1
