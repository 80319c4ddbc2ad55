"""Aspects through ``reviewkit serve``'s app, in-process with the stand-in engine of test_serve_app.py
(``SwitchEngine``: positive for 'zzgood', negative for 'zzbad'): the request field, its refusals,
the answer's shape and counts, and the batcher's second engine pass (isolation, no waiting).

The real server with the real engine answers aspects in test_serve_server.py.
"""

from __future__ import annotations

import concurrent.futures
import json
import threading
import time

import pytest
from fastapi.testclient import TestClient
from serve_support import ANALYZE, BATCH, MAX_BODY, MAX_REVIEWS, SwitchEngine, check_aspects, check_bad_input

from reviewkit.engines.base import EngineDeadError
from reviewkit.serve import app

pytestmark = pytest.mark.serve

SEED_KEYS = {
    "restaurant_id",
    "positive_count",
    "negative_count",
    "total_count",
    "positive_ratio",
    "negative_ratio",
    "unlabelled_count",
    "reviews",
}
BODY = {
    "restaurant_id": 4,
    "reviews": [
        {"id": "a", "content": "zzgood taste and friendly staff"},  # taste +, service +
        {"id": "b", "content": "zzbad rude staff, zzbad too expensive"},  # service -, price -
        {"id": "c", "content": None},
        {"id": "d", "content": "zzbad bland soup"},  # taste -
        {"id": "e", "content": "zzgood view"},  # no aspect mentioned
    ],
}


@pytest.fixture(scope="module")
def no_engine():
    with TestClient(app(load_engine=False, api_key="", max_reviews=MAX_REVIEWS, max_body_bytes=MAX_BODY)) as client:
        yield client


@pytest.fixture(scope="module")
def switch():
    with TestClient(app(SwitchEngine(delay=0), api_key="", cache=False)) as client:
        yield client


def test_without_aspects_the_answer_is_the_seeds_byte_for_byte(switch):
    plain = switch.post(ANALYZE, json=BODY)
    assert plain.status_code == 200
    out = plain.json()
    assert set(out) == SEED_KEYS and all(set(r) == {"id", "sentiment", "sentiment_score"} for r in out["reviews"])
    for off in (False, None):
        assert switch.post(ANALYZE, json={**BODY, "aspects": off}).content == plain.content
    batch = switch.post(BATCH, json={"restaurants": [BODY, BODY]})
    assert batch.json()["results"] == [out, out]
    assert switch.post(BATCH, json={"restaurants": [BODY, BODY], "aspects": False}).content == batch.content
    # With aspects the seed's part is the same: only 'aspects' per review and 'aspect_summary' are added.
    asked = switch.post(ANALYZE, json={**BODY, "aspects": True}).json()
    assert set(asked) == SEED_KEYS | {"aspect_summary"}
    for review in asked["reviews"]:
        del review["aspects"]
    del asked["aspect_summary"]
    assert asked == out


def test_aspects_true_labels_each_review_and_counts_them_per_restaurant(switch):
    out = switch.post(ANALYZE, json={**BODY, "aspects": True}).json()
    assert [r["id"] for r in out["reviews"]] == ["a", "b", "c", "d", "e"]
    check_aspects(out, ["taste", "service", "price", "portion", "wait"])
    labels = [{name: a["label"] for name, a in r["aspects"].items()} for r in out["reviews"]]
    assert [list(row) for row in labels] == [["taste", "service", "price", "portion", "wait"]] * 5
    assert labels[0] == {"taste": "positive", "service": "positive", "price": "none", "portion": "none", "wait": "none"}
    assert labels[1] == {"taste": "none", "service": "negative", "price": "negative", "portion": "none", "wait": "none"}
    assert labels[2] == dict.fromkeys(labels[2])  # no text: every label null
    assert labels[3]["taste"] == "negative" and set(labels[4].values()) == {"none"}
    a, b = out["reviews"][0]["aspects"], out["reviews"][1]["aspects"]
    assert a["taste"]["score"] > 0.5 and b["service"]["score"] < 0.5
    assert a["price"]["score"] is None and out["reviews"][2]["aspects"]["taste"]["score"] is None
    summary = out["aspect_summary"]
    assert summary["taste"] == {"mentions": 2, "positive": 1, "negative": 1, "positive_share": 0.5}
    assert summary["service"] == {"mentions": 2, "positive": 1, "negative": 1, "positive_share": 0.5}
    assert summary["price"] == {"mentions": 1, "positive": 0, "negative": 1, "positive_share": 0.0}
    assert summary["portion"] == {"mentions": 0, "positive": 0, "negative": 0, "positive_share": None}
    assert summary["top_negative_aspect"] == "taste"  # a tie of 1: the first asked


def test_names_and_custom_aspects_in_the_order_asked(switch):
    parking = {"name": "parking", "ko": "주차", "en": "parking", "words": ["주차", "car park"]}
    body = {
        "restaurant_id": 4,
        "reviews": [
            {"id": 1, "content": "zzbad no car park, 주차 불가"},
            {"id": 2, "content": "zzgood big car park, parking"},
        ],
        "aspects": ["wait", parking],
    }
    out = switch.post(ANALYZE, json=body).json()
    assert list(out["aspect_summary"]) == ["wait", "parking", "top_negative_aspect"]
    assert [r["aspects"]["parking"]["label"] for r in out["reviews"]] == ["negative", "positive"]
    assert out["aspect_summary"]["top_negative_aspect"] == "parking"
    # A client's words are literal ("p.rk" matches no "park"), and they replace ko/en as the mention test.
    literal = {"name": "parking", "ko": "주차", "en": "parking", "words": ["p.rk"]}
    out = switch.post(ANALYZE, json={**body, "aspects": [literal]}).json()
    assert [r["aspects"]["parking"]["label"] for r in out["reviews"]] == ["none", "none"]


def _too_many(n):
    return [{"name": f"a{i}", "ko": "가", "en": "a"} for i in range(n)]


BAD_ASPECTS = [
    ("a string", "taste", "must be true, false or a list"),
    ("unknown name", ["taste", "smell"], "item 1: unknown aspect 'smell'"),
    ("twice", ["taste", "price", "taste"], "'taste' is given twice"),
    ("empty list", [], "an empty list"),
    ("custom without en", [{"name": "parking", "ko": "주차"}], "item 0: a custom aspect needs en"),
    ("custom bad name", [{"name": "Parking Lot", "ko": "주차", "en": "parking"}], "item 0: aspect name 'Parking Lot'"),
    ("custom unknown field", [{"name": "p", "ko": "주차", "en": "p", "wordz": []}], "unknown field 'wordz'"),
    ("custom words not a list", [{"name": "p", "ko": "주차", "en": "p", "words": "x"}], "words must be a list"),
    ("custom too long", [{"name": "p", "ko": "주" * 41, "en": "p"}], "ko is 41 characters"),
    ("custom two lines", [{"name": "p", "ko": "주차", "en": "two\nlines"}], "one-line 'en'"),
    ("a label's name", [{"name": "positive", "ko": "긍정", "en": "good"}], "collides"),
    ("the summary's key", [{"name": "top_negative_aspect", "ko": "가", "en": "a"}], "summary's own key"),
    ("a number item", [1], "item 0: an aspect is a name or"),
]


@pytest.mark.parametrize("name,aspects,problem", BAD_ASPECTS, ids=[c[0] for c in BAD_ASPECTS])
def test_bad_aspects_are_a_422_naming_the_field_and_the_problem(no_engine, name, aspects, problem):
    for path, body in ((ANALYZE, {**BODY, "aspects": aspects}), (BATCH, {"restaurants": [BODY], "aspects": aspects})):
        response = no_engine.post(path, json=body)
        check_bad_input(response, 422, "aspects")
        assert problem in response.json()["error"], response.json()["error"]


def test_a_lone_surrogate_in_a_custom_aspect_is_a_422(no_engine):
    raw = b'{"reviews": [], "aspects": [{"name": "p", "ko": "\\ud800", "en": "p"}]}'
    response = no_engine.post(ANALYZE, content=raw, headers={"Content-Type": "application/json"})
    check_bad_input(response, 422, "aspects")
    assert "item 0: ko" in response.json()["error"]


def test_aspects_are_bounded_per_request_and_set_once_per_batch(no_engine):
    assert no_engine.post(ANALYZE, json={**BODY, "aspects": _too_many(10)}).status_code != 413
    response = no_engine.post(ANALYZE, json={**BODY, "aspects": _too_many(11)})
    assert response.status_code == 413 and "11 aspects is over the limit of 10" in response.json()["detail"]
    response = no_engine.post(BATCH, json={"restaurants": [BODY], "aspects": _too_many(11)})
    assert response.status_code == 413
    with TestClient(app(load_engine=False, api_key="", max_aspects=3)) as client:
        response = client.post(ANALYZE, json={**BODY, "aspects": True})  # true is all five
        assert response.status_code == 413 and "5 aspects is over the limit of 3" in response.json()["detail"]
    response = no_engine.post(BATCH, json={"restaurants": [BODY, {**BODY, "aspects": ["taste"]}]})
    check_bad_input(response, 422, "restaurants.1.aspects")
    from reviewkit.cli import build_parser
    from reviewkit.serve.limits import from_args

    assert from_args(build_parser().parse_args(["serve", "--max-aspects", "4"])).max_aspects == 4


def test_reviews_without_text_get_null_aspects_without_an_engine(no_engine):
    body = {"restaurant_id": 7, "reviews": [{"id": 1, "content": None}, {"id": 2, "content": " "}], "aspects": True}
    out = no_engine.post(ANALYZE, json=body).json()
    assert out["unlabelled_count"] == 2
    assert all(a == {"label": None, "score": None} for r in out["reviews"] for a in r["aspects"].values())
    assert out["aspect_summary"]["taste"]["mentions"] == 0 and out["aspect_summary"]["top_negative_aspect"] is None
    empty = no_engine.post(ANALYZE, json={"restaurant_id": 7, "reviews": [], "aspects": ["wait"]}).json()
    assert empty["aspect_summary"] == {
        "wait": {"mentions": 0, "positive": 0, "negative": 0, "positive_share": None},
        "top_negative_aspect": None,
    }


def test_the_batch_route_summarizes_each_restaurant_as_the_single_route_does(switch):
    other = {"restaurant_id": 5, "reviews": [{"id": 9, "content": "zzbad slow service, long wait"}]}
    empty = {"restaurant_id": 6, "reviews": []}
    out = switch.post(BATCH, json={"restaurants": [BODY, empty, other], "aspects": ["service", "wait"]}).json()
    singles = [switch.post(ANALYZE, json={**b, "aspects": ["service", "wait"]}).json() for b in (BODY, empty, other)]
    assert out["results"] == singles and out["total_count"] == 6
    assert [r["aspect_summary"]["top_negative_aspect"] for r in out["results"]] == ["service", None, "service"]
    assert out["results"][2]["aspect_summary"]["wait"] == {
        "mentions": 1,
        "positive": 0,
        "negative": 1,
        "positive_share": 0.0,
    }


class AspectPass:
    """The batcher's aspect pass (``score_aspects`` as the batcher calls it), made slow, failing, or
    failing on the reviews with 'zzhate' alone (as ``score_aspects`` reports a text the engine
    fails on alone: None labels and the reason in ``errors``); counts the texts it is asked."""

    def __init__(self, monkeypatch) -> None:
        from reviewkit.serve import batcher

        self.real = batcher.score_aspects
        self.delay = 0.0
        self.failing: Exception | None = None
        self.asked: list[int] = []
        monkeypatch.setattr(batcher, "score_aspects", self)

    def __call__(self, texts, engine, **options):
        found = self.real(texts, engine, **options)
        if engine is None:  # no text: the batcher answers without the engine
            return found
        self.asked.append(len(texts))
        time.sleep(self.delay)
        if self.failing is not None:
            raise self.failing
        for i, text in enumerate(texts):
            if "zzhate" in str(text):
                found.labels[i] = [None] * len(found.aspects)
                found.scores[i] = float("nan")
                found.errors[i] = "ValueError: cannot ask 'zzhate' about an aspect"
        return found


def _concurrently(client, bodies):
    """Post the bodies at once (one thread each); (status, json, seconds to answer) per body."""
    start = threading.Barrier(len(bodies))

    def post(body):
        start.wait()
        began = time.monotonic()
        response = client.post(ANALYZE, json=body)
        return response.status_code, response.json(), time.monotonic() - began

    with concurrent.futures.ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(post, bodies))


def test_a_review_that_fails_its_aspects_fails_only_its_own_request(monkeypatch):
    aspect_pass = AspectPass(monkeypatch)
    with TestClient(app(SwitchEngine(delay=0), api_key="", cache=False, batch_wait_ms=300)) as client:
        culprit = {"restaurant_id": 1, "reviews": [{"content": "zzgood taste"}, {"content": "zzhate taste"}]}
        same_set = {"restaurant_id": 2, "reviews": [{"content": "zzbad taste"}], "aspects": ["taste"]}
        plain = {"restaurant_id": 3, "reviews": [{"content": "zzhate taste"}]}
        answers = _concurrently(client, [{**culprit, "aspects": ["taste"]}, same_set, plain])
        (status, out, _), (same_status, same, _), (plain_status, alone, _) = answers
        assert status == 422 and out["error"].startswith("reviews.1.content: could not be scored (aspects:"), out
        assert "reviews.0" not in out["error"]
        assert same_status == 200 and same["reviews"][0]["aspects"]["taste"]["label"] == "negative"
        assert plain_status == 200 and "aspect_summary" not in alone and alone["total_count"] == 1
        assert aspect_pass.asked == [3]  # one aspect call for the two requests of one set


def test_a_failing_aspect_pass_is_a_503_for_those_that_asked_only_and_the_server_recovers(monkeypatch):
    aspect_pass = AspectPass(monkeypatch)
    with TestClient(app(SwitchEngine(delay=0), api_key="", cache=False, batch_wait_ms=300)) as client:
        aspect_pass.failing = RuntimeError("aspect pass fell over")
        asked = {"restaurant_id": 1, "reviews": [{"content": "zzgood taste"}], "aspects": True}
        other_set = {"restaurant_id": 2, "reviews": [{"content": "zzgood service"}], "aspects": ["service"]}
        plain = {"restaurant_id": 3, "reviews": [{"content": "zzgood taste"}]}
        answers = _concurrently(client, [asked, other_set, plain])
        assert [a[0] for a in answers] == [503, 503, 200]
        assert "aspect pass fell over" in answers[0][1]["detail"]
        assert answers[2][1]["positive_count"] == 1
        assert client.get("/health").json()["status"] == "engine_error"
        aspect_pass.failing = None
        again = client.post(ANALYZE, json=asked)
        assert again.status_code == 200 and again.json()["aspect_summary"]["taste"]["positive"] == 1
        assert client.get("/health").json()["status"] == "ok"


def test_a_request_without_aspects_does_not_wait_for_anothers_aspects(monkeypatch):
    aspect_pass = AspectPass(monkeypatch)
    aspect_pass.delay = 1.5
    with TestClient(app(SwitchEngine(delay=0), api_key="", cache=False, batch_wait_ms=300)) as client:
        asked = {"restaurant_id": 1, "reviews": [{"content": "zzgood taste"}], "aspects": ["taste"]}
        plain = {"restaurant_id": 2, "reviews": [{"content": "zzgood taste"}]}
        (status, _, slow), (plain_status, _, fast) = _concurrently(client, [asked, plain])
        assert (status, plain_status) == (200, 200)
        # Both in one batch (300 ms wait): the plain one is answered after the overall pass, not the aspects'.
        assert slow >= 1.5 and fast < slow - 1.0, (slow, fast)


def test_a_dead_engine_in_the_aspect_pass_fails_everything_and_asks_to_exit_3(monkeypatch):
    aspect_pass = AspectPass(monkeypatch)
    application = app(SwitchEngine(delay=0), api_key="", cache=False)
    exits = []
    with TestClient(application) as client:
        application.state.reviewkit.request_exit = exits.append
        aspect_pass.failing = EngineDeadError("engine process died")
        response = client.post(ANALYZE, json={**BODY, "aspects": ["taste"]})
        assert response.status_code == 503 and "engine process died" in response.json()["detail"]
        assert exits == [3] and client.get("/health").json()["status"] == "engine_dead"


def test_the_openapi_docs_describe_the_aspects_field(no_engine):
    schemas = no_engine.get("/openapi.json").json()["components"]["schemas"]
    field = schemas["AnalyzeRequest"]["properties"]["aspects"]
    assert {"type": "boolean"} in field["anyOf"] and "taste" in json.dumps(field)
    assert "aspects" in schemas["BatchRequest"]["properties"]
