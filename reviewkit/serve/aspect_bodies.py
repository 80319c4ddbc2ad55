"""The ``aspects`` field of a request, checked before any scoring, and the answers built with it.

``true`` asks for the restaurant set (taste, service, price, portion, wait: 맛, 서비스, 가격, 양,
웨이팅); a list picks built-in names or defines custom aspects ``{"name", "ko", "en", "words"}``.
A custom aspect's ``words`` are literal words or phrases here, not the regular expressions the
Python API takes: a client's pattern could backtrack for minutes on the scoring thread that
every request shares. What is refused is a 422 naming the field and the problem.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi.exceptions import RequestValidationError

from reviewkit.aspect_prompts import ASPECTS, Aspect, AspectError
from reviewkit.aspects import ScoredAspects
from reviewkit.scoring import ScoredTexts, unicode_problem
from reviewkit.seed_api import aspect_answers, chosen_aspects, restaurant_result
from reviewkit.serve.bodies import invalid

#: A custom aspect's descriptions (``ko``, ``en``) and words: short, so that the question stays a
#: few tokens and the review keeps the model's length.
MAX_DESCRIPTION_CHARS = 40
MAX_WORDS = 50
MAX_WORD_CHARS = 40
_CUSTOM_FIELDS = ("name", "ko", "en", "words")

#: The field's schema in the OpenAPI docs (the field itself is checked by :func:`parse_aspects`).
ASPECTS_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "boolean"},
        {
            "type": "array",
            "items": {
                "anyOf": [
                    {"type": "string", "enum": [a.name for a in ASPECTS]},
                    {
                        "type": "object",
                        "title": "CustomAspect",
                        "required": ["name", "ko", "en"],
                        "additionalProperties": False,
                        "properties": {
                            "name": {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,31}$"},
                            "ko": {"type": "string", "maxLength": MAX_DESCRIPTION_CHARS},
                            "en": {"type": "string", "maxLength": MAX_DESCRIPTION_CHARS},
                            "words": {
                                "type": "array",
                                "maxItems": MAX_WORDS,
                                "items": {"type": "string", "maxLength": MAX_WORD_CHARS},
                            },
                        },
                    },
                ]
            },
        },
        {"type": "null"},
    ],
    "default": None,
}


def parse_aspects(value: Any) -> tuple[Aspect, ...]:
    """The aspects a request's ``aspects`` asks for; () for null or false.

    Raises ValueError saying what is wrong (which item, which field) for anything else than
    true, false, null or a non-empty list of known names and valid custom aspects, each once.
    """
    if value is None or value is False:
        return ()
    if value is True:
        return chosen_aspects(True)
    if not isinstance(value, list):
        raise ValueError(
            f"must be true, false or a list of aspect names or {{name, ko, en}} objects, not {_json_type(value)}"
        )
    if not value:
        raise ValueError("an empty list asks for no aspect: pass true for all of them, or some names")
    items: list[str | Aspect] = []
    known = [a.name for a in ASPECTS]
    for i, item in enumerate(value):
        if isinstance(item, str):
            if item not in known:
                raise ValueError(
                    f"item {i}: unknown aspect {item[:40]!r}: the built-in ones are {', '.join(known)}; "
                    'a custom one is {"name": ..., "ko": ..., "en": ...}'
                )
            items.append(item)
        elif isinstance(item, dict):
            items.append(_custom(i, item))
        else:
            raise ValueError(f"item {i}: an aspect is a name or a {{name, ko, en}} object, not {_json_type(item)}")
    try:
        return chosen_aspects(items)
    except AspectError as exc:
        raise ValueError(str(exc)) from None


def _custom(i: int, item: dict[str, Any]) -> Aspect:
    extra = [key for key in item if key not in _CUSTOM_FIELDS]
    if extra:
        raise ValueError(f"item {i}: unknown field {str(extra[0])[:40]!r} (a custom aspect has name, ko, en, words)")
    missing = [key for key in _CUSTOM_FIELDS[:3] if key not in item]
    if missing:
        raise ValueError(f"item {i}: a custom aspect needs {' and '.join(missing)} (name, ko and en; words optional)")
    for key in _CUSTOM_FIELDS[:3]:
        _check_string(i, key, item[key], MAX_DESCRIPTION_CHARS if key != "name" else 32)
    words = item.get("words", [])
    if not isinstance(words, list) or len(words) > MAX_WORDS:
        raise ValueError(f"item {i}: words must be a list of at most {MAX_WORDS} words or phrases")
    for word in words:
        _check_string(i, "words", word, MAX_WORD_CHARS)
        if not word.strip():
            raise ValueError(f"item {i}: words holds an empty word")
    try:  # literal words: a client's regular expression is never run
        return Aspect(item["name"], item["ko"], item["en"], tuple(re.escape(w.strip()) for w in words))
    except AspectError as exc:
        raise ValueError(f"item {i}: {exc}") from None


def _check_string(i: int, key: str, value: Any, limit: int) -> None:
    if not isinstance(value, str):
        raise ValueError(f"item {i}: {key} must be a string, not {_json_type(value)}")
    if len(value) > limit:
        raise ValueError(f"item {i}: {key} is {len(value)} characters, over the limit of {limit}")
    problem = unicode_problem(value)
    if problem is not None:
        raise ValueError(f"item {i}: {key}: {problem}")


def _json_type(value: Any) -> str:
    names = {bool: "a boolean", int: "a number", float: "a number", str: "a string", dict: "an object"}
    return names.get(type(value), "a list" if isinstance(value, list) else "null" if value is None else "a value")


def batch_aspects(body: Any) -> tuple[Aspect, ...]:
    """A batch request's aspects: set once, next to ``restaurants`` (one set per engine pass)."""
    for i, restaurant in enumerate(body.restaurants):
        if restaurant.aspects:
            raise invalid(
                ("body", "restaurants", i, "aspects"),
                "set aspects once for the whole batch, next to 'restaurants', not per restaurant",
            )
    return body.aspects


def build_results(
    groups: list[tuple[Any, list[dict[str, Any]]]], scored: ScoredTexts, found: ScoredAspects | None
) -> list[dict[str, Any]]:
    """Each restaurant's answer from the scores of all the groups' reviews, in order; with
    ``found``, each review's aspects and the restaurant's ``aspect_summary`` too."""
    sizes = [len(payloads) for _, payloads in groups]
    extras = aspect_answers(scored, found, sizes) if found is not None else [None] * len(groups)
    results, start = [], 0
    for (restaurant_id, payloads), extra in zip(groups, extras, strict=True):
        part = ScoredTexts(scored.labels, scored.probs[start : start + len(payloads)], scored.stats)
        results.append(restaurant_result(restaurant_id, payloads, part, extra))
        start += len(payloads)
    return results


def unscorable(errors: dict[int, str], where: list[tuple[Any, ...]]) -> RequestValidationError:
    """422 naming each review that could not be scored (``where``: each text's field)."""
    return RequestValidationError(
        [
            {"loc": where[i], "msg": f"could not be scored ({error})", "type": "value_error"}
            for i, error in sorted(errors.items())
        ]
    )
