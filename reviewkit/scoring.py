"""From label log-probabilities to calibrated label probabilities.

vLLM returns the raw log-probabilities of the label tokens (before any constraint),
so they are renormalised over the labels. A base model also leans towards some label
whatever the review says; contextual calibration (Zhao et al., 2021, "Calibrate
Before Use") measures that lean on content-free inputs once per prompt and divides
it out, which makes the argmax the decision and the score a usable probability.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from reviewkit.engine import Engine
from reviewkit.prompts import BuiltPrompt

CONTENT_FREE_INPUTS = ("N/A", "", "[MASK]", "...")
# Bump when the scoring recipe changes: it is part of the result-cache key.
SCORING_VERSION = "cc1"


def label_probabilities(logprobs: np.ndarray) -> np.ndarray:
    """Softmax over the label axis of an (n, labels) array of log-probabilities."""
    logprobs = np.asarray(logprobs, dtype=float)
    shifted = np.exp(logprobs - logprobs.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def calibrate(probs: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    """Divide out the prompt's content-free label bias and renormalise."""
    if bias is None:
        return probs
    adjusted = probs / bias[np.newaxis, :]
    return adjusted / adjusted.sum(axis=1, keepdims=True)


def tokenize_reviews(engine: Engine, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each review as it follows ``Review:`` in the prompt (leading space)."""
    if not texts:
        return []
    return list(engine.tokenizer([" " + t for t in texts], add_special_tokens=False)["input_ids"])


def content_free_bias(engine: Engine, built: BuiltPrompt) -> np.ndarray:
    """The prompt's label probabilities on content-free inputs (computed once)."""
    memo = engine.memo.setdefault("content_free_bias", {})
    if built.version not in memo:
        ids = tokenize_reviews(engine, list(CONTENT_FREE_INPUTS))
        scored = engine.score_labels([built.prompt_ids(x) for x in ids], built.label_token_ids)
        probs = label_probabilities(np.array([s.label_logprobs for s in scored]))
        memo[built.version] = probs.mean(axis=0)
    return memo[built.version]
