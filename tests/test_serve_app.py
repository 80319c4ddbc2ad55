"""The serve app in-process, without vLLM: validation, limits and auth off on an app with no
engine; engine failure -> 503 and recovery, and batching, with a small injected engine.

The real server with the real engine is tested in test_serve_server.py.
"""

from __future__ import annotations

import concurrent.futures
import json

import pytest
from fastapi.testclient import TestClient
from serve_support import (
    ANALYZE,
    BAD_INPUT,
    BATCH,
    EMPTY_BODY,
    MAX_BODY,
    MAX_REVIEWS,
    NAN_BODY,
    NO_TEXT_BODY,
    SEED_BODY,
    SwitchEngine,
    check_bad_input,
    check_no_text,
)

from reviewkit.engines.base import EngineDeadError
from reviewkit.serve import app

pytestmark = pytest.mark.serve


@pytest.fixture(scope="module")
def no_engine():
    """Auth off (explicitly, whatever the environment says) and no engine at all."""
    with TestClient(app(load_engine=False, api_key="", max_reviews=MAX_REVIEWS, max_body_bytes=MAX_BODY)) as client:
        yield client


@pytest.mark.parametrize("name,path,body,headers,status,field", BAD_INPUT, ids=[c[0] for c in BAD_INPUT])
def test_bad_input_is_a_4xx_naming_the_problem(no_engine, name, path, body, headers, status, field):
    check_bad_input(no_engine.post(path, content=body, headers=headers), status, field)


def test_a_chunked_body_over_the_limit_is_413_without_reading_it_all(no_engine):
    sent = []

    def chunks():
        for _ in range(100):
            sent.append(1)
            yield b"x" * 1000

    response = no_engine.post(ANALYZE, content=chunks(), headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert "20000 bytes" in response.json()["detail"]


def test_reviews_without_text_need_no_engine_and_count_as_unlabelled(no_engine):
    check_no_text(no_engine.post(ANALYZE, json=NO_TEXT_BODY).json(), 3)
    check_no_text(no_engine.post(ANALYZE, content=NAN_BODY, headers={"Content-Type": "application/json"}).json(), 2)
    check_no_text(no_engine.post(ANALYZE, json=EMPTY_BODY).json(), 0)
    out = no_engine.post(BATCH, json={"restaurants": [EMPTY_BODY, NO_TEXT_BODY]}).json()
    assert out["total_count"] == 3
    check_no_text(out["results"][0], 0)
    check_no_text(out["results"][1], 3)


def test_without_an_engine_text_gets_503_and_health_says_so(no_engine):
    response = no_engine.post(ANALYZE, content=SEED_BODY.encode(), headers={"Content-Type": "application/json"})
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    health = no_engine.get("/health").json()
    assert health["status"] == "no_engine" and health["engine_loaded"] is False and health["model"] is None


def test_auth_off_needs_no_header_and_docs_are_served(no_engine):
    assert no_engine.post(ANALYZE, json=EMPTY_BODY).status_code == 200
    assert no_engine.get("/docs").status_code == 200
    paths = no_engine.get("/openapi.json").json()["paths"]
    assert {ANALYZE, BATCH, "/health"} <= set(paths)


def test_the_api_key_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("REVIEWKIT_API_KEY", "s3cret-key")
    with TestClient(app(load_engine=False)) as client:
        assert client.post(ANALYZE, json=EMPTY_BODY).status_code == 401
        ok = client.post(ANALYZE, json=EMPTY_BODY, headers={"Authorization": "Bearer s3cret-key"})
        assert ok.status_code == 200
        assert client.get("/health").status_code == 200


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_reviews": 0},
        {"max_body_bytes": -1},
        {"labels": ["Good stuff"]},
        {"labels": "positive"},
        {"batch_wait_ms": -1},
    ],
)
def test_app_refuses_bad_settings(kwargs):
    with pytest.raises(ValueError):
        app(load_engine=False, **kwargs)


def _body(restaurant: int, words: list[str]) -> dict:
    return {
        "restaurant_id": restaurant,
        "reviews": [{"id": i, "content": f"{w} review {restaurant}-{i}", "rating": 5} for i, w in enumerate(words)],
    }


def test_engine_failure_is_503_with_retry_after_and_the_server_recovers():
    engine = SwitchEngine(delay=0)
    with TestClient(app(engine, api_key="", cache=False, retry_after_s=7)) as client:
        for error in (RuntimeError("GPU fell off the bus"), OSError("connection reset")):
            engine.failing = error
            response = client.post(ANALYZE, json=_body(1, ["zzgood"]))
            assert response.status_code == 503
            assert response.headers["Retry-After"] == "7"
            assert str(error) in response.json()["detail"]
            assert client.get("/health").json()["status"] == "engine_error"
        engine.failing = None
        out = client.post(ANALYZE, json=_body(1, ["zzgood", "zzbad"])).json()
        assert [r["sentiment"] for r in out["reviews"]] == ["positive", "negative"]
        health = client.get("/health").json()
        assert health["status"] == "ok" and health["model"] == "switch-engine"
        assert health["requests_failed"] == 2 and health["requests_served"] == 1


def test_a_dead_in_process_engine_fails_every_request_and_asks_to_exit_3():
    """An in-process engine that says it is dead cannot come back: 503 for all, /health 503 not busy, exit 3."""
    engine = SwitchEngine(delay=0)
    application = app(engine, api_key="", cache=False, retry_after_s=7)
    exits = []
    with TestClient(application) as client:
        application.state.reviewkit.request_exit = exits.append
        engine.failing = EngineDeadError("engine process died")
        response = client.post(ANALYZE, json=_body(1, ["zzgood"]))
        assert (response.status_code, response.headers["Retry-After"]) == (503, "7")
        assert "engine process died" in response.json()["detail"]
        health = client.get("/health")
        assert health.status_code == 503
        assert (health.json()["status"], health.json()["busy"], health.json()["engine_loaded"]) == (
            "engine_dead",
            False,
            False,
        )
        assert exits == [3]
        engine.failing = None  # too late: vLLM does not recover its engine core, nor does the server
        again = client.post(ANALYZE, json=_body(1, ["zzgood"]))
        assert again.status_code == 503 and "the server is restarting" in again.json()["detail"]


def test_concurrent_requests_share_engine_calls_and_each_gets_its_own_rows():
    engine = SwitchEngine(delay=0.2)
    with TestClient(app(engine, api_key="", cache=False, batch_wait_ms=20)) as client:
        bodies = [_body(r, ["zzgood" if (r + i) % 3 else "zzbad" for i in range(r % 4 + 1)]) for r in range(16)]
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda b: client.post(ANALYZE, json=b), bodies))
        assert all(a.status_code == 200 for a in answers)
        for body, answer in zip(bodies, answers, strict=True):
            out = answer.json()
            expected = ["positive" if "zzgood" in r["content"] else "negative" for r in body["reviews"]]
            assert out["restaurant_id"] == body["restaurant_id"]
            assert [r["id"] for r in out["reviews"]] == [r["id"] for r in body["reviews"]]
            assert [r["sentiment"] for r in out["reviews"]] == expected
            assert out["positive_count"] == expected.count("positive")
        # The first call is the content-free calibration; the 16 requests needed far fewer than 16 calls.
        assert len(engine.calls) - 1 <= 8, engine.calls
        assert client.get("/health").json()["engine_batches"] < 16


def test_batch_route_answers_each_restaurant_in_order():
    engine = SwitchEngine(delay=0)
    with TestClient(app(engine, api_key="", cache=False)) as client:
        bodies = [_body(3, ["zzgood", "zzgood"]), EMPTY_BODY, _body(3, ["zzbad"])]
        out = client.post(BATCH, json={"restaurants": bodies}).json()
        assert out["total_count"] == 3
        assert [r["restaurant_id"] for r in out["results"]] == [3, 7, 3]
        assert [r["positive_count"] for r in out["results"]] == [2, 0, 0]
        singles = [client.post(ANALYZE, json=b).json() for b in bodies]
        assert json.dumps(out["results"]) == json.dumps(singles)


def test_serve_command_binds_loopback_by_default():
    from reviewkit.cli import build_parser

    args = build_parser().parse_args(["serve"])
    assert (args.host, args.port, args.api_key, args.url) == ("127.0.0.1", 8000, None, None)
    args = build_parser().parse_args(["serve", "--host", "0.0.0.0", "--port", "9000", "--max-reviews", "5"])
    assert (args.host, args.port, args.max_reviews) == ("0.0.0.0", 9000, 5)
