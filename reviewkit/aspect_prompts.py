"""What an aspect is, the restaurant set, its words, and the prompt that asks about one.

Whether an aspect is mentioned is decided, by default, by the aspect's own words in each
language (``mention="words"``; the restaurant set's words were chosen on the selection half
of ``reviewkit.aspect_reviews()``): the embedded 270M model cannot tell a mention from its
absence (asked three ways it mostly says ``none``), while it reads the polarity of the clause
that names an aspect well (:func:`mention_clause`).

For a model that can tell mentions (``mention="model"``, a pod's), the question is laid out so
that a review's tokens are computed once for all its questions: the shared few-shot prefix
(padded to whole KV blocks, cached), then the review (padded with newlines to a whole block,
so vLLM's prefix cache keeps every block of it after the first question), then a short
question (``Aspect: 서비스``) and the answer tag whose label tokens are read, as for the overall
label: five questions cost one review's forward pass plus five short tails.
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from reviewkit.prompts import PromptTemplate

#: What a cell of an aspect column can hold (NaN where the review has no text).
ASPECT_LABELS: tuple[str, ...] = ("positive", "negative", "none")
POLARITY_LABELS: tuple[str, ...] = ("positive", "negative")
MENTION_MODES = ("words", "model")
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
#: Quote the part of the review that mentions the aspect in its question (see ``Aspect.question``).
QUOTE_CLAUSE = True
CLAUSE_CHARS = 120
_TRAILING_CONTRAST = re.compile(r"\s*(는데|은데|런데|인데|한데|지만)$")
# Where a review's clauses part: sentence ends, commas, contrast words (Korean endings kept).
_CLAUSE_BREAK = re.compile(
    r"(?<=[.!?~;,])\s+|(?<=[는은런인한]데|지만|ㅠㅠ|ㅋㅋ)\s*|\s+(?=but\b|though\b|although\b|however\b)", re.IGNORECASE
)


class AspectError(ValueError):
    """An aspect that cannot be asked about: a bad or colliding name, no description."""


@dataclass(frozen=True)
class Aspect:
    """One thing a review can be positive or negative about.

    Args:
        name: the column suffix (``aspect_<name>``): lower-case letters, digits, ``_``.
        ko: the aspect in Korean, as asked about Korean reviews (``"주차"``).
        en: the aspect in English, as asked about English reviews (``"parking"``).
        words: regular expressions (case-insensitive) whose presence in a review means the
            aspect is mentioned (``mention="words"``); empty means ``ko`` and ``en`` themselves.
    """

    name: str
    ko: str
    en: str
    words: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise AspectError(
                f"aspect name {self.name!r} must be lower-case letters, digits and _ "
                "(it becomes the column aspect_<name>)"
            )
        for field_name in ("ko", "en"):
            value = getattr(self, field_name)
            if not isinstance(value, str) or not value.strip() or "\n" in value:
                raise AspectError(f"aspect {self.name!r} needs a one-line {field_name!r} description, got {value!r}")
        words = tuple(self.words) if not isinstance(self.words, str) else (self.words,)
        for word in words:
            try:
                re.compile(word)
            except (re.error, TypeError) as exc:
                raise AspectError(f"aspect {self.name!r}: word {word!r} is not a regular expression: {exc}") from exc
        object.__setattr__(self, "words", words or (re.escape(self.ko), re.escape(self.en)))

    def question(self, language: str, clause: str | None = None) -> str:
        """The question line asked after a review in ``language``, quoting the ``clause`` that
        mentions the aspect (the 270M model reads a mixed review's parts apart this way)."""
        name = self.ko if language == "ko" else self.en
        return f"\nAspect: {name}" + (f" ({clause})" if clause and QUOTE_CLAUSE else "")

    def clause(self, text: str) -> str | None:
        """The parts of ``text`` that mention the aspect by its words, or None."""
        return mention_clause(self.words, text)

    @property
    def version(self) -> str:
        """A digest of what the aspect asks: part of the result-cache key."""
        return hashlib.sha256(f"{self.ko}\x00{self.en}".encode()).hexdigest()[:12]

    def mentioned_in(self, text: str) -> bool:
        return any(pattern.search(text) for pattern in _patterns(self.words))


def mention_clause(words: tuple[str, ...], text: str) -> str | None:
    """The clauses of ``text`` in which one of ``words`` occurs, joined, at most CLAUSE_CHARS."""
    patterns = _patterns(words)
    parts = [p.strip(" ,.") for p in _CLAUSE_BREAK.split(text) if p and p.strip(" ,.")]
    found = [p for p in parts if any(pattern.search(p) for pattern in patterns)]
    # A contrast ending left on the clause ("맛은 좋은데": "good, but") reads as a complaint to a
    # small model; without it the clause says what it says (KO polarity 0.857 -> 0.912, selection half).
    found = [_TRAILING_CONTRAST.sub("", p) if len(_TRAILING_CONTRAST.sub("", p)) > 2 else p for p in found]
    if not found:
        return None
    joined = " / ".join(found)
    return joined if len(joined) <= CLAUSE_CHARS else joined[: CLAUSE_CHARS - 1] + "…"


@functools.lru_cache(maxsize=256)  # bounded: a server sees clients' custom aspects
def _patterns(words: tuple[str, ...]) -> list[re.Pattern]:
    return [re.compile(w, re.IGNORECASE) for w in words]


# The restaurant set. Words were chosen on the selection half of
# reviewkit/data/aspect_reviews.csv only (see the README's Aspects section).
# fmt: off
TASTE = Aspect("taste", "맛", "taste", (
    r"맛", r"(?<![시공인])간(이|은|도)\b", r"싱거", r"싱겁", r"짜(요|고|서|다|네|더|웠|워)", r"짭",
    r"달(아|고|달|콤)", r"느끼", r"신선", r"비린", r"잡내", r"국물", r"육즙", r"고소", r"쫄깃", r"바삭", r"눅눅",
    r"퍽퍽", r"질겨", r"식감", r"풍미", r"담백", r"고기", r"누린내", r"불어", r"음식은", r"\btast", r"delicious",
    r"flavo", r"bland", r"salty", r"\bfresh", r"bitter", r"greasy", r"yummy", r"\bbland", r"seasoned", r"soggy",
    r"juicy", r"crisp", r"\bdry\b", r"overcooked", r"undercooked", r"\bstale", r"mouth",
    r"\bfood (was|is|tasted|here)",
    r"(great|good|amazing|bad|awful|terrible|excellent|fantastic|mediocre|decent|fresh) (food|meal)",
    r"\bmeals? (was|were|is)", r"dish(es)? (was|were|is|are)", r"chewy", r"gummy", r"charred", r"phenomenal",
    r"microwaved", r"reheated",
))
SERVICE = Aspect("service", "서비스", "service", (
    r"친절", r"불친절", r"직원", r"사장", r"알바", r"서빙", r"응대", r"서비스", r"태도", r"매니저", r"이모님",
    r"사모님", r"주인", r"짜증", r"\bstaff", r"service", r"waiter", r"waitress", r"server", r"friendly", r"\brude",
    r"cashier", r"attentive", r"owner", r"manager", r"hostess?\b", r"welcom", r"polite",
))
PRICE = Aspect("price", "가격", "price", (
    r"가격", r"가성비", r"비싸", r"비쌈", r"저렴", r"싸(요|고|서|다|네|게)", r"값", r"만\s?원", r"돈", r"창렬",
    r"혜자", r"\bprice", r"\bpric(ed|ey|y)", r"overpriced", r"expensive", r"cheap", r"value", r"\bworth",
    r"\bdeals?\b", r"rip-?off", r"\bbill\b", r"afford", r"\$\d", r"\bcost",
))
PORTION = Aspect("portion", "양", "portion", (
    r"양이", r"양은", r"양도", r"양에", r"양 ", r"양많", r"양적", r"푸짐", r"배불", r"배부르", r"넉넉", r"혜자",
    r"리필", r"몇 점", r"portion", r"serving", r"generous", r"\bhuge\b", r"\btiny\b", r"\bfilling", r"\bstuffed",
    r"still hungry", r"left hungry", r"\bskimpy", r"plenty of food", r"\bsize", r"sized", r"big enough", r"stingy",
    r"half empty", r"\ba lot\b", r"\bsmall(er)?\b",
))
WAIT = Aspect("wait", "웨이팅", "wait", (
    r"웨이팅", r"기다", r"대기", r"줄(이|을|서|은)", r"늦게", r"오래 걸", r"빨리 나", r"금방 나", r"바로 나",
    r"바로 들어", r"회전", r"빠르", r"느려", r"느리", r"걸렸", r"걸림", r"배달", r"\bwait(s|ed|ing)?\b", r"\bqueue",
    r"\bline\b", r"\blines\b", r"\bquick(ly)?\b", r"\bslow", r"\bfast\b", r"took (forever|ages|over|an hour|\d+)",
    r"minutes", r"an hour", r"\bprompt(ly)?\b", r"\bseated", r"reservation",
))
# fmt: on
#: The default restaurant aspects: 맛, 서비스, 가격, 양, 웨이팅.
ASPECTS: tuple[Aspect, ...] = (TASTE, SERVICE, PRICE, PORTION, WAIT)
_RESERVED = set(ASPECT_LABELS) | {"neutral", "sentiment", "score"}


def resolve_aspects(aspects: Any, *, labels: Sequence[str] = ()) -> tuple[Aspect, ...]:
    """``True`` -> the restaurant set; names pick from it; :class:`Aspect` objects are custom.

    Refuses an unknown name, a repeated one, a name that is a label (``positive``...) and
    two aspects whose columns would collide (``taste`` and ``taste_score``).
    """
    if aspects is True:
        return ASPECTS
    if aspects is None or aspects is False:
        return ()
    if isinstance(aspects, (str, Aspect)):
        aspects = [aspects]
    if not isinstance(aspects, Iterable):
        raise AspectError(f"aspects must be True, a list of names or reviewkit.Aspect objects, got {aspects!r}")
    known = {a.name: a for a in ASPECTS}
    chosen: list[Aspect] = []
    for item in aspects:
        if isinstance(item, Aspect):
            chosen.append(item)
        elif isinstance(item, str) and item in known:
            chosen.append(known[item])
        else:
            raise AspectError(
                f"unknown aspect {item!r}: the built-in ones are {sorted(known)}; "
                "a custom one is reviewkit.Aspect(name, ko=..., en=...)"
            )
    if not chosen:
        raise AspectError("aspects is empty: pass True for all of them, or some names")
    names = [a.name for a in chosen]
    for aspect in chosen:
        if names.count(aspect.name) > 1:
            raise AspectError(f"aspect {aspect.name!r} is given twice")
        if aspect.name in _RESERVED or aspect.name in set(labels):
            raise AspectError(f"aspect name {aspect.name!r} collides with a label or a result name; choose another")
        if aspect.name.endswith("_score") and aspect.name[: -len("_score")] in names:
            raise AspectError(
                f"aspects {aspect.name!r} and {aspect.name[:-6]!r} would both write the column aspect_{aspect.name}"
            )
    return tuple(chosen)


def aspect_columns(aspect: Aspect) -> tuple[str, str]:
    """The two columns ``analyze(aspects=...)`` writes for ``aspect``: label and score."""
    return f"aspect_{aspect.name}", f"aspect_{aspect.name}_score"


# Few-shot examples: (review, aspect name, answer). Written for the prompt, not taken from
# the labelled set; mixed reviews ask both ways, and answers alternate.
_EXAMPLES = {
    "ko": (
        ("국물이 진하고 맛있어요. 근데 웨이팅이 한 시간이었어요.", "taste", "positive"),
        ("국물이 진하고 맛있어요. 근데 웨이팅이 한 시간이었어요.", "wait", "negative"),
        ("사장님이 너무 친절하세요 ㅎㅎ", "service", "positive"),
        ("이 가격에 이 양이면 창렬이죠", "price", "negative"),
        ("양이 많아서 둘이 먹어도 배불러요", "portion", "positive"),
        ("맛은 그냥 그런데 직원분들이 불친절해요", "service", "negative"),
        ("가성비 최고! 또 올게요", "price", "positive"),
        ("너무 짜고 느끼해서 다 못 먹었어요", "taste", "negative"),
    ),
    "en": (
        ("the ramen was rich and tasty , but we waited an hour to get in .", "taste", "positive"),
        ("the ramen was rich and tasty , but we waited an hour to get in .", "wait", "negative"),
        ("our server was so kind and attentive .", "service", "positive"),
        ("way overpriced for what you get .", "price", "negative"),
        ("huge portions , we took half of it home .", "portion", "positive"),
        ("food was fine but the staff were rude .", "service", "negative"),
        ("great value , cheap and cheerful .", "price", "positive"),
        ("bland and greasy , i barely ate it .", "taste", "negative"),
    ),
}
# For the three-way question (mention="model"): the same, plus questions about aspects a
# review does not mention.
_NONE_EXAMPLES = {
    "ko": (("분위기가 좋고 인테리어가 예뻐요", "price", "none"), ("사장님이 너무 친절하세요 ㅎㅎ", "portion", "none")),
    "en": (
        ("lovely decor and a nice view .", "price", "none"),
        ("our server was so kind and attentive .", "portion", "none"),
    ),
}
INSTRUCTION = (
    "Each review below is followed by one aspect of the restaurant and what the review "
    "says about it: {labels}. Reviews are in Korean or English."
)


def aspect_template(language: str, labels: tuple[str, ...] = POLARITY_LABELS) -> PromptTemplate:
    """The few-shot prompt for aspect questions on ``language`` reviews; an example's
    "review" carries its question line, as a scored review does after its padding."""
    known = {a.name: a for a in ASPECTS}
    examples = list(_EXAMPLES[language])
    if "none" in labels:
        examples = (
            examples[:3] + [_NONE_EXAMPLES[language][0]] + examples[3:6] + [_NONE_EXAMPLES[language][1]] + examples[6:]
        )
    shown = [
        (text + known[name].question(language, known[name].clause(text)), answer) for text, name, answer in examples
    ]
    return PromptTemplate(labels=labels, examples=tuple(shown), instruction=INSTRUCTION)
