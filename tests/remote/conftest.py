"""One real vLLM server per test session, and the in-process scores it must match.

The in-process reference is computed first (load, score, unload: the two engines never
run at once on this machine), then vLLM's OpenAI server is started from this venv with
the embedded model on 127.0.0.1 and stopped by its pid when the session ends.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

DATA = Path(__file__).resolve().parent.parent / "data"
LONG_REVIEW = "맛있어요 " * 2000  # 10,000 characters: longer than the model length once tokenized


def reference_texts() -> list[str]:
    """Reviews from the bundled sample and the labelled test data, plus one over-long review."""
    import reviewkit

    texts = list(reviewkit.sample_reviews()["content"])
    for name in ("nsmc_sample_ko.csv", "sentence_polarity_sample_en.csv"):
        with open(DATA / name, encoding="utf-8", newline="") as fh:
            texts += [row["text"] for row in csv.DictReader(fh)][:120]
    return [*texts, LONG_REVIEW]


def bad_input_frame() -> Any:
    import pandas as pd

    values = [float("nan"), "", "   ", "🍜🔥👍😋", "맛있어요 but the service was slow", LONG_REVIEW, None,
              12345, "맛있어요 but the service was slow", "cold food, rude staff 😡"]
    return pd.DataFrame({"content": values}, index=[3, 1, 1, 7, 2, 2, 9, 0, 5, 3])  # duplicate index


@dataclass
class RemoteSetup:
    server: Any          # reviewkit.engines.vllm_server.LocalServer
    texts: list[str]
    reference: Any       # ScoredTexts from the in-process engine
    reference_stats: Any
    long_reference: Any  # LONG_REVIEW scored alone in-process (batch composition moves bf16 results a little)
    bad_frame: Any
    bad_reference: Any   # analyze() of bad_frame in-process


@pytest.fixture(scope="module")  # the server stops before the Ray and browser groups
def remote_setup(tmp_path_factory):
    import reviewkit
    from reviewkit.engines.vllm_server import start_server

    texts, bad = reference_texts(), bad_input_frame()
    # A fresh engine, as the server's is: one whose prefix cache is warm from earlier tests
    # computes the cached blocks' bf16 values differently (measured: up to 0.03 apart).
    reviewkit.unload()
    reviewkit.load("embedded")
    reference = reviewkit.score_texts(texts, cache=False, progress=False)
    reference_stats = reviewkit.last_run()
    long_reference = reviewkit.score_texts([LONG_REVIEW], cache=False, progress=False)
    bad_reference = reviewkit.analyze(bad, text="content", cache=False, progress=False)
    reviewkit.unload()  # before the server starts: one engine at a time
    server = start_server("embedded", log_path=tmp_path_factory.mktemp("vllm") / "server.log")
    try:
        yield RemoteSetup(server, texts, reference, reference_stats, long_reference, bad, bad_reference)
    finally:
        reviewkit.unload()
        server.stop()
        assert server.process.poll() is not None


@pytest.fixture
def standin(remote_setup):
    """The RunPod Serverless stand-in in front of the session's server, with its own key."""
    from runpod_standin import RunPodStandIn

    upstream = remote_setup.server.url.removesuffix("/v1")
    proxy = RunPodStandIn(upstream, api_key="rk-test-SECRET-key-0123456789").start()
    yield proxy
    proxy.stop()
