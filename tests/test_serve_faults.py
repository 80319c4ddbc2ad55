"""``reviewkit serve`` on the real engine under real faults and hostile clients (issue 20), on 127.0.0.1:
a surrogate in each field and a stalled body amid innocent requests, a flood past the queue bound,
a forged log line, then vLLM's engine-core process stopped (SIGSTOP: a hang) and, on a second
server, killed (SIGKILL: a death).

Two engine starts: a hung or dead engine ends its server (that is the point: it exits 3 for a
supervisor to restart it), so the hang goes last on the first server and the death needs a
second one. What the real engine cannot be made to do cheaply is in test_serve_limits.py.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import re
import signal
import socket
import time

import httpx
import psutil
import pytest
from serve_support import (
    ANALYZE,
    BATCH,
    JSON,
    Server,
    review_texts,
    start_server,
    stop_server,
    wait_for,
)

from reviewkit.watchdog.signals import IDLE, HealthSignal

pytestmark = pytest.mark.serve

KEY = "fault-key-0a1b2c3d4e"
#: A short read timeout and engine-call deadline (generous still: the machine may be shared and slow).
LIMITS = {
    "--read-timeout": 2,
    "--idle-after": 1,
    "--max-queue-reviews": 60,
    "--batch-timeout": 20,
    "--batch-timeout-per-review": 0.2,
    "--liveness-interval": 0.5,
    "--graceful-timeout": 10,
    "--max-reviews": 50,
}
FLAGS = [str(x) for pair in LIMITS.items() for x in pair]
#: From the engine's death to the process's exit: a liveness interval, the 3 s linger, the drain.
EXIT_BOUND_S = 0.5 + 3 + 10 + 5


def _body(restaurant_id: int, texts: list[str]) -> dict:
    return {"restaurant_id": restaurant_id, "reviews": [{"id": i, "content": t} for i, t in enumerate(texts)]}


def _engine_processes(server: Server) -> tuple[psutil.Process, list[psutil.Process]]:
    """vLLM's engine-core process (its title is ``VLLM::EngineCore``) and its own children (the CPU worker)."""
    children = psutil.Process(server.proc.pid).children(recursive=True)
    found = [p for p in children if "EngineCore" in " ".join(p.cmdline())]
    assert len(found) == 1, [p.cmdline() for p in children]
    return found[0], found[0].children(recursive=True)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("faults")
    key_file = folder / "key"
    key_file.write_text(KEY + "\n")
    srv = start_server(folder, "not-this-one", "--api-key-file", str(key_file), *FLAGS)
    srv.key = KEY  # the file's key wins over $REVIEWKIT_API_KEY
    yield srv
    stop_server(srv)


def test_a_surrogate_in_each_field_is_a_422_naming_it_and_innocent_requests_are_answered(server):
    texts = review_texts("innocent", 24)
    innocent = [_body(500 + k, texts[3 * k : 3 * k + 3]) for k in range(8)]
    bad = [
        (ANALYZE, b'{"restaurant_id": 1, "reviews": [{"id": 1, "content": "\\ud800 bad"}]}', "reviews.0.content"),
        (ANALYZE, b'{"restaurant_id": 1, "reviews": [{"id": "\\udfff", "content": "fine"}]}', "reviews.0.id"),
        (ANALYZE, b'{"restaurant_id": "\\ud83d", "reviews": [{"content": "fine"}]}', "restaurant_id"),
        (
            BATCH,
            b'{"restaurants": [{"restaurant_id": 2, "reviews": [{"content": "\\udc00"}]}]}',
            "restaurants.0.reviews.0.content",
        ),
    ]
    with server.client() as client, concurrent.futures.ThreadPoolExecutor(12) as pool:
        good = [pool.submit(client.post, ANALYZE, json=b) for b in innocent]
        refused = [pool.submit(client.post, path, content=raw, headers=JSON) for path, raw, _ in bad]
        for future, (_, _, field) in zip(refused, bad, strict=True):
            response = future.result()
            assert response.status_code == 422, response.text
            assert response.json()["error"].startswith(f"{field}: not valid Unicode: a lone surrogate")
        answers = [f.result() for f in good]
        assert [a.status_code for a in answers] == [200] * len(innocent), [a.text for a in answers]
        for body, answer in zip(innocent, answers, strict=True):
            assert answer.json() == client.post(ANALYZE, json=body).json()  # as if alone
    assert server.health()["status"] == "ok"


def test_a_stalled_body_gets_408_and_neither_it_nor_an_idle_connection_reads_busy(server):
    host, port = server.url.removeprefix("http://").split(":")
    idle = socket.create_connection((host, int(port)), timeout=30)
    stalled = socket.create_connection((host, int(port)), timeout=30)
    stalled.sendall(
        b"POST /api/v1/sentiment/analyze HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer "
        + KEY.encode()
        + b"\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{\"restaurant_id\": 1"
    )
    wait_for(lambda: server.health()["busy"] is False, 10, "health to read idle during the stall")
    assert server.health()["requests_in_flight"] == 0
    answer = b""
    while chunk := stalled.recv(4096):  # the server closes the connection after its answer
        answer += chunk  # (headers and body may come in separate segments)
    assert answer.decode().startswith("HTTP/1.1 408 ") and "did not arrive within 2 s" in answer.decode()
    assert server.health()["busy"] is False
    idle.close()
    stalled.close()


def test_a_forged_log_line_is_escaped(server):
    with server.client() as client:
        assert client.get("/api/v1/x%0A2026-01-01 00:00:00 - INFO - POST forged").status_code == 404
    wait_for(lambda: "forged" in server.log_text(), 10, "the request's log line")
    forged = [line for line in server.log_text().splitlines() if "forged" in line]
    assert forged and all(line.startswith("20") and "GET '/api/v1/x\\n2026" in line for line in forged), forged


def test_a_flood_past_the_queue_is_refused_at_once_and_what_is_accepted_is_answered_right(server):
    """The engine is paused (SIGSTOP to its processes, well within the deadline) while 400 requests of 5
    reviews come from 100 connections: the queue (60 reviews) fills, the rest is refused at once; then
    the engine resumes (SIGCONT) and the accepted requests are answered."""
    texts = review_texts("flood", 5 * 401)
    bodies = [_body(10_000 + k, texts[5 * k : 5 * k + 5]) for k in range(401)]
    core, workers = _engine_processes(server)
    engine = [core, *workers]

    async def flood() -> list[tuple[int, float, httpx.Response]]:
        limits = httpx.Limits(max_connections=100)
        headers = {"Authorization": f"Bearer {KEY}"}
        answers: list[tuple[int, float, httpx.Response]] = []
        async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=120, limits=limits) as client:

            async def one(k: int) -> None:
                started = time.monotonic()
                response = await client.post(ANALYZE, content=json.dumps(bodies[k]), headers=JSON)
                answers.append((k, time.monotonic() - started, response))

            async def sender(next_body: list[int]) -> None:  # one per connection: no wait for a free one
                while next_body[0] < len(bodies):
                    next_body[0] += 1
                    await one(next_body[0] - 1)

            first = asyncio.ensure_future(one(0))  # in the engine when it stops
            while server.health()["requests_in_flight"] < 1:
                await asyncio.sleep(0.02)
            for process in engine:  # the worker too: vLLM's engine core and its worker pause together
                process.suspend()
            try:
                shared = [1]
                senders = [asyncio.ensure_future(sender(shared)) for _ in range(99)]
                deadline = time.monotonic() + 10
                while len(answers) < len(bodies) - 13 and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)  # all but the first and the 12 queued (60 reviews) answered
            finally:
                for process in reversed(engine):
                    process.resume()
            await asyncio.gather(first, *senders)
        return answers

    answers = asyncio.run(flood())
    refused = [(k, s, r) for k, s, r in answers if r.status_code == 503]
    served = [(k, s, r) for k, s, r in answers if r.status_code == 200]
    assert len(refused) + len(served) == len(bodies), {r.status_code for _, _, r in answers}
    assert len(served) >= 13 and len(refused) >= 300, (len(served), len(refused))
    assert all(r.headers["Retry-After"] == "5" and "the queue is full" in r.json()["detail"] for _, _, r in refused)
    # Refused at once: the server's own time for each (its log line) and the client's typical wait (the
    # client shares two busy cores with the engine, so its worst case says little).
    logged = [float(t) for t in re.findall(r" 503 the queue is full \(.*\) \((\d+\.\d+) s\)", server.log_text())]
    assert len(logged) >= len(refused) and max(logged) < 1, sorted(logged)[-5:]
    assert sorted(s for _, s, _ in refused)[len(refused) // 2] < 1
    for k, _, response in served:
        out = response.json()
        assert out["restaurant_id"] == 10_000 + k and out["total_count"] == 5
        assert all(r["sentiment"] in ("positive", "negative") for r in out["reviews"])
    health = server.health()
    assert health["status"] == "ok" and health["queue_limit"] == 60
    with server.client() as client:  # and the next request is served as usual
        assert client.post(ANALYZE, json=_body(1, review_texts("after the flood", 3))).status_code == 200


def _in_flight_then(server: Server, fault: signal.Signals, tag: str) -> tuple[list[httpx.Response], float, dict]:
    """Requests in the engine and in the queue, then ``fault`` sent to vLLM's engine core; their answers,
    the seconds from the fault to the last answer, and /health's answer after it."""
    core, _ = _engine_processes(server)
    texts = review_texts(tag, 6 * 10)
    with server.client() as client, concurrent.futures.ThreadPoolExecutor(6) as pool:
        waiting = [pool.submit(client.post, ANALYZE, json=_body(k, texts[10 * k : 10 * k + 10])) for k in range(6)]
        wait_for(lambda: server.health()["requests_in_flight"] >= 3, 60, "requests in flight")
        sent = time.monotonic()
        os.kill(core.pid, fault)
        answers = [w.result(timeout=120) for w in waiting]
    took = time.monotonic() - sent
    health = httpx.get(server.url + "/health", timeout=10)
    assert health.status_code == 503, (health.status_code, health.text, server.log_text()[-2000:])
    return answers, took, health.json()


def _check_dead_and_gone(server: Server, answers: list[httpx.Response], health: dict, why: str) -> None:
    failed = [a for a in answers if a.status_code != 200]
    assert failed, "every request was answered before the fault took effect"
    assert all(a.status_code == 503 and a.headers["Retry-After"] == "5" for a in failed), [a.text for a in failed]
    assert all(re.search(why, a.json()["detail"]) for a in failed), failed[0].text
    assert (health["status"], health["busy"], health["engine_loaded"]) == ("engine_dead", False, False)
    assert re.search(why, health["detail"]), health
    # The idle watchdog's --health-url reads the 503's body: not busy, so the pod is not billed forever.
    assert HealthSignal(server.url + "/health", timeout=5).read(since=time.time()).status == IDLE
    started = time.monotonic()
    assert server.proc.wait(timeout=EXIT_BOUND_S) == 3, server.log_text()[-3000:]
    print(f"\nexited 3 after {time.monotonic() - started:.1f} s more")


def _gone(processes: list[psutil.Process]) -> bool:
    """Nothing of the engine is left running (a stopped engine core would hold its memory forever)."""

    def running(p: psutil.Process) -> bool:
        try:
            return p.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    return not any(running(p) for p in processes)


def test_a_hung_engine_core_fails_the_waiting_requests_reads_dead_not_busy_and_exits_3(server):
    """SIGSTOP vLLM's engine core: today every request and SIGTERM then wait forever and /health reads busy."""
    core, workers = _engine_processes(server)
    answers, took, health = _in_flight_then(server, signal.SIGSTOP, "hang")
    assert took < 20 + 0.2 * 60 + 0.5 + 10  # the deadline of the largest possible call, and some slack
    _check_dead_and_gone(server, answers, health, "the engine is stuck")
    wait_for(lambda: _gone([core, *workers]), 10, "the engine's processes to be gone")


@pytest.fixture(scope="module")
def second_server(tmp_path_factory):
    """The death needs an engine of its own: the hang above ended the first server."""
    srv = start_server(tmp_path_factory.mktemp("death"), KEY, *FLAGS)
    yield srv
    stop_server(srv)


def test_a_killed_engine_core_fails_the_waiting_requests_at_once_and_exits_3(second_server):
    core, workers = _engine_processes(second_server)
    answers, took, health = _in_flight_then(second_server, signal.SIGKILL, "death")
    assert took < 10  # the liveness watch, not the batch deadline (20 s at least)
    _check_dead_and_gone(second_server, answers, health, "process .*has (exited|died)")
    wait_for(lambda: _gone([core, *workers]), 10, "the engine's processes to be gone")
