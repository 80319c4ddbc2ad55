"""RunPod's native jobs, health and cache keys against the stand-in answering by itself (no engine).

Each RunPod job is billed, so these tests count jobs: a batch is submitted once, a job that
has an id is never submitted again (it is polled, and cancelled when the call gives up), a
FAILED job is submitted again at most ``job_resubmits`` times, one deadline bounds a call,
and ``check_alive`` asks the endpoint's free ``/health``, never a job.
"""

from __future__ import annotations

import time

import pytest

from reviewkit.engines import remote
from reviewkit.engines.base import EngineDeadError

KEY = "rk-jobs-SECRET-key-5555"
LABELS = [6077, 6444]
#: Short waits so a held job costs seconds.
FAST = {
    "timeout": 2.0,
    "cold_start_timeout": 5.0,
    "backoff_seconds": 0.05,
    "max_backoff_seconds": 0.2,
    "poll_interval": 0.05,
    "block_size": 32,
}


@pytest.fixture
def standin():
    from remote.runpod_standin import RunPodStandIn
    from reviewkit import embedded

    proxy = RunPodStandIn(None, api_key=KEY, served_model=str(embedded.ensure_converted())).start()
    yield proxy
    proxy.stop()


def job_engine(standin, **options) -> remote.RemoteEngine:
    """A /runsync engine used as is (no connect checks): its batches are RunPod jobs."""
    settings = remote.RemoteSettings.create(standin.runsync_url, api_key=KEY, **{**FAST, **options})
    return remote.RemoteEngine(settings)


def score_one(engine: remote.RemoteEngine) -> list[float]:
    return engine.score_labels([[2, 100, 200, 300]], LABELS)[0].label_logprobs


def test_a_job_queued_past_the_deadline_is_cancelled_once_and_never_submitted_again(standin):
    engine = job_engine(standin, job_deadline=1.5)
    standin.faults.append("hold")  # no worker picks it up
    started = time.perf_counter()
    with pytest.raises(remote.RemoteJobError, match=r"still IN_QUEUE after 1\.5 s.*cancelled") as caught:
        score_one(engine)
    assert time.perf_counter() - started < 1.5 + 3
    [job_id] = standin.submitted
    assert job_id in str(caught.value) and caught.value.job_id == job_id
    assert standin.cancelled == [job_id] and len(standin.requests_to("cancel")) == 1
    polls = standin.requests_to("status")
    assert len(polls) > 3 and all(e["path"].endswith("/" + job_id) for e in polls)  # the same job, polled
    assert standin.jobs[job_id]["status"] == "CANCELLED"
    engine.close()


def test_submit_errors_before_a_job_exists_are_retried_but_a_job_with_an_id_is_never_sent_again(standin):
    engine = job_engine(standin)
    standin.faults.extend(["500", "429", "queue"])  # refused twice (no job made), then queued and polled
    assert score_one(engine) == [-0.5, -1.5]
    assert len(standin.submitted) == 1 and engine.figures.retries == 2
    assert len(standin.requests_to("runsync")) == 3
    standin.faults.append("drop")  # the job is made, but the answer with its id is lost
    with pytest.raises(remote.RemoteConnectionError, match="not sent again"):
        score_one(engine)
    assert len(standin.submitted) == 2  # one more job, not one per retry
    engine.close()


def test_a_job_longer_than_the_request_timeout_is_polled_not_submitted_again(standin):
    engine = job_engine(standin)  # timeout=2 s once the endpoint has answered
    assert score_one(engine) == [-0.5, -1.5]
    standin.hold_first_seconds = 3.0  # the next job waits 3 s for a worker
    assert score_one(engine) == [-0.5, -1.5]
    assert len(standin.submitted) == 2 and len(standin.requests_to("status")) >= 1
    assert all(e["wait"] <= 1.0 for e in standin.requests_to("runsync"))  # RunPod answers before the client gives up
    engine.close()


def test_a_failed_job_names_the_job_and_its_error_and_is_resubmitted_at_most_job_resubmits_times(standin):
    engine = job_engine(standin)
    assert engine.settings.retry.job_resubmits == 1  # the documented default
    standin.faults.extend(["fail", "fail", "fail"])
    with pytest.raises(remote.RemoteJobError, match=r"FAILED: CUDA error: out of memory") as caught:
        score_one(engine)
    assert len(standin.submitted) == 2  # the first run and one resubmission, both billed
    assert caught.value.job_id == standin.submitted[-1] and standin.submitted[-1] in str(caught.value)
    standin.faults.clear()
    standin.faults.append("fail")  # a worker lost once: the resubmission answers
    assert score_one(engine) == [-0.5, -1.5]
    assert len(standin.submitted) == 4
    engine.close()

    never = job_engine(standin, job_resubmits=0)
    standin.faults.append("fail")
    with pytest.raises(remote.RemoteJobError, match="FAILED"):
        score_one(never)
    assert len(standin.submitted) == 5
    never.close()


def test_one_deadline_bounds_a_whole_call(standin):
    # Submit errors that would be retried for half a minute, and a failed job then a held one.
    engine = job_engine(standin, job_deadline=2.0, max_retries=60, backoff_seconds=0.5, max_backoff_seconds=0.5)
    standin.faults.extend(["500"] * 60)
    started = time.perf_counter()
    with pytest.raises(remote.RemoteError, match="job_deadline"):
        score_one(engine)
    assert time.perf_counter() - started < 2.0 + 3 and standin.submitted == []
    standin.faults.clear()
    standin.faults.extend(["fail", "hold"])
    started = time.perf_counter()
    with pytest.raises(remote.RemoteJobError, match="still IN_QUEUE"):
        score_one(engine)
    assert time.perf_counter() - started < 2.0 + 3
    assert len(standin.submitted) == 2 and standin.cancelled == standin.submitted[1:]
    engine.close()


def test_a_failed_batch_ends_the_call_and_cancels_the_other_batches_jobs(standin):
    engine = job_engine(standin, batch_size=1, max_in_flight=2, job_resubmits=0, job_deadline=60.0)
    standin.faults.extend(["fail", "hold"])  # one batch's job fails, the other's waits for a worker
    started = time.perf_counter()
    with pytest.raises(remote.RemoteJobError, match="FAILED"):
        engine.score_labels([[2, 100], [2, 200]], LABELS)
    assert time.perf_counter() - started < 10  # not the 60 s deadline of the held job
    wait_for(lambda: len(standin.cancelled) == 1)
    held = next(i for i in standin.submitted if standin.jobs[i]["hold"])
    assert standin.cancelled == [held] and len(standin.submitted) == 2
    engine.close()


def test_closing_the_engine_cancels_its_queued_jobs(standin):
    import threading

    engine = job_engine(standin, job_deadline=60.0)
    standin.faults.append("hold")
    errors = []
    caller = threading.Thread(target=lambda: errors.append(pytest.raises(remote.RemoteJobError, score_one, engine)))
    caller.start()
    wait_for(lambda: len(standin.requests_to("status")) > 0)  # the job is being polled
    engine.close()
    caller.join(10)
    assert not caller.is_alive() and "abandoned" in str(errors[0].value)
    assert standin.cancelled == standin.submitted and len(standin.submitted) == 1


def wait_for(condition, seconds: float = 10.0) -> None:
    ends = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < ends, "timed out"
        time.sleep(0.02)


@pytest.mark.parametrize("route", ["openai_url", "runsync_url"])
def test_check_alive_asks_the_free_health_route_and_submits_no_job(standin, route):
    # Connected as is: liveness needs none of the connect checks (which tests/remote/test_runpod_serverless.py
    # runs against the real server, with this same count).
    engine = remote.RemoteEngine(remote.RemoteSettings.create(getattr(standin, route), api_key=KEY, **FAST))
    jobs, requests = len(standin.submitted), len(standin.log)
    for _ in range(20):
        engine.check_alive()
    assert len(standin.submitted) == jobs  # not one billed job
    assert len(standin.log) == requests + 20 and len(standin.requests_to("health")) == 20
    engine.close()


def test_check_alive_is_one_short_request(standin):
    engine = job_engine(standin)
    standin.health_hold_seconds = 20.0  # RunPod's API stalls
    started = time.perf_counter()
    with pytest.raises(EngineDeadError, match="does not answer"):
        engine.check_alive()
    assert time.perf_counter() - started < remote.HEALTH_TIMEOUT + 2
    assert len(standin.requests_to("health")) == 1 and standin.submitted == []  # no retry, no job
    standin.health_hold_seconds = 0.0
    standin.stop()  # gone altogether: refused at once
    started = time.perf_counter()
    with pytest.raises(EngineDeadError):
        engine.check_alive()
    assert time.perf_counter() - started < 2
    engine.close()


def test_the_result_cache_keeps_engines_of_another_model_length_apart(fresh_cache):
    import reviewkit
    from remote.runpod_standin import RunPodStandIn
    from reviewkit import embedded

    served = str(embedded.ensure_converted())
    proxies = [
        RunPodStandIn(None, api_key=KEY, served_model=served, max_model_len=n).start() for n in (2048, 1024, 2048)
    ]
    engines = [
        remote.RemoteEngine.open(remote.RemoteSettings.create(p.openai_url, api_key=KEY, **FAST)) for p in proxies
    ]
    try:
        long_a, short, long_b = engines
        assert {e.model_id for e in engines} == {served} and short.max_model_len == 1024
        assert long_a.cache_identity == long_b.cache_identity != short.cache_identity
        texts = ["great food", "cold soup, rude staff", "fine"]
        computed = []
        for engine in engines:
            reviewkit.score_texts(texts, engine=engine, cache=fresh_cache, progress=False)
            computed.append(reviewkit.last_run().cached)
        # The first engine fills the cache; another model length misses it; the same length hits it.
        assert computed == [0, 0, 3]
    finally:
        for engine in engines:
            engine.close()
        for proxy in proxies:
            proxy.stop()
