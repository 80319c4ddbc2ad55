"""The server under hostile clients and faults, in this process with the small stand-in engine (issue 20):
what a real engine cannot be made to do cheaply (a batch that raises on one review, a liveness check
that is slow, a clock past a deadline, a remote engine) and the socket-level limits, on uvicorn in a
thread on 127.0.0.1. The real engine's hang and death are in test_serve_faults.py.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import socket
import threading
import time

import httpx
import pytest
from fastapi.testclient import TestClient
from serve_support import ANALYZE, BATCH, JSON, SwitchEngine

from reviewkit.serve import ThreadServer, app
from reviewkit.serve.limits import Limits
from reviewkit.serve.liveness import EngineWatch


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _body(restaurant: int, words: list[str], rid: object = None) -> dict:
    rid = restaurant if rid is None else rid
    return {
        "restaurant_id": restaurant,
        "reviews": [
            {"id": i, "restaurant_id": rid, "content": f"{w} review {restaurant}-{i}"} for i, w in enumerate(words)
        ],
    }


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


# -- item 1: one client's bad text never fails another's request ----------------------------

SURROGATES = [  # (raw body, route, the field the 422 names)
    (b'{"restaurant_id": 1, "reviews": [{"id": 1, "content": "bad \\ud800 text"}]}', ANALYZE, "reviews.0.content"),
    (b'{"restaurant_id": 1, "reviews": [{"id": "\\udfff", "content": "zzgood"}]}', ANALYZE, "reviews.0.id"),
    (b'{"restaurant_id": "r\\ud83d", "reviews": [{"content": "zzgood"}]}', ANALYZE, "restaurant_id"),
    (b'{"reviews": [{"restaurant_id": "\\ud800", "content": "zzgood"}]}', ANALYZE, "reviews.0.restaurant_id"),
    (
        b'{"restaurants": [{"restaurant_id": 2, "reviews": [{"content": "zzgood"}]}, '
        b'{"restaurant_id": 3, "reviews": [{"content": "\\udc00"}]}]}',
        BATCH,
        "restaurants.1.reviews.0.content",
    ),
]


def test_a_lone_surrogate_is_a_422_naming_its_field_and_innocent_requests_are_answered(fresh_cache):
    """Today: the surrogate in content fails the whole micro-batch (503 for everyone: the result cache's
    key cannot encode it), in an id a 500."""
    engine = SwitchEngine(delay=0.05)
    with TestClient(app(engine, api_key="", cache=fresh_cache, batch_wait_ms=50)) as client:
        innocent = [_body(10 + k, ["zzgood", "zzbad"]) for k in range(8)]
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            bad = [pool.submit(client.post, path, content=raw, headers=JSON) for raw, path, _ in SURROGATES]
            good = [pool.submit(client.post, ANALYZE, json=b) for b in innocent]
            for future, (_, _, field) in zip(bad, SURROGATES, strict=True):
                response = future.result()
                assert response.status_code == 422, response.text
                assert response.json()["error"].startswith(f"{field}: not valid Unicode: a lone surrogate")
            for future, body in zip(good, innocent, strict=True):
                response = future.result()
                assert response.status_code == 200, response.text
                assert [r["sentiment"] for r in response.json()["reviews"]] == ["positive", "negative"]
                assert response.json()["restaurant_id"] == body["restaurant_id"]
        assert client.get("/health").json()["status"] == "ok"


def test_a_batch_that_fails_is_scored_apart_and_only_the_culprit_gets_its_error():
    engine = SwitchEngine(delay=0.2)
    with TestClient(app(engine, api_key="", cache=False, batch_wait_ms=100)) as client:
        client.post(ANALYZE, json=_body(1, ["zzgood"]))  # calibration done: the next calls gather into one
        bodies = [_body(20 + k, ["zzgood", "zzboom" if k == 3 else "zzbad", "zzgood"]) for k in range(6)]
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(lambda b: client.post(ANALYZE, json=b), bodies))
        for k, response in enumerate(answers):
            if k == 3:
                assert response.status_code == 422
                assert response.json()["error"] == (
                    "reviews.1.content: could not be scored (ValueError: this engine cannot score 'zzboom')"
                )
            else:
                assert response.status_code == 200, response.text
                assert [r["sentiment"] for r in response.json()["reviews"]] == ["positive", "negative", "positive"]
        batch = client.post(BATCH, json={"restaurants": [_body(30, ["zzgood"]), _body(31, ["zzbad", "zzboom"])]})
        assert batch.status_code == 422 and batch.json()["error"].startswith("restaurants.1.reviews.1.content: ")
        assert client.get("/health").json()["status"] == "ok"  # a bad review is not an engine error


# -- item 2 with the stand-in: the deadline, and what is fatal ------------------------------


def test_the_engine_call_deadline_grows_with_the_batch_and_only_a_call_past_it_is_stuck(monkeypatch):
    limits = Limits(batch_timeout_s=20, batch_timeout_per_review_s=0.5)
    assert limits.engine_call_deadline_s(0) == 20 and limits.engine_call_deadline_s(100) == 70
    dead, stuck = [], []
    watch = EngineWatch(SwitchEngine(), limits, on_dead=dead.append, on_stuck=stuck.append)
    clock = [1000.0]
    monkeypatch.setattr("reviewkit.serve.liveness.time.monotonic", lambda: clock[0])
    with watch.engine_call(100):
        clock[0] += 69.9
        watch.tick()
        assert not dead and watch.dead is None
        clock[0] += 0.2
        watch.tick()
        assert len(dead) == 1 and "100 review(s)" in dead[0] and "deadline of 70 s" in dead[0]
        watch.tick()
        assert len(dead) == 1  # declared once
    remote = EngineWatch(SwitchEngine(device="remote"), limits, on_dead=dead.append, on_stuck=stuck.append)
    with remote.engine_call(10):
        clock[0] += 26
        remote.tick()
    assert len(stuck) == 1 and remote.dead is None and len(dead) == 1  # a remote engine is not the server's


def test_a_stuck_in_process_engine_fails_in_flight_and_queued_requests_and_health_reads_dead_not_busy():
    engine = SwitchEngine(delay=0)
    application = app(
        engine,
        api_key="",
        cache=False,
        batch_timeout_s=0.5,
        batch_timeout_per_review_s=0.01,
        liveness_interval_s=0.05,
        retry_after_s=9,
    )
    exits = []
    with TestClient(application) as client:
        application.state.reviewkit.request_exit = exits.append
        client.post(ANALYZE, json=_body(1, ["zzgood"]))
        engine.hold.clear()  # the engine hangs, as vLLM does once its engine core stops
        try:
            with concurrent.futures.ThreadPoolExecutor(4) as pool:
                waiting = [pool.submit(client.post, ANALYZE, json=_body(2 + k, ["zzgood", "zzbad"])) for k in range(4)]
                answers = [w.result(timeout=30) for w in waiting]
            assert [(a.status_code, a.headers["Retry-After"]) for a in answers] == [(503, "9")] * 4
            assert all("the engine is stuck" in a.json()["detail"] for a in answers)
            health = client.get("/health")
            assert health.status_code == 503
            assert (health.json()["status"], health.json()["busy"]) == ("engine_dead", False)
            assert exits == [3]
        finally:
            engine.hold.set()


def test_a_remote_engine_failing_its_check_is_an_engine_error_not_a_death(monkeypatch):
    engine = SwitchEngine(delay=0, device="remote")
    with TestClient(app(engine, api_key="", cache=False, liveness_interval_s=0.05)) as client:
        time.sleep(0.5)
        assert len(engine.checks) == 1  # a remote engine's check: at most every 30 s, whatever the interval
        monkeypatch.setattr("reviewkit.serve.liveness.REMOTE_CHECK_S", 0.05)
        engine.check_failing = RuntimeError("server unreachable")
        _wait_for(lambda: client.get("/health").json()["status"] == "engine_error", 10, "engine_error")
        health = client.get("/health")
        assert health.status_code == 200 and health.json()["engine_loaded"] is False
        assert "server unreachable" in health.json()["detail"]
        engine.check_failing = None
        _wait_for(lambda: client.get("/health").json()["status"] == "ok", 10, "ok again")
        assert client.post(ANALYZE, json=_body(1, ["zzgood"])).status_code == 200


# -- item 4: /health reads what a background task measured ----------------------------------


def test_health_never_runs_the_engine_check_and_scoring_has_its_own_thread():
    """Today each /health runs check_alive on the thread pool that scoring uses (a billed GET for RunPod)."""
    engine = SwitchEngine(delay=0, check_delay=0.5)
    with TestClient(app(engine, api_key="", cache=False)) as client:  # a check every 2 s
        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(40) as pool:
            probes = list(pool.map(lambda _: client.get("/health"), range(40)))
        assert all(p.status_code == 200 for p in probes)
        assert client.post(ANALYZE, json=_body(1, ["zzgood"])).status_code == 200
        elapsed = time.monotonic() - started
        assert len(engine.checks) <= elapsed / 2 + 2, engine.checks  # one per interval, not one per probe
        assert set(engine.checks) == {"reviewkit-liveness"}
        assert engine.threads == {"reviewkit-score"}


# -- items 3, 5, 8, 9: sockets, queue, deadline and logs, on uvicorn ------------------------


@pytest.fixture
def served():
    """A function that serves an app with the stand-in engine on uvicorn, stopped at the test's end."""
    servers = []

    def serve(engine: SwitchEngine, **limits) -> ThreadServer:
        server = ThreadServer(app(engine, api_key="", cache=False, **limits), _free_port())
        servers.append(server.__enter__())
        return server

    yield serve
    for server in servers:
        server.__exit__(None, None, None)


def _raw(url: str, head: bytes) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    sock.sendall(head)
    return sock


PARTIAL = (
    b"POST /api/v1/sentiment/analyze HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
    b"Content-Length: 200\r\n\r\n{\"restaurant_id\": 1, "
)


def test_a_stalled_body_is_not_work_and_gets_408_and_an_idle_connection_is_not_work(served):
    """Today a request counts as in flight before its body is read, with no read timeout: /health busy forever."""
    server = served(SwitchEngine(delay=0), read_timeout_s=1.0, idle_after_s=0.2)
    idle = _raw(server.url, b"")  # a keep-alive connection that never sends anything
    stalled = _raw(server.url, PARTIAL)
    time.sleep(0.5)
    health = httpx.get(server.url + "/health").json()
    assert (health["busy"], health["requests_in_flight"]) == (False, 0)
    answer = stalled.recv(4096).decode()
    assert answer.startswith("HTTP/1.1 408 ") and "connection: close" in answer.lower()
    assert "did not arrive within 1 s" in answer
    assert stalled.recv(4096) == b""  # closed
    assert httpx.get(server.url + "/health").json()["busy"] is False
    idle.close()


def test_a_full_queue_refuses_at_once_with_retry_after_and_a_late_answer_is_504(served):
    """Today the queue is unbounded and requests wait forever."""
    engine = SwitchEngine(delay=0)
    server = served(engine, max_queue_reviews=6, request_timeout_s=1.5, retry_after_s=4, batch_wait_ms=0)
    assert httpx.post(server.url + ANALYZE, json=_body(1, ["zzgood"])).status_code == 200
    engine.hold.clear()
    try:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            first = pool.submit(httpx.post, server.url + ANALYZE, json=_body(2, ["zzgood"] * 2), timeout=30)
            _wait_for(
                lambda: (
                    len(engine.threads)
                    and engine.hold.is_set() is False
                    and httpx.get(server.url + "/health").json()["requests_in_flight"] == 1
                ),
                10,
                "one in the engine",
            )
            queued = [
                pool.submit(httpx.post, server.url + ANALYZE, json=_body(3 + k, ["zzgood"] * 3), timeout=30)
                for k in range(2)
            ]
            _wait_for(lambda: httpx.get(server.url + "/health").json()["queued_reviews"] == 6, 10, "a full queue")
            started = time.monotonic()
            over = httpx.post(server.url + ANALYZE, json=_body(9, ["zzgood"]), timeout=30)
            assert time.monotonic() - started < 1.0  # at once, not after the wait
            assert (over.status_code, over.headers["Retry-After"]) == (503, "4")
            assert "the queue is full (6 reviews waiting, limit 6)" in over.json()["detail"]
            late = [f.result() for f in [first, *queued]]
        assert [(r.status_code, r.headers["Retry-After"]) for r in late] == [(504, "4")] * 3
        assert "request timeout of 1.5 s" in late[0].json()["detail"]
    finally:
        engine.hold.set()
    _wait_for(lambda: httpx.get(server.url + "/health").json()["queued_reviews"] == 0, 10, "the queue to empty")
    assert httpx.post(server.url + ANALYZE, json=_body(10, ["zzbad"])).status_code == 200


def test_connections_past_the_limit_are_refused(served):
    server = served(SwitchEngine(delay=0), max_connections=4)
    held = [_raw(server.url, b"") for _ in range(4)]
    time.sleep(0.2)
    assert httpx.post(server.url + ANALYZE, json=_body(1, ["zzgood"])).status_code == 503
    for sock in held:
        sock.close()
    _wait_for(
        lambda: httpx.post(server.url + ANALYZE, json=_body(1, ["zzgood"])).status_code == 200,
        10,
        "the connections to close",
    )


def test_untrusted_strings_are_logged_escaped_and_a_hang_up_is_not_a_500(served, caplog):
    server = served(SwitchEngine(delay=0))
    with caplog.at_level(logging.INFO, logger="reviewkit.serve"):
        assert httpx.get(server.url + "/api/v1/x%0AINFO%20forged%0D").status_code == 404
        ok = httpx.post(
            server.url + ANALYZE,
            json={"restaurant_id": "r\n2026-01-01 - INFO - forged", "reviews": [{"content": "zzgood"}]},
        )
        assert ok.status_code == 200
        _raw(server.url, PARTIAL).close()
        _wait_for(lambda: any(" 499 " in r.getMessage() for r in caplog.records), 10, "the hang-up's log line")
    lines = [r.getMessage() for r in caplog.records if r.name == "reviewkit.serve"]
    assert not [line for line in lines if "\n" in line or "\r" in line], lines
    assert any("GET '/api/v1/x\\nINFO forged\\r' 404" in line for line in lines), lines
    assert any("restaurant_id=r\\n2026-01-01 - INFO - forged" in line for line in lines), lines
    assert any("499 the client hung up before sending its whole body" in line for line in lines), lines
    assert not any(" 500 " in line for line in lines)


# -- items 6 and 9: what a request may hold, and the messages --------------------------------


def test_restaurants_per_request_are_capped_and_big_bodies_are_parsed_off_the_event_loop(monkeypatch):
    """Today 66,665 empty restaurants in 1 MB are accepted and answered on the event loop."""
    import reviewkit.serve.application as application

    threads = []
    real_parse = application.parse

    def parse(*args):
        threads.append(threading.current_thread().name)
        return real_parse(*args)

    monkeypatch.setattr(application, "parse", parse)
    with TestClient(app(SwitchEngine(delay=0), api_key="", cache=False, max_restaurants=100)) as client:
        over = client.post(BATCH, json={"restaurants": [{"restaurant_id": i, "reviews": []} for i in range(101)]})
        assert over.status_code == 413 and "101 restaurants is over the limit of 100" in over.json()["detail"]
        big = client.post(ANALYZE, json={"restaurant_id": 1, "reviews": [{"content": "zzgood " + "x" * 200}] * 300})
        assert big.status_code == 200 and big.json()["positive_count"] == 300
        loop_thread = threads[0]
        assert threads[1] != loop_thread  # the 60 kB body was parsed on a worker thread


@pytest.mark.parametrize(
    "raw,message",
    [
        (
            b'{"restaurant_id": ' + b"7" * 5000 + b', "reviews": []}',
            "body: cannot be read: Exceeds the limit (4300 digits)",
        ),
        (b"[" * 50_000 + b"]" * 50_000, "body: cannot be read: nested too deeply"),
        (b'{"restaurant_id": 1, "reviews": [{"content": "\xff"}]}', "body: not UTF-8: byte 0xff at position 46"),
        (
            b'{"restaurant_id": 1, "reviews": [{"id": true, "content": "x"}]}',
            "reviews.0.id: an id is an integer or a string, not true",
        ),
        (
            b'{"restaurant_id": 1, "reviews": [{"id": 1.5, "content": "x"}]}',
            "reviews.0.id: an id is an integer or a string, not 1.5",
        ),
    ],
)
def test_each_unreadable_body_gets_its_own_message(raw, message):
    with TestClient(app(load_engine=False, api_key="")) as client:
        response = client.post(ANALYZE, content=raw, headers=JSON)
        assert response.status_code == 422 and response.json()["error"].startswith(message), response.text


def test_restaurant_ids_1_and_quoted_1_are_the_same_restaurant():
    with TestClient(app(SwitchEngine(delay=0), api_key="", cache=False)) as client:
        body = {"reviews": [{"restaurant_id": 1, "content": "zzgood"}, {"restaurant_id": "1", "content": "zzbad"}]}
        out = client.post(ANALYZE, json=body)
        assert out.status_code == 200 and out.json()["restaurant_id"] == 1 and out.json()["total_count"] == 2


def test_the_api_key_comes_from_a_file_and_the_flag_warns(tmp_path, caplog, monkeypatch):
    from reviewkit.cli import build_parser
    from reviewkit.cli.serve import read_api_key

    monkeypatch.setenv("REVIEWKIT_API_KEY", "from-env")
    key_file = tmp_path / "key"
    key_file.write_text("from-file-123\n")
    assert read_api_key(build_parser().parse_args(["serve", "--api-key-file", str(key_file)])) == "from-file-123"
    assert read_api_key(build_parser().parse_args(["serve"])) == "from-env"
    with caplog.at_level(logging.WARNING):
        assert read_api_key(build_parser().parse_args(["serve", "--api-key", "in-ps"])) == "in-ps"
    assert "shows the key in `ps`" in caplog.text and "in-ps" not in caplog.text
    key_file.write_text("")
    with pytest.raises(SystemExit, match="is empty"):
        read_api_key(build_parser().parse_args(["serve", "--api-key-file", str(key_file)]))


def test_every_limit_is_a_flag_with_its_default_and_is_checked():
    from reviewkit.cli import build_parser

    args = build_parser().parse_args(
        ["serve", "--read-timeout", "5", "--max-queue-reviews", "300", "--graceful-timeout", "12"]
    )
    from reviewkit.serve.limits import from_args

    limits = from_args(args)
    assert (limits.read_timeout_s, limits.max_queue_reviews, limits.graceful_timeout_s) == (5, 300, 12)
    assert limits.max_reviews == 1000 and limits.request_timeout_s == 90 and limits.drain_s == 8
    for bad in (
        {"max_connections": 0},
        {"read_timeout_s": -1},
        {"max_queue_reviews": True},
        {"retry_after_s": 1.5},
        {"request_timeout_s": float("nan")},
    ):
        with pytest.raises(ValueError, match=next(iter(bad))):
            Limits(**bad)


def test_a_flood_past_the_queue_gets_answers_or_503_never_a_500_nor_a_wait():
    """The queue refuses before reading a body, so a flood's bodies are never all held at once."""
    engine = SwitchEngine(delay=0.1)

    async def flood(url: str) -> list[int]:
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
            bodies = [json.dumps(_body(k, ["zzgood"] * 10)) for k in range(200)]
            answers = await asyncio.gather(*(client.post(ANALYZE, content=b, headers=JSON) for b in bodies))
            return [a.status_code for a in answers]

    port = _free_port()
    with ThreadServer(app(engine, api_key="", cache=False, max_queue_reviews=50, max_connections=200), port) as srv:
        statuses = asyncio.run(flood(srv.url))
    assert set(statuses) <= {200, 503} and statuses.count(200) >= 5 and statuses.count(503) >= 50, statuses
