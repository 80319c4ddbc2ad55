"""The interface every engine meets, and what it returns.

An engine knows its tokenizer, its maximum model length, a stable model id, its cache
identity (what the result cache keys by) and the KV-cache block size its prefix cache
reuses, and it can return the log-probabilities of given label tokens after each
token-id prompt in one forward pass. That is all reviewkit's scoring needs, wherever
the model runs.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, Sequence


@dataclass
class ScoredPrompt:
    """The label log-probabilities an engine returned for one prompt."""

    label_logprobs: list[float]
    prompt_tokens: int
    cached_tokens: int


class EngineDeadError(RuntimeError):
    """The engine (its process or its server) is gone; it must be loaded again."""


@dataclass
class EngineFigures:
    """Counters an engine keeps about its own calls (remote engines fill them in)."""

    requests: int = 0
    retries: int = 0
    wait_seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


class Engine(abc.ABC):
    """What reviewkit needs from a model, wherever it runs.

    Implementations: :class:`reviewkit.engines.local.LocalEngine` (vLLM in this
    process) and :class:`reviewkit.engines.remote.RemoteEngine` (a vLLM server).
    """

    #: The settings it was created with; equal settings mean the same engine.
    settings: Any
    #: A tokenizer with the Hugging Face call interface (``tokenizer(texts)["input_ids"]``).
    tokenizer: Any
    #: Longest prompt plus answer, in tokens.
    max_model_len: int
    #: ``"cpu"``, ``"cuda"`` or ``"remote"``.
    device: str
    #: Seconds it took to become ready.
    load_seconds: float

    def __init__(self) -> None:
        # Per-engine derived values (calibration biases, built prompts), dropped with it.
        self.memo: dict[str, Any] = {}
        self.figures = EngineFigures()

    @property
    @abc.abstractmethod
    def model_id(self) -> str:
        """A stable name of the model's weights, used in result-cache keys."""

    @property
    def cache_identity(self) -> str:
        """Everything about the engine that changes a score besides the prompt: model id, max
        model length, tokenizer fingerprint. The result cache keys its entries by it."""
        return f"{self.model_id}|max_model_len={self.max_model_len}"

    @property
    @abc.abstractmethod
    def prefix_block_size(self) -> int:
        """Tokens per KV-cache block (1 without prefix caching): prefixes are padded to it."""

    @abc.abstractmethod
    def score_labels(self, prompts: Sequence[list[int]], label_token_ids: list[int]) -> list[ScoredPrompt]:
        """One forward pass per prompt; the log-probabilities of ``label_token_ids``, in order."""

    def generate_text(self, prompts: Sequence[list[int]], max_tokens: int) -> list[str]:
        """Greedy free text (the seed's way; benchmarks compare against it)."""
        raise NotImplementedError(f"{type(self).__name__} does not generate text")

    def check_alive(self) -> None:  # noqa: B027 - optional: engines that cannot tell stay silent
        """Raise :class:`EngineDeadError` if the engine can no longer answer."""

    def engine_pids(self) -> list[int]:
        """Process ids of the engine's own processes on this machine (an in-process engine's
        engine core), which a watch may check for exits; none for an engine elsewhere."""
        return []

    @abc.abstractmethod
    def close(self) -> None:
        """Release the engine's processes, memory or connections."""
