"""Shared by the serve tests: the bad-input cases (run against the real server and an
in-process app), a small engine whose failures the tests switch on and off, and a real
``reviewkit serve`` in a subprocess."""

from __future__ import annotations

import csv
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from reviewkit.engines.base import Engine, ScoredPrompt

ANALYZE = "/api/v1/sentiment/analyze"
BATCH = "/api/v1/sentiment/analyze/batch"
SEED_BODY = '{"restaurant_id": 1, "reviews": [{"id": 1, "restaurant_id": 1, "content": "맛있어요!"}]}'
JSON = {"Content-Type": "application/json"}

# (name, path, raw body, headers, expected status, a field the error must name or None).
# MAX_REVIEWS and MAX_BODY are what the servers under test are configured with.
MAX_REVIEWS = 50
MAX_BODY = 20_000
BAD_INPUT = [
    ("malformed json", ANALYZE, b'{"restaurant_id": 1, "reviews": [', JSON, 422, "body"),
    ("not utf-8", ANALYZE, b'{"restaurant_id": 1, "reviews": [{"content": "\xff\xfe"}]}', JSON, 422, "body"),
    ("no content type", ANALYZE, SEED_BODY.encode(), {}, 422, None),
    ("body is a list", ANALYZE, b"[1, 2]", JSON, 422, None),
    ("reviews missing", ANALYZE, b'{"restaurant_id": 1}', JSON, 422, "reviews"),
    ("reviews not a list", ANALYZE, b'{"restaurant_id": 1, "reviews": "good"}', JSON, 422, "reviews"),
    ("content missing", ANALYZE, b'{"restaurant_id": 1, "reviews": [{"id": 1}]}', JSON, 422, "reviews.0.content"),
    (
        "content a number",
        ANALYZE,
        b'{"restaurant_id": 1, "reviews": [{"id": 1, "content": 5}]}',
        JSON,
        422,
        "reviews.0.content",
    ),
    ("review not an object", ANALYZE, b'{"restaurant_id": 1, "reviews": ["good"]}', JSON, 422, "reviews.0"),
    ("restaurant_id a list", ANALYZE, b'{"restaurant_id": [1], "reviews": []}', JSON, 422, "restaurant_id"),
    (
        "id a float",
        ANALYZE,
        b'{"restaurant_id": 1, "reviews": [{"id": 1.5, "content": "x"}]}',
        JSON,
        422,
        "reviews.0.id",
    ),
    ("NaN restaurant_id", ANALYZE, b'{"restaurant_id": NaN, "reviews": []}', JSON, 422, "restaurant_id"),
    (
        "review of another restaurant",
        ANALYZE,
        b'{"restaurant_id": 1, "reviews": [{"id": 1, "restaurant_id": 2, "content": "x"}]}',
        JSON,
        422,
        "reviews.0.restaurant_id",
    ),
    (
        "several restaurants, no restaurant_id",
        ANALYZE,
        b'{"reviews": [{"restaurant_id": 1, "content": "x"}, {"restaurant_id": 2, "content": "y"}]}',
        JSON,
        422,
        "restaurant_id",
    ),
    (
        "too many reviews",
        ANALYZE,
        ('{"restaurant_id": 1, "reviews": [' + ",".join(['{"content": "x"}'] * (MAX_REVIEWS + 1)) + "]}").encode(),
        JSON,
        413,
        None,
    ),
    (
        "too many bytes",
        ANALYZE,
        ('{"restaurant_id": 1, "reviews": [{"content": "' + "x" * MAX_BODY + '"}]}').encode(),
        JSON,
        413,
        None,
    ),
    ("batch not a list", BATCH, b'{"restaurants": {"restaurant_id": 1}}', JSON, 422, "restaurants"),
    (
        "batch content a list",
        BATCH,
        b'{"restaurants": [{"restaurant_id": 1, "reviews": [{"content": ["a"]}]}]}',
        JSON,
        422,
        "restaurants.0.reviews.0.content",
    ),
    (
        "batch too many reviews",
        BATCH,
        (
            '{"restaurants": ['
            + ",".join(['{"restaurant_id": 1, "reviews": [{"content": "x"}]}'] * (MAX_REVIEWS + 1))
            + "]}"
        ).encode(),
        JSON,
        413,
        None,
    ),
]


def check_bad_input(response, status: int, field: str | None) -> None:
    """The status, a JSON error, and (for 422) the field named in ``error``."""
    assert response.status_code == status, response.text
    body = response.json()
    assert "detail" in body
    if status == 422:
        assert body["error"], body
        if field is not None:
            assert re.search(rf"(^|; ){re.escape(field)}\b", body["error"]), body["error"]


# Texts that need no model: answered without any engine.
NO_TEXT_BODY = {
    "restaurant_id": 7,
    "reviews": [{"id": 1, "content": None}, {"id": 2, "content": ""}, {"id": 3, "content": "   "}],
}
NAN_BODY = b'{"restaurant_id": 7, "reviews": [{"id": 1, "content": NaN}, {"id": 2, "content": null}]}'
EMPTY_BODY = {"restaurant_id": 7, "reviews": []}


def check_no_text(out: dict, n: int) -> None:
    assert out["restaurant_id"] == 7
    assert (out["positive_count"], out["negative_count"], out["total_count"]) == (0, 0, n)
    assert (out["positive_ratio"], out["negative_ratio"], out["unlabelled_count"]) == (0, 0, n)
    assert [r["sentiment"] for r in out["reviews"]] == [None] * n
    assert [r["sentiment_score"] for r in out["reviews"]] == [None] * n


class WordTokenizer:
    """Whitespace-word tokens with the Hugging Face call interface, enough for reviewkit's prompts."""

    bos_token_id = 1

    def __init__(self) -> None:
        self.vocab: dict[str, int] = {}

    def _ids(self, text: str, special: bool) -> list[int]:
        ids = [self.vocab.setdefault(w, len(self.vocab) + 2) for w in re.findall(r"\s*\S+|\s+", text)]
        return [self.bos_token_id, *ids] if special else ids

    def __call__(self, text, add_special_tokens: bool = True):
        if isinstance(text, str):
            return {"input_ids": self._ids(text, add_special_tokens)}
        return {"input_ids": [self._ids(t, add_special_tokens) for t in text]}

    def decode(self, ids: Sequence[int]) -> str:
        words = {i: w for w, i in self.vocab.items()}
        return "".join(words.get(i, "?") for i in ids)


class SwitchEngine(Engine):
    """Positive for reviews containing 'zzgood', negative for 'zzbad', even otherwise; raises
    while ``failing`` is set, and (ValueError) on any prompt with 'zzboom'; hangs while ``hold``
    is cleared. Records the number of prompts per call (to see batching), the threads it was
    called on, and its liveness checks."""

    settings = "switch"
    max_model_len = 512
    device = "cpu"
    load_seconds = 0.0

    def __init__(self, delay: float = 0.05, device: str = "cpu", check_delay: float = 0.0) -> None:
        super().__init__()
        self.tokenizer = WordTokenizer()
        self.failing: Exception | None = None
        self.check_failing: Exception | None = None
        self.delay = delay
        self.device = device
        self.check_delay = check_delay
        self.hold = threading.Event()
        self.hold.set()
        self.calls: list[int] = []
        self.threads: set[str] = set()
        self.checks: list[str] = []
        self._lock = threading.Lock()

    def check_alive(self) -> None:
        self.checks.append(threading.current_thread().name)
        time.sleep(self.check_delay)
        if self.check_failing is not None:
            raise self.check_failing

    @property
    def model_id(self) -> str:
        return "switch-engine"

    @property
    def prefix_block_size(self) -> int:
        return 1

    def score_labels(self, prompts, label_token_ids):
        self.threads.add(threading.current_thread().name)
        self.hold.wait()
        if self.failing is not None:
            raise self.failing
        boom = self.tokenizer.vocab.get(" zzboom")
        if boom is not None and any(boom in p for p in prompts):
            raise ValueError("this engine cannot score 'zzboom'")
        with self._lock:
            time.sleep(self.delay)
            self.calls.append(len(prompts))
        good, bad = (self.tokenizer.vocab.get(w) for w in (" zzgood", " zzbad"))
        out = []
        for p in prompts:
            logprobs = [-0.1, -2.3] if good in p else [-2.3, -0.1] if bad in p else [-0.69, -0.69]
            out.append(ScoredPrompt(logprobs, len(p), 0))
        return out

    def close(self) -> None:
        pass


# -- a real ``reviewkit serve`` in a subprocess (test_serve_server.py, test_serve_faults.py) ---------

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Server:
    url: str
    proc: subprocess.Popen
    log: Path
    key: str

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.key}"}, timeout=180, **kwargs)

    def health(self) -> dict:
        return httpx.get(self.url + "/health", timeout=10).json()

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")


def server_env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env.pop("REVIEWKIT_API_KEY", None)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(folder: Path, key: str, *flags: str) -> Server:
    """``reviewkit serve --model embedded`` on a free port of 127.0.0.1, once ``/health`` answers."""
    port = free_port()
    log = folder / "serve.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "reviewkit", "serve", "--model", "embedded", "--port", str(port), *flags],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env={**server_env(), "REVIEWKIT_API_KEY": key},
        )
    server = Server(f"http://127.0.0.1:{port}", proc, log, key)
    deadline = time.monotonic() + 300
    while True:
        if proc.poll() is not None:
            pytest.fail(f"reviewkit serve exited with {proc.returncode}:\n{server.log_text()[-3000:]}")
        try:
            if httpx.get(server.url + "/health", timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"reviewkit serve did not answer /health in 300 s:\n{server.log_text()[-3000:]}")
        time.sleep(0.5)


def stop_server(server: Server) -> None:
    """SIGTERM (SIGKILL after 60 s) if it still runs; the key never reached the log."""
    if server.proc.poll() is None:
        server.proc.terminate()
        try:
            server.proc.wait(60)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait(30)
    assert server.key not in server.log_text()


def review_texts(tag: str, n: int) -> list[str]:
    """``n`` distinct review texts (Korean and English, from tests/data), new to the result cache."""
    pool = []
    for name in ("nsmc_sample_ko.csv", "sentence_polarity_sample_en.csv"):
        with open(ROOT / "tests" / "data" / name, encoding="utf-8", newline="") as fh:
            pool.append([row["text"] for row in csv.DictReader(fh)])
    mixed = [t for pair in zip(*pool, strict=True) for t in pair]
    return [f"({tag} {k}) {mixed[k % len(mixed)]}" for k in range(n)]


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def check_aspects(out: dict, names: Sequence[str]) -> None:
    """An answer with aspects: each review has ``names`` in order, labels and scores agree (a score
    only for a mentioned aspect, above 0.5 for a positive one), and ``aspect_summary`` counts them."""
    assert list(out["aspect_summary"]) == [*names, "top_negative_aspect"]
    counts = {name: {"positive": 0, "negative": 0} for name in names}
    for review in out["reviews"]:
        assert list(review["aspects"]) == list(names)
        for name, found in review["aspects"].items():
            label, score = found["label"], found["score"]
            if review["sentiment"] is None:  # no text: nothing to say
                assert (label, score) == (None, None)
            elif label == "none":
                assert score is None
            else:
                assert label in ("positive", "negative") and 0 <= score <= 1
                assert (score > 0.5) == (label == "positive"), found
                counts[name][label] += 1
    for name in names:
        mentions = counts[name]["positive"] + counts[name]["negative"]
        share = counts[name]["positive"] / mentions if mentions else None
        assert out["aspect_summary"][name] == {"mentions": mentions, **counts[name], "positive_share": share}
    negatives = [counts[name]["negative"] for name in names]
    top = names[negatives.index(max(negatives))] if max(negatives, default=0) > 0 else None
    assert out["aspect_summary"]["top_negative_aspect"] == top
