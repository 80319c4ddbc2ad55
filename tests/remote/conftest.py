"""One real vLLM server for the remote tests, and the in-process scores it must match.

The in-process results come from the session's ``references`` fixture (one fresh float32
engine, loaded, used and unloaded before anything here starts: two engines never run at
once on this machine; ``tests/references.py`` says why float32). vLLM's OpenAI server is
then started from this venv with the embedded model in float32 on 127.0.0.1, and stopped
by its pid after the last test of this folder (a package fixture: ``__init__.py`` makes the
folder a package), before the Ray and browser groups start their engines.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from references import FLOAT32


@dataclass
class RemoteSetup:
    server: Any  # reviewkit.vllm_server.LocalServer
    texts: list[str]
    reference: Any  # ScoredTexts from the in-process engine
    reference_stats: Any
    long_reference: Any  # LONG_REVIEW scored alone in-process (batch composition moves its prefill chunks)
    bad_frame: Any
    bad_reference: Any  # analyze() of bad_frame in-process


@pytest.fixture(scope="package")  # the server stops before the Ray and browser groups
def remote_setup(tmp_path_factory, references):
    import reviewkit
    from reviewkit.vllm_server import start_server

    reviewkit.unload()  # before the server starts: one engine at a time
    server = start_server(
        "embedded", log_path=tmp_path_factory.mktemp("vllm") / "server.log", extra_args=("--dtype", FLOAT32["dtype"])
    )
    try:
        yield RemoteSetup(
            server,
            references.remote_texts,
            references.remote,
            references.remote_stats,
            references.remote_long,
            references.remote_bad_frame,
            references.remote_bad,
        )
    finally:
        reviewkit.unload()
        server.stop()
        assert server.process.poll() is not None


@pytest.fixture
def standin(remote_setup):
    """The RunPod Serverless stand-in in front of the session's server, with its own key."""
    from remote.runpod_standin import RunPodStandIn

    upstream = remote_setup.server.url.removesuffix("/v1")
    proxy = RunPodStandIn(upstream, api_key="rk-test-SECRET-key-0123456789").start()
    yield proxy
    proxy.stop()
