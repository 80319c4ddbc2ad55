"""reviewkit.connect against a real vLLM server (the embedded model, on 127.0.0.1).

The scores must be the in-process ones: same prompts as token ids, same prefix
alignment, one forward pass per review, same calibration.
"""

from __future__ import annotations

import json
import math
import shutil
import time

import numpy as np
import pandas as pd
import pytest

import reviewkit
from reviewkit.engines import remote

pytestmark = pytest.mark.remote


def away_from_boundary(probs: np.ndarray) -> np.ndarray:
    """Rows whose in-process label is not within 1e-3 of a tie."""
    top2 = np.sort(probs, axis=1)[:, -2:]
    return (top2[:, 1] - top2[:, 0]) > 2e-3


def test_scores_equal_in_process_in_input_order_across_batches(remote_setup):
    # Small batches, several in flight: about 25 requests whose answers must come back in order.
    engine = reviewkit.connect(remote_setup.server.url, batch_size=16, max_in_flight=3)
    assert engine.device == "remote" and engine.max_model_len == 2048
    assert engine.prefix_block_size == 32  # read from the server's /metrics: the prefix aligns as in-process
    got = reviewkit.score_texts(remote_setup.texts, cache=False, progress=False)
    ref = remote_setup.reference
    assert got.probs.shape == ref.probs.shape
    assert np.nanmax(np.abs(got.probs - ref.probs)) < 1e-3
    keep = away_from_boundary(ref.probs)
    assert keep.mean() > 0.95
    assert np.array(got.sentiments())[keep].tolist() == np.array(ref.sentiments())[keep].tolist()
    stats = reviewkit.last_run()
    batches = math.ceil(len(set(remote_setup.texts)) / 16)
    assert stats.remote_requests >= batches and stats.remote_retries == 0
    assert stats.prompt_tokens == remote_setup.reference_stats.prompt_tokens


def test_a_second_run_is_served_by_the_prefix_cache(remote_setup):
    reviewkit.connect(remote_setup.server.url)
    texts = remote_setup.texts[:200]
    reviewkit.score_texts(texts, cache=False, progress=False)
    reviewkit.score_texts(texts, cache=False, progress=False)
    second = reviewkit.last_run()
    # Every prompt's few-shot prefix (hundreds of tokens) comes from the server's cache.
    assert second.cached_prompt_tokens > 0.5 * second.prompt_tokens
    assert "prefix-cache hits" in str(second) and "requests" in str(second)


def test_an_over_long_review_is_truncated_as_in_process(remote_setup):
    reviewkit.connect(remote_setup.server.url)
    long_review = remote_setup.texts[-1]
    assert len(long_review) == 10_000 and remote_setup.reference_stats.truncated == 1
    with pytest.warns(UserWarning, match="truncated"):
        got = reviewkit.score_texts([long_review], cache=False, progress=False)
    assert reviewkit.last_run().truncated == 1
    assert np.allclose(got.probs[0], remote_setup.long_reference.probs[0], atol=1e-3)


def test_bad_input_gives_what_in_process_gives(remote_setup):
    reviewkit.connect(remote_setup.server.url)
    frame, ref = remote_setup.bad_frame, remote_setup.bad_reference
    out = reviewkit.analyze(frame, text="content", cache=False, progress=False)
    assert list(out.index) == list(frame.index) and list(out["content"].astype(str)) == list(
        frame["content"].astype(str)
    )
    assert (
        out["sentiment"].isna().tolist()
        == ref["sentiment"].isna().tolist()
        == [True, True, True, False, False, False, True, False, False, False]
    )
    assert np.allclose(out["sentiment_score"], ref["sentiment_score"], atol=1e-3, equal_nan=True)
    decided = (ref["sentiment_score"] - 0.5).abs() > 1e-3
    assert out["sentiment"][decided].tolist() == ref["sentiment"][decided].tolist()
    assert reviewkit.last_run().unique_texts == 5  # the duplicate text is scored once


def test_a_400_is_not_retried(remote_setup):
    engine = reviewkit.connect(remote_setup.server.url, max_retries=5)
    before = engine.figures.requests
    with pytest.raises(remote.RemoteRequestError, match="out of vocabulary") as caught:
        engine.score_labels([[2, 999_999_999]], [6077, 6444])
    assert caught.value.status == 400
    assert engine.figures.requests == before + 1 and engine.figures.retries == 0


def test_connect_refuses_a_wrong_url_quickly(remote_setup):
    from reviewkit.vllm_server import free_port

    started = time.perf_counter()
    with pytest.raises(remote.RemoteConnectionError, match="cannot connect to http://127.0.0.1.*check the URL"):
        reviewkit.connect(f"http://127.0.0.1:{free_port()}/v1")
    assert time.perf_counter() - started < 15
    assert reviewkit.current_engine() is None
    with pytest.raises(remote.RemoteCheckError, match="no vLLM OpenAI API at .*/openai/v1"):
        reviewkit.connect(remote_setup.server.url.removesuffix("/v1") + "/elsewhere/v1")


def test_connect_refuses_another_model_naming_the_served_one(remote_setup):
    with pytest.raises(remote.RemoteCheckError) as caught:
        reviewkit.connect(remote_setup.server.url, model="Qwen/Qwen2.5-7B-Instruct")
    message = str(caught.value)
    assert "not 'Qwen/Qwen2.5-7B-Instruct'" in message and "pass model=" in message
    assert "gemma-3-270m" in message and "\n" not in message


def test_connect_refuses_a_tokenizer_that_splits_differently(remote_setup, tmp_path):
    from reviewkit import embedded

    # The model's own tokenizer without its <bos> post-processor: what the raw GGUF gave.
    source = embedded.ensure_converted()
    for name in ("tokenizer.json", "tokenizer_config.json", "config.json"):
        shutil.copy(source / name, tmp_path / name)
    data = json.loads((tmp_path / "tokenizer.json").read_text())
    data["post_processor"] = None
    (tmp_path / "tokenizer.json").write_text(json.dumps(data))
    with pytest.raises(remote.RemoteCheckError, match=r"splits the prompt differently.*token 0.*tokenizer="):
        reviewkit.connect(remote_setup.server.url, tokenizer=str(tmp_path))


def test_the_registry_cli_and_environment_use_the_server(remote_setup, monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("REVIEWKIT_ENGINE_URL", remote_setup.server.url)
    engine = reviewkit.load()  # no model: the environment names the server
    assert isinstance(engine, remote.RemoteEngine) and reviewkit.load() is engine
    with pytest.raises(reviewkit.EngineSettingsMismatch, match="reviewkit.unload"):
        reviewkit.connect(remote_setup.server.url, batch_size=3)
    reviewkit.unload()
    from reviewkit import cli

    source = tmp_path / "reviews.csv"
    pd.DataFrame({"content": remote_setup.texts[:20]}).to_csv(source, index=False)
    assert cli.main(["analyze", str(source), "--url", remote_setup.server.url, "-q", "--no-cache"]) == 0
    out = pd.read_csv(tmp_path / "reviews.sentiment.csv")
    assert len(out) == 20 and out["sentiment"].notna().all()
    assert "requests" in capsys.readouterr().out
    assert reviewkit.current_engine() is None  # the command closes the engine it opened
