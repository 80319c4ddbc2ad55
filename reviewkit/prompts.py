"""Few-shot classification prompts, built once as token ids.

Every review is scored with the same instruction and examples in front of it, so
vLLM's prefix cache computes that shared part once; only the review's own tokens
cost anything. The prompt works for base models (the embedded Gemma 3 270M has no
chat template) and for instruction-tuned pod models alike. The answer is read as
the log-probability of each label's first token right after ``Sentiment:``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any, Sequence

DEFAULT_LABELS: tuple[str, ...] = ("positive", "negative")

# Few-shot examples per language. Korean and English reviews get their own prompt:
# with the embedded 270M model a Korean-only prompt scores Korean reviews about 4
# points better than a mixed one (measured on ../shared/data, see README). Labels
# alternate so that no label is favoured by position (a base model tends to copy the
# last example's label). Short, informal, restaurant and movie reviews alike.
KOREAN_EXAMPLES: tuple[tuple[str, str], ...] = (
    ("진짜 맛있어요. 또 올게요!", "positive"),
    ("서비스 최악. 돈이 아깝다", "negative"),
    ("기대 이상이었어요 ㅎㅎ 강추", "positive"),
    ("노잼... 시간 낭비했네요", "negative"),
    ("감동적이고 여운이 길게 남는다", "positive"),
    ("이게 뭐냐 ㅋㅋ 평점 1점도 아깝다", "negative"),
    ("분위기도 좋고 가성비 최고", "positive"),
    ("별로예요. 다시는 안 가요", "negative"),
)
ENGLISH_EXAMPLES: tuple[tuple[str, str], ...] = (
    ("the pasta was perfect and the staff were lovely .", "positive"),
    ("a tedious , bland mess from start to finish .", "negative"),
    ("funny , warm and surprisingly moving .", "positive"),
    ("waited an hour for cold food . never again .", "negative"),
    ("one of the best meals i've had all year .", "positive"),
    ("the plot is thin and the jokes fall flat .", "negative"),
    ("a delightful little place with great value .", "positive"),
    ("overpriced , noisy and forgettable .", "negative"),
)
NEUTRAL_EXAMPLES: dict[str, tuple[tuple[str, str], ...]] = {
    "ko": (
        ("평범한 맛이에요. 좋지도 나쁘지도 않아요.", "neutral"),
        ("영업시간은 11시부터이고 전화로 예약을 받아요.", "neutral"),
    ),
    "en": (
        ("it was okay , nothing special either way .", "neutral"),
        ("the restaurant opens at 11 and takes reservations by phone .", "neutral"),
    ),
}
LANGUAGE_EXAMPLES = {"ko": KOREAN_EXAMPLES, "en": ENGLISH_EXAMPLES}

DEFAULT_INSTRUCTION = "Each review below is labelled with its sentiment: {labels}. Reviews are in Korean or English."


@dataclass(frozen=True)
class BuiltPrompt:
    """A template turned into token ids for one tokenizer."""

    prefix_ids: list[int]
    suffix_ids: list[int]
    label_token_ids: list[int]
    labels: tuple[str, ...]
    version: str
    # Per label, the positions in ``label_token_ids`` of its words' first tokens.
    label_groups: tuple[tuple[int, ...], ...] = ()

    @property
    def overhead_tokens(self) -> int:
        return len(self.prefix_ids) + len(self.suffix_ids)

    def label_logprobs(self, token_logprobs: Any) -> Any:
        """(n, labels) log-probabilities from (n, label tokens) ones: each label's words
        are summed in probability (a verbalizer ensemble; one word per label by default)."""
        import numpy as np

        token_logprobs = np.asarray(token_logprobs, dtype=float)
        groups = self.label_groups or tuple((i,) for i in range(len(self.labels)))
        return np.stack([np.logaddexp.reduce(token_logprobs[:, list(g)], axis=1) for g in groups], axis=1)

    def prompt_ids(self, text_ids: Sequence[int]) -> list[int]:
        return [*self.prefix_ids, *text_ids, *self.suffix_ids]


@dataclass(frozen=True)
class PromptTemplate:
    """Instruction + few-shot examples + label set; its ``version`` keys the result cache."""

    labels: tuple[str, ...] = DEFAULT_LABELS
    examples: tuple[tuple[str, str], ...] | None = None
    instruction: str = DEFAULT_INSTRUCTION
    review_tag: str = "Review:"
    answer_tag: str = "Sentiment:"
    #: Words read for each label, e.g. ``{"positive": ("긍정", "좋음")}``: the first is
    #: written in the examples and the instruction, and the label's probability is the sum
    #: of all its words' (their first tokens must differ between labels). Default: the label.
    label_words: Any = None
    _cache: dict[tuple[int, int], BuiltPrompt] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        labels = tuple(str(label).strip() for label in self.labels)
        if len(labels) < 2:
            raise ValueError(f"need at least two labels, got {labels!r}")
        if len(set(labels)) != len(labels) or any(not label for label in labels):
            raise ValueError(f"labels must be distinct and non-empty, got {labels!r}")
        object.__setattr__(self, "labels", labels)
        if self.examples is None:
            object.__setattr__(self, "examples", _default_examples(labels))
        object.__setattr__(self, "examples", tuple((str(t), str(lbl)) for t, lbl in self.examples))
        unknown = {label for _, label in self.examples} - set(labels)
        if unknown:
            raise ValueError(f"examples use labels {sorted(unknown)} that are not in {labels!r}")
        words = dict(self.label_words or {})
        if set(words) - set(labels):
            raise ValueError(f"label_words names labels {sorted(set(words) - set(labels))} not in {labels!r}")
        words = tuple((label, tuple(str(w).strip() for w in words.get(label, (label,)))) for label in labels)
        if any(not ws or not all(ws) for _, ws in words):
            raise ValueError("label_words must give each label at least one non-empty word")
        object.__setattr__(self, "label_words", words)

    def _shown(self, label: str) -> str:
        """The word written for ``label`` in the prompt."""
        return dict(self.label_words)[label][0]

    def text(self, review: str = "") -> str:
        """The whole prompt as text, for reading and debugging."""
        return self.prefix_text() + " " + review + "\n" + self.answer_tag

    def prefix_text(self) -> str:
        parts = [self.instruction.format(labels=", ".join(self._shown(label) for label in self.labels)), ""]
        for review, label in self.examples:
            parts += [f"{self.review_tag} {review}", f"{self.answer_tag} {self._shown(label)}", ""]
        return "\n".join(parts) + self.review_tag

    @property
    def version(self) -> str:
        """A digest of everything that changes the answers."""
        words = "|".join(f"{label}={'/'.join(ws)}" for label, ws in self.label_words)
        return hashlib.sha256(self.prefix_text().encode() + b"\x00" + words.encode()).hexdigest()[:16]

    def build(self, tokenizer: Any, align_to: int = 1) -> BuiltPrompt:
        """Token ids for ``tokenizer``; refuses labels whose first tokens collide.

        ``align_to`` pads the shared prefix with newlines to a multiple of the KV-cache
        block size: vLLM caches whole blocks only, so the tokens of a last, partial block
        would otherwise be recomputed for every review.
        """
        key = (id(tokenizer), align_to)
        if key not in self._cache:
            self._cache[key] = self._build(tokenizer, align_to)
        return self._cache[key]

    def _build(self, tokenizer: Any, align_to: int) -> BuiltPrompt:
        text_ids = list(tokenizer(self.prefix_text())["input_ids"])  # with <bos> if the model uses it
        # Blank lines right after <bos> (measured: they change accuracy least); at the very
        # start for tokenizers that add no <bos> (SmolLM2, Qwen: within a point of unpadded).
        start = 1 if text_ids and text_ids[0] == getattr(tokenizer, "bos_token_id", None) else 0
        newline = tokenizer("\n", add_special_tokens=False)["input_ids"]
        padding = (-len(text_ids)) % max(1, align_to) if len(newline) == 1 else 0
        prefix_ids = text_ids[:start] + newline * padding + text_ids[start:]
        suffix_ids = list(tokenizer("\n" + self.answer_tag, add_special_tokens=False)["input_ids"])
        first_tokens: dict[int, str] = {}
        groups: list[list[int]] = []
        for label, words in self.label_words:
            group: list[int] = []
            for word in words:
                ids = _label_tokens(tokenizer, suffix_ids, "\n" + self.answer_tag, word)
                if not ids:
                    raise ValueError(f"label word {word!r} has no tokens")
                if not tokenizer.decode(ids[:1]).strip():
                    raise ValueError(
                        f"label word {word!r} starts with a bare space token for this tokenizer, "
                        "which says nothing about the label: choose another word"
                    )
                other = first_tokens.setdefault(ids[0], label)
                if other != label:
                    raise ValueError(
                        f"labels {other!r} and {label!r} start with the same token "
                        f"({tokenizer.decode([ids[0]])!r}), so one forward pass cannot tell them "
                        "apart: choose labels whose first words differ."
                    )
                position = list(first_tokens).index(ids[0])
                if position not in group:
                    group.append(position)
            groups.append(group)
        return BuiltPrompt(
            prefix_ids,
            suffix_ids,
            list(first_tokens),
            self.labels,
            f"{self.version}.{len(prefix_ids)}",
            tuple(map(tuple, groups)),
        )


def _label_tokens(tokenizer: Any, tag_ids: list[int], tag: str, label: str) -> list[int]:
    """The label's tokens as they follow the answer tag, as in the few-shot examples.

    Tokenized in context: a SentencePiece tokenizer may split a lone ``" positive"``
    differently (a bare word-start piece first) than after ``Sentiment:``.
    """
    ids = list(tokenizer(f"{tag} {label}", add_special_tokens=False)["input_ids"])
    if ids[: len(tag_ids)] == tag_ids:
        return ids[len(tag_ids) :]
    return list(tokenizer(" " + label, add_special_tokens=False)["input_ids"])


def _default_examples(labels: tuple[str, ...], language: str = "en") -> tuple[tuple[str, str], ...]:
    polar = [ex for ex in LANGUAGE_EXAMPLES[language] if ex[1] in labels]
    neutral = [ex for ex in NEUTRAL_EXAMPLES[language] if ex[1] in labels]
    missing = set(labels) - {label for _, label in polar + neutral}
    if missing:
        raise ValueError(f"no built-in examples for labels {sorted(missing)}: pass examples=[(text, label), ...]")
    # Spread the neutral examples through the list instead of ending on them.
    return tuple(polar[:3] + neutral[:1] + polar[3:6] + neutral[1:] + polar[6:])


_HANGUL = re.compile("[\uac00-\ud7a3\u1100-\u11ff\u3130-\u318f]")


def language_of(text: str) -> str:
    """``"ko"`` when the text has Hangul, else ``"en"`` (picks the few-shot prompt)."""
    return "ko" if _HANGUL.search(text) else "en"


def default_templates(labels: Sequence[str] = DEFAULT_LABELS) -> dict[str, PromptTemplate]:
    """One template per language, sharing the label set."""
    labels = tuple(labels)
    return {lang: PromptTemplate(labels=labels, examples=_default_examples(labels, lang)) for lang in LANGUAGE_EXAMPLES}
