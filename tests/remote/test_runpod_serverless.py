"""RunPod Serverless through a loopback stand-in in front of the session's real vLLM server.

The stand-in is reached the way users reach RunPod: the seed's ``USE_RUNPOD=true`` with
``RUNPOD_ENDPOINT_ID``/``RUNPOD_API_KEY``, under runpod-python's own
``runpod.endpoint_url_base``. It checks the key, speaks both routes (OpenAI and native
``/runsync`` jobs) and injects 429s, 500s, a timeout and a cold start.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

import reviewkit
from reviewkit.engines import remote

pytestmark = pytest.mark.remote

# Short timeouts once warm so an injected timeout costs seconds; a long first wait.
FAST = {
    "timeout": 2.0,
    "cold_start_timeout": 30.0,
    "backoff_seconds": 0.2,
    "max_backoff_seconds": 2.0,
    "block_size": 32,
}  # RunPod publishes no /metrics: the block size is given


def runpod_environment(monkeypatch, standin) -> None:
    import runpod

    monkeypatch.setattr(runpod, "endpoint_url_base", standin.base_url)
    monkeypatch.delenv("REVIEWKIT_ENGINE_URL", raising=False)
    monkeypatch.setenv("USE_RUNPOD", "true")
    monkeypatch.setenv("RUNPOD_ENDPOINT_ID", standin.endpoint_id)
    monkeypatch.setenv("RUNPOD_API_KEY", standin.api_key)


def assert_same_as_reference(got, remote_setup, count: int) -> None:
    ref = remote_setup.reference.probs[:count]
    assert got.probs.shape == ref.shape
    assert np.max(np.abs(got.probs - ref)) < 1e-3


def test_openai_route_retries_429_500_and_a_timeout_losing_nothing(remote_setup, standin, monkeypatch, caplog, capsys):
    caplog.set_level(logging.DEBUG)  # httpx and httpcore included: the key must not appear anywhere
    runpod_environment(monkeypatch, standin)
    settings = remote.settings_from_environment()
    assert settings["url"] == standin.openai_url
    # A 6 s timeout: a real batch of 8 on this busy 2-core machine can take over 2 s (an extra retry).
    engine = reviewkit.connect(**settings, batch_size=8, max_in_flight=2, **{**FAST, "timeout": 6.0})
    before = len(standin.scoring_requests())  # the connect probe and the calibration batches
    standin.timeout_sleep = 7.0  # past the client's timeout
    standin.faults.extend(["429", "500", "timeout"])
    texts = remote_setup.texts[:60]
    got = reviewkit.score_texts(texts, cache=False, progress=False)
    assert_same_as_reference(got, remote_setup, 60)
    stats = reviewkit.last_run()
    assert stats.remote_retries == 3 and stats.remote_wait_seconds > 1.0  # Retry-After: 1 was honoured
    scoring = standin.scoring_requests()[before:]
    served = [e for e in scoring if e["fault"] is None]
    assert sorted(e["fault"] for e in scoring if e["fault"]) == ["429", "500", "timeout"]
    assert sum(e["prompts"] for e in served) == 60 and len(served) == 60 // 8 + 1
    assert all(e["auth_ok"] for e in standin.log) and standin.log  # the key was sent every time
    shown = [
        repr(engine),
        repr(engine.settings),
        engine.settings.describe(),
        str(stats),
        caplog.text,
        *capsys.readouterr(),
    ]
    assert not any(standin.api_key in text for text in shown)


def test_native_runsync_jobs_with_a_queued_job_and_a_cold_start(remote_setup, standin):
    standin.hold_first_seconds = 3.0  # the first request (/v1/models) meets a cold worker
    engine = reviewkit.connect(standin.runsync_url, api_key=standin.api_key, batch_size=10, **FAST)
    assert engine.settings.is_runsync and engine.figures.retries == 0  # held 3 s > timeout, < cold start
    assert engine.load_seconds >= 3.0
    standin.faults.extend(["queue", "500"])
    got = reviewkit.score_texts(remote_setup.texts[:40], cache=False, progress=False)
    assert_same_as_reference(got, remote_setup, 40)
    assert reviewkit.last_run().remote_retries == 1
    native = [e for e in standin.log if e.get("native")]
    assert native and all(e["route"] in ("/v1/models", "/v1/completions") for e in native)
    assert any(e["path"].startswith(f"/v2/{standin.endpoint_id}/status/") for e in standin.log)


def test_a_wrong_key_is_refused_in_one_line_without_showing_it(remote_setup, standin, caplog):
    caplog.set_level(logging.DEBUG)
    wrong = "rk-wrong-key-9876543210"
    with pytest.raises(remote.RemoteAuthError) as caught:
        reviewkit.connect(standin.openai_url, api_key=wrong, **FAST)
    message = str(caught.value)
    assert "HTTP 401" in message and "api_key=" in message and "RUNPOD_API_KEY" in message
    assert "\n" not in message and wrong not in message and wrong not in caplog.text
    assert standin.log and not standin.log[0]["auth_ok"]
    assert len(standin.log) == 1  # not retried


def test_a_server_that_ignores_logprob_token_ids_is_refused_naming_the_version(remote_setup, standin):
    standin.ignore_logprob_token_ids = True  # what an older vLLM does with a field it does not know
    with pytest.raises(remote.RemoteCheckError, match=r"ignores logprob_token_ids.*vLLM >= 0\.32"):
        reviewkit.connect(standin.openai_url, api_key=standin.api_key, **FAST)
    assert reviewkit.current_engine() is None


def test_check_alive_asks_health_and_never_runs_a_job(remote_setup, standin):
    direct = reviewkit.connect(remote_setup.server.url)
    for _ in range(5):
        direct.check_alive()  # vLLM's own GET /health, at the server's root
    reviewkit.unload()
    with pytest.raises(reviewkit.EngineDeadError, match="closed"):
        direct.check_alive()
    for url in (standin.openai_url, standin.runsync_url):
        engine = reviewkit.connect(url, api_key=standin.api_key, **FAST)
        jobs, scoring, health = (
            len(standin.submitted),
            len(standin.scoring_requests()),
            len(standin.requests_to("health")),
        )
        for _ in range(10):
            engine.check_alive()
        assert len(standin.submitted) == jobs and len(standin.scoring_requests()) == scoring  # nothing billed
        assert len(standin.requests_to("health")) == health + 10
        reviewkit.unload()
