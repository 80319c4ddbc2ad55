"""The seed's way: one greedy JSON ``{"label": ..., "reason": ...}`` per review, parsed.

What the seed project did before reviewkit (``_parse_sentiment_response``), kept here as
the baseline reviewkit's speed is compared with.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from _bench_data import LABELS

# The seed's way: ask for a JSON object with a label and a one-sentence reason, per review.
SEED_INSTRUCTION = (
    'Classify the sentiment of each restaurant or movie review as "positive" or '
    '"negative". Answer with a JSON object with the keys "label" and "reason" '
    "(one sentence)."
)
SEED_EXAMPLES = (
    ("진짜 맛있어요. 또 올게요!", "positive", "The reviewer loved the food and wants to come back."),
    ("a tedious , bland mess from start to finish .", "negative", "The reviewer found it boring and bland."),
    ("funny , warm and surprisingly moving .", "positive", "The reviewer praises the humour and the emotion."),
    ("노잼... 시간 낭비했네요", "negative", "The reviewer found it dull and a waste of time."),
)


def _seed_answer(label: str, reason: str) -> str:
    return json.dumps({"label": label, "reason": reason}, ensure_ascii=False)


def seed_completion_prefix() -> str:
    """Few-shot completion prompt for base models (no chat template)."""
    parts = [SEED_INSTRUCTION, ""]
    for text, label, reason in SEED_EXAMPLES:
        parts += [f"Review: {text}", f"Answer: {_seed_answer(label, reason)}", ""]
    return "\n".join(parts)


def seed_chat(text: str) -> list[dict[str, str]]:
    """The same request as chat messages, for instruction-tuned models."""
    messages = [{"role": "system", "content": SEED_INSTRUCTION}]
    for example, label, reason in SEED_EXAMPLES:
        messages += [
            {"role": "user", "content": example},
            {"role": "assistant", "content": _seed_answer(label, reason)},
        ]
    return messages + [{"role": "user", "content": text}]


_JSON_OBJECT = re.compile(r"\{.*?\}", re.DOTALL)


def parse_sentiment_response(text: str) -> tuple[str, str] | None:
    """What the seed's ``_parse_sentiment_response`` did: the first JSON object in the
    answer, with a known ``label`` and a ``reason``; None when that fails."""
    match = _JSON_OBJECT.search(text)
    if not match:
        return None
    try:
        data = json.loads(match.group(0))
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    label = str(data.get("label", "")).strip().lower()
    if label not in LABELS or not isinstance(data.get("reason"), str):
        return None
    return label, data["reason"]


def seed_uses_chat(engine: Any) -> bool:
    return bool(getattr(engine.tokenizer, "chat_template", None))


def seed_warm(engine: Any) -> None:
    """Compute the seed prompt's shared part once (a review-less request)."""
    from vllm import SamplingParams

    params = SamplingParams(max_tokens=1)
    if seed_uses_chat(engine):
        engine.llm.chat([seed_chat("")], params, use_tqdm=False)
    else:
        engine.llm.generate([seed_completion_prefix() + "Review: \nAnswer:"], params, use_tqdm=False)


def run_seed_style(engine: Any, texts: Sequence[str], max_tokens: int) -> dict[str, Any]:
    """Greedy JSON generation per review, as text prompts (vLLM tokenises), then parsing."""
    from vllm import SamplingParams

    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, stop=["}"], include_stop_str_in_output=True)
    if seed_uses_chat(engine):
        outputs = engine.llm.chat([seed_chat(t) for t in texts], params, use_tqdm=False)
    else:
        prefix = seed_completion_prefix()
        outputs = engine.llm.generate([f"{prefix}Review: {t}\nAnswer:" for t in texts], params, use_tqdm=False)
    answers = [o.outputs[0].text for o in outputs]
    parsed = [parse_sentiment_response(a) for a in answers]
    return {
        "parsed": parsed,
        "answers": answers,
        "prompt_tokens": sum(len(o.prompt_token_ids or ()) for o in outputs),
        "cached_tokens": sum(int(o.num_cached_tokens or 0) for o in outputs),
        "generated_tokens": sum(len(o.outputs[0].token_ids) for o in outputs),
    }
