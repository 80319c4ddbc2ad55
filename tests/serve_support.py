"""Shared by the serve tests: the bad-input cases (run against the real server and an
in-process app) and a small engine whose failures the tests switch on and off."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Sequence

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
    ("content a number", ANALYZE, b'{"restaurant_id": 1, "reviews": [{"id": 1, "content": 5}]}', JSON, 422,
     "reviews.0.content"),
    ("review not an object", ANALYZE, b'{"restaurant_id": 1, "reviews": ["good"]}', JSON, 422, "reviews.0"),
    ("restaurant_id a list", ANALYZE, b'{"restaurant_id": [1], "reviews": []}', JSON, 422, "restaurant_id"),
    ("id a float", ANALYZE, b'{"restaurant_id": 1, "reviews": [{"id": 1.5, "content": "x"}]}', JSON, 422,
     "reviews.0.id"),
    ("NaN restaurant_id", ANALYZE, b'{"restaurant_id": NaN, "reviews": []}', JSON, 422, "restaurant_id"),
    ("review of another restaurant", ANALYZE,
     b'{"restaurant_id": 1, "reviews": [{"id": 1, "restaurant_id": 2, "content": "x"}]}', JSON, 422,
     "reviews.0.restaurant_id"),
    ("several restaurants, no restaurant_id", ANALYZE,
     b'{"reviews": [{"restaurant_id": 1, "content": "x"}, {"restaurant_id": 2, "content": "y"}]}', JSON, 422,
     "restaurant_id"),
    ("too many reviews", ANALYZE,
     ('{"restaurant_id": 1, "reviews": [' + ",".join(['{"content": "x"}'] * (MAX_REVIEWS + 1)) + "]}").encode(),
     JSON, 413, None),
    ("too many bytes", ANALYZE,
     ('{"restaurant_id": 1, "reviews": [{"content": "' + "x" * MAX_BODY + '"}]}').encode(), JSON, 413, None),
    ("batch not a list", BATCH, b'{"restaurants": {"restaurant_id": 1}}', JSON, 422, "restaurants"),
    ("batch content a list", BATCH, b'{"restaurants": [{"restaurant_id": 1, "reviews": [{"content": ["a"]}]}]}',
     JSON, 422, "restaurants.0.reviews.0.content"),
    ("batch too many reviews", BATCH,
     ('{"restaurants": [' + ",".join(['{"restaurant_id": 1, "reviews": [{"content": "x"}]}'] * (MAX_REVIEWS + 1))
      + "]}").encode(), JSON, 413, None),
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
NO_TEXT_BODY = {"restaurant_id": 7, "reviews": [{"id": 1, "content": None}, {"id": 2, "content": ""},
                                                {"id": 3, "content": "   "}]}
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
    while ``failing`` is set. Records the number of prompts per call (to see batching)."""

    settings = "switch"
    max_model_len = 512
    device = "cpu"
    load_seconds = 0.0

    def __init__(self, delay: float = 0.05) -> None:
        super().__init__()
        self.tokenizer = WordTokenizer()
        self.failing: Exception | None = None
        self.delay = delay
        self.calls: list[int] = []
        self._lock = threading.Lock()

    @property
    def model_id(self) -> str:
        return "switch-engine"

    @property
    def prefix_block_size(self) -> int:
        return 1

    def score_labels(self, prompts, label_token_ids):
        if self.failing is not None:
            raise self.failing
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
