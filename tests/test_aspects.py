"""Aspects without an engine: what an aspect is, which are refused, mentions, summaries, the plot."""

import math

import numpy as np
import pandas as pd
import pytest

import reviewkit
from reviewkit.aspect_prompts import ASPECTS, Aspect, AspectError, aspect_template, resolve_aspects
from reviewkit.aspects import score_aspects
from reviewkit.summary import summarize


def test_the_default_set_is_the_restaurant_one_in_both_languages():
    assert [a.name for a in ASPECTS] == ["taste", "service", "price", "portion", "wait"]
    assert [a.ko for a in ASPECTS] == ["맛", "서비스", "가격", "양", "웨이팅"]
    assert resolve_aspects(True) == ASPECTS
    assert [a.name for a in resolve_aspects(["wait", "taste"])] == ["wait", "taste"]  # the order asked
    assert reviewkit.ASPECTS is ASPECTS and reviewkit.Aspect is Aspect


@pytest.mark.parametrize(
    "aspects, problem",
    [
        (["taste", "smell"], "unknown aspect 'smell'"),
        (["taste", "taste"], "given twice"),
        ([], "empty"),
        ([Aspect("positive", "긍정", "positive")], "collides with a label"),
        ([Aspect("none", "없음", "none")], "collides with a label"),
        ([Aspect("cost", "비용", "cost"), Aspect("cost_score", "비용점수", "cost score")], "would both write"),
        (42, "must be True"),
    ],
)
def test_bad_aspects_are_refused_naming_the_problem(aspects, problem):
    with pytest.raises(AspectError, match=problem):
        resolve_aspects(aspects)


def test_a_custom_name_that_is_a_requested_label_is_refused():
    with pytest.raises(AspectError, match="collides"):
        resolve_aspects([Aspect("mixed", "혼합", "mixed")], labels=("positive", "negative", "mixed"))


@pytest.mark.parametrize(
    "kwargs, problem",
    [
        ({"name": "Parking Lot", "ko": "주차", "en": "parking"}, "lower-case"),
        ({"name": "parking", "ko": "", "en": "parking"}, "'ko'"),
        ({"name": "parking", "ko": "주차", "en": "two\nlines"}, "'en'"),
        ({"name": "parking", "ko": "주차", "en": "parking", "words": ("(unclosed",)}, "regular expression"),
    ],
)
def test_a_bad_custom_aspect_is_refused_naming_the_field(kwargs, problem):
    with pytest.raises(AspectError, match=problem):
        Aspect(**kwargs)


def test_an_aspect_column_that_would_overwrite_the_text_column_is_refused_before_scoring():
    df = pd.DataFrame({"aspect_note": ["맛있어요"]})
    with pytest.raises(AspectError, match="aspect_note"):
        reviewkit.analyze(df, text="aspect_note", aspects=[Aspect("note", "메모", "note")], engine=None)


def test_a_custom_aspect_without_words_is_mentioned_by_its_names():
    parking = Aspect("parking", "주차", "parking")
    assert parking.mentioned_in("주차하기 너무 힘들어요")
    assert parking.mentioned_in("No PARKING anywhere near")
    assert not parking.mentioned_in("맛있어요")


@pytest.mark.parametrize(
    "text, mentioned",
    [
        ("맛은 좋은데 직원이 불친절해요", {"taste", "service"}),
        ("웨이팅이 한 시간이었어요 ㅠㅠ 가격도 비싸고", {"wait", "price"}),
        ("양이 많아서 배불러요", {"portion"}),
        ("great food but way overpriced", {"taste", "price"}),
        ("our server was rude and we waited 40 minutes", {"service", "wait"}),
        ("또 올게요!", set()),
        ("nice decor", set()),
        ("양념이 맛있어요", {"taste"}),  # 양념 (seasoning) is not 양 (portion)
    ],
)
def test_mentions_by_words_in_both_languages(text, mentioned):
    assert {a.name for a in ASPECTS if a.mentioned_in(text)} == mentioned


def test_texts_without_words_or_text_need_no_engine():
    scored = score_aspects([None, "", "또 올게요!", float("nan")], None, cache=False)
    assert scored.labels == [[None] * 5, [None] * 5, ["none"] * 5, [None] * 5]
    assert np.isnan(scored.scores).all()
    with pytest.raises(ValueError, match="need an engine"):
        score_aspects(["맛있어요"], None, cache=False)
    with pytest.raises(ValueError, match="mention must be one of"):
        score_aspects(["맛있어요"], None, mention="guess")


def test_the_aspect_prompt_asks_in_the_review_language_with_each_label_shown():
    for language, question in (("ko", "Aspect: 서비스"), ("en", "Aspect: service")):
        template = aspect_template(language)
        assert question in template.prefix_text()
        assert [label for _, label in template.examples].count("positive") == [
            label for _, label in template.examples
        ].count("negative")
        three_way = aspect_template(language, ("positive", "negative", "none"))
        assert any(label == "none" for _, label in three_way.examples)
        assert template.version != three_way.version


def _analyzed() -> pd.DataFrame:
    labels = {
        "taste": ["positive", "positive", "negative", None, "none"],
        "service": ["negative", "negative", "negative", None, "positive"],
        "wait": ["none", "none", "positive", None, "negative"],
    }
    df = pd.DataFrame(
        {
            "restaurant": ["국밥집", "국밥집", "국밥집", "국밥집", "Harbor Fish"],
            "sentiment": pd.Categorical(
                ["positive", "negative", "negative", None, "positive"], categories=["positive", "negative"]
            ),
            "sentiment_score": [0.9, 0.2, 0.1, math.nan, 0.8],
        }
    )
    for name, values in labels.items():
        df[f"aspect_{name}"] = pd.Categorical(values, categories=["positive", "negative", "none"])
        df[f"aspect_{name}_score"] = [0.5] * 5
    return df


def test_summarize_counts_mentions_negatives_and_the_aspect_that_drives_negatives():
    summary = summarize(_analyzed(), by="restaurant")
    korean = summary.loc["국밥집"]
    assert korean["taste_mentions"] == 3 and korean["taste_negative"] == 1
    assert korean["taste_positive_share"] == pytest.approx(2 / 3)
    assert korean["service_negative"] == 3 and korean["service_positive_share"] == 0
    assert korean["wait_mentions"] == 1 and korean["wait_positive_share"] == 1
    assert korean["top_negative_aspect"] == "service"
    fish = summary.loc["Harbor Fish"]
    assert fish["taste_mentions"] == 0 and math.isnan(fish["taste_positive_share"])
    assert fish["top_negative_aspect"] == "wait"
    assert list(summary.columns[:8]) == [
        "total",
        "labelled",
        "unlabelled",
        "positive",
        "negative",
        "positive_ratio",
        "negative_ratio",
        "mean_score",
    ]


def test_summarize_without_aspect_columns_is_unchanged():
    plain = _analyzed()[["restaurant", "sentiment", "sentiment_score"]]
    assert not any("aspect" in c for c in summarize(plain, by="restaurant").columns)


def test_a_group_with_no_negative_aspect_has_no_top_negative_aspect():
    df = _analyzed()
    df["aspect_service"] = pd.Categorical(["positive"] * 5, categories=["positive", "negative", "none"])
    df["aspect_taste"] = pd.Categorical(["positive"] * 5, categories=["positive", "negative", "none"])
    summary = summarize(df, by="restaurant")
    assert pd.isna(summary.loc["국밥집", "top_negative_aspect"])
    assert summary.loc["Harbor Fish", "top_negative_aspect"] == "wait"


def test_plot_aspects_draws_shares_and_counts_with_a_hangul_font():
    import matplotlib

    matplotlib.use("Agg")
    from reviewkit.plots import korean_font, plot_aspects

    fig = plot_aspects(summarize(_analyzed(), by="restaurant"))
    ax = fig.axes[0]
    texts = [t.get_text() for t in ax.texts]
    assert "67%\nn=3" in texts and "–\nn=0" in texts
    assert [t.get_text() for t in ax.get_xticklabels()] == ["taste", "service", "wait"]
    ticks = ax.get_yticklabels()
    assert ticks[0].get_text() == "Harbor Fish" or ticks[1].get_text() == "국밥집"
    font = korean_font()
    assert font is not None, "no Hangul font installed: scripts/system-packages.sh test installs fonts-noto-cjk"
    assert all(t.get_fontfamily() == [font] for t in ticks)
    with pytest.raises(KeyError, match="no aspect columns"):
        plot_aspects(summarize(_analyzed()[["restaurant", "sentiment", "sentiment_score"]], by="restaurant"))


def test_aspect_accuracy_counts_cells_mentions_and_polarity():
    from reviewkit.evaluation import aspect_accuracy

    gold = pd.DataFrame({"taste": ["positive", "negative", "none"], "wait": ["none", "negative", "positive"]})
    predicted = pd.DataFrame(
        {
            "aspect_taste": pd.Categorical(["positive", "positive", "none"]),
            "aspect_wait": pd.Categorical(["none", "none", "positive"]),
        }
    )
    found = aspect_accuracy(predicted, gold, ["taste", "wait"])
    assert (found["cells"].correct, found["cells"].total) == (4, 6)
    assert (found["mention"].correct, found["mention"].total) == (5, 6)
    assert (found["polarity"].correct, found["polarity"].total) == (2, 4)  # the missed mention counts as wrong
    assert (found["polarity_found"].correct, found["polarity_found"].total) == (2, 3)
    assert (found["majority"].correct, found["majority"].total) == (2, 6)
    with pytest.raises(ValueError, match="3 gold rows"):
        aspect_accuracy(predicted.iloc[:2], gold, ["taste"])


def test_the_labelled_aspect_set_is_split_once_and_balanced():
    data = reviewkit.aspect_reviews()
    assert len(data) == 240 and data["id"].is_unique and data["text"].is_unique
    assert data.groupby(["language", "split"]).size().tolist() == [60, 60, 60, 60]
    for name in ("taste", "service", "price", "portion", "wait"):
        assert set(data[name]) == {"positive", "negative", "none"}
    assert len(reviewkit.aspect_reviews("evaluation")) == 120
    with pytest.raises(ValueError, match="part must be"):
        reviewkit.aspect_reviews("test")
