"""Remote engine settings, environment and retry rules (no server, no engine)."""

from __future__ import annotations

import email.utils
import time

import pytest

from reviewkit.engines import remote
from reviewkit.engines.remote_http import parse_retry_after
from reviewkit.engines.remote_settings import RetryPolicy

KEY = "rk-unit-SECRET-4242"


def test_settings_never_show_the_key_and_compare_by_value():
    settings = remote.RemoteSettings.create("http://10.0.0.5:8000/", api_key=KEY, batch_size=8, timeout=30)
    assert settings.url == "http://10.0.0.5:8000" and settings.base_url == "http://10.0.0.5:8000/v1"
    assert KEY not in repr(settings) and KEY not in settings.describe()
    assert "api_key=set" in settings.describe() and "timeout=30" in settings.describe()
    assert settings == remote.RemoteSettings.create("http://10.0.0.5:8000", api_key=KEY, batch_size=8, timeout=30)
    assert settings != remote.RemoteSettings.create("http://10.0.0.5:8000", api_key="other", batch_size=8, timeout=30)
    native = remote.RemoteSettings.create("https://api.runpod.ai/v2/abc/runsync", api_key=KEY)
    assert native.is_runsync and native.base_url == "https://api.runpod.ai/v2/abc"
    assert remote.RemoteSettings.create("http://h/v1").base_url == "http://h/v1"


@pytest.mark.parametrize(
    "url, options, error",
    [
        ("localhost:8000", {}, ValueError),
        ("", {}, ValueError),
        ("http://h", {"batch_size": 0}, ValueError),
        ("http://h", {"max_in_flight": 1.5}, ValueError),
        ("http://h", {"timeout": -1}, ValueError),
        ("http://h", {"max_retries": -1}, ValueError),
        ("http://h", {"bogus": 1}, TypeError),
        ("http://h", {"job_resubmits": -1}, ValueError),
        ("http://h", {"job_resubmits": 1.0}, ValueError),
        ("http://h", {"job_deadline": 0}, ValueError),
    ],
)
def test_settings_refuse_bad_values_naming_them(url, options, error):
    with pytest.raises(error) as caught:
        remote.RemoteSettings.create(url, **options)
    assert (list(options)[0] if options else "url") in str(caught.value)


def test_urls_name_their_free_health_route_and_the_server_in_cache_keys():
    pod = remote.RemoteSettings.create("http://10.0.0.5:8000/v1")
    assert pod.runpod_endpoint is None and pod.health_url == "http://10.0.0.5:8000/health"
    assert pod.server_identity == "10.0.0.5"  # not the port: a restarted local server gets another
    for url in ("https://api.runpod.ai/v2/abc/openai/v1", "https://api.runpod.ai/v2/abc/runsync"):
        endpoint = remote.RemoteSettings.create(url)
        assert endpoint.runpod_endpoint == "https://api.runpod.ai/v2/abc"
        assert endpoint.health_url == "https://api.runpod.ai/v2/abc/health"  # RunPod's, free: no job
        assert endpoint.server_identity == "api.runpod.ai/abc"  # endpoints share the host
    assert remote.RemoteSettings.create("https://api.runpod.ai/v2/xyz/runsync").server_identity == "api.runpod.ai/xyz"
    assert remote.RemoteSettings.create("http://h", job_resubmits=0).retry.job_resubmits == 0


def test_environment_names_a_server_or_the_seeds_runpod_endpoint(monkeypatch):
    import runpod

    env = {"REVIEWKIT_ENGINE_URL": "http://pod:8000/v1", "REVIEWKIT_ENGINE_API_KEY": KEY, "LLM_MODEL": "m"}
    assert remote.settings_from_environment(env) == {"url": "http://pod:8000/v1", "api_key": KEY, "model": "m"}
    seed = {"USE_RUNPOD": "true", "RUNPOD_ENDPOINT_ID": "ep1", "RUNPOD_API_KEY": KEY}
    monkeypatch.setattr(runpod, "endpoint_url_base", "https://api.runpod.ai/v2")
    assert remote.settings_from_environment(seed)["url"] == "https://api.runpod.ai/v2/ep1/openai/v1"
    monkeypatch.setattr(runpod, "endpoint_url_base", "http://127.0.0.1:9/v2/")  # runpod-python's own setting
    assert remote.settings_from_environment(seed) == {
        "url": "http://127.0.0.1:9/v2/ep1/openai/v1",
        "api_key": KEY,
        "model": None,
    }
    with pytest.raises(ValueError, match="RUNPOD_ENDPOINT_ID"):
        remote.settings_from_environment({"USE_RUNPOD": "true", "RUNPOD_API_KEY": KEY})
    monkeypatch.setattr(runpod, "api_key", None)
    with pytest.raises(ValueError, match="RUNPOD_API_KEY"):
        remote.settings_from_environment({"USE_RUNPOD": "true", "RUNPOD_ENDPOINT_ID": "ep1"})
    with pytest.raises(ValueError, match="REVIEWKIT_ENGINE_URL"):
        remote.settings_from_environment({})


def test_retry_after_and_backoff():
    assert parse_retry_after("3") == 3.0 and parse_retry_after(None) is None and parse_retry_after("x") is None
    later = email.utils.formatdate(time.time() + 20, usegmt=True)
    assert 15 < parse_retry_after(later) <= 20
    policy = RetryPolicy(backoff_seconds=1.0, max_backoff_seconds=8.0)
    for retry in range(6):
        ceiling = min(8.0, 2.0**retry)
        assert all(ceiling / 2 <= policy.backoff(retry, None) <= ceiling for _ in range(20))  # jittered
    assert policy.backoff(0, 5.0) >= 5.0  # Retry-After is honoured


def test_a_closed_port_fails_fast_naming_the_fix():
    from reviewkit.vllm_server import free_port

    started = time.perf_counter()
    with pytest.raises(remote.RemoteConnectionError, match="cannot connect.*check the URL") as caught:
        remote.RemoteEngine.open(
            remote.RemoteSettings.create(f"http://127.0.0.1:{free_port()}", api_key=KEY, backoff_seconds=0.1)
        )
    assert time.perf_counter() - started < 5 and KEY not in str(caught.value)
