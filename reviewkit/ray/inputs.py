"""What ``reviewkit.ray.analyze`` checks before Ray starts, and how its results become columns.

The arguments and aspects are refused as ``analyze`` refuses them; each value is read as
``analyze`` reads it; resuming needs unique ids; results come back as one Ray block per batch
and leave as ``analyze``'s columns in the input's order.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from reviewkit.aspect_prompts import ASPECT_LABELS, MENTION_MODES, Aspect, AspectError, resolve_aspects
from reviewkit.ray.actor import ERROR, result_types
from reviewkit.scoring import SENTIMENT, clean_text


def check_arguments(text: str, id_column: str, labels: Sequence[str], concurrency: Any, batch_size: Any) -> None:
    if isinstance(labels, str):
        raise TypeError(f"labels must be a sequence of label names, got the string {labels!r}")
    if text == id_column:
        raise ValueError(f"text and id name the same column {text!r}")
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    sizes = concurrency if isinstance(concurrency, tuple) else (concurrency,)
    if not (1 <= len(sizes) <= 2 and all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in sizes)):
        raise ValueError(f"concurrency must be a positive integer or a (min, max) pair, got {concurrency!r}")


def check_aspects(aspects: Any, mention: str, labels: Sequence[str], text: str, id_column: str) -> tuple[Aspect, ...]:
    """The aspects asked for, refused (as ``analyze`` refuses them) before Ray starts."""
    if mention not in MENTION_MODES:
        raise ValueError(f"mention must be one of {MENTION_MODES}, got {mention!r}")
    chosen = resolve_aspects(aspects, labels=[str(label).strip() for label in labels])
    columns = list(result_types(chosen))
    taken = [c for c in columns if c in (text, id_column)]
    if taken:
        raise AspectError(
            f"aspect column {taken[0]!r} would overwrite the column {taken[0]!r} that "
            "reviewkit.ray.analyze reads; rename the aspect"
        )
    return chosen


def aspect_settings(aspects: Sequence[Aspect], mention: str) -> dict[str, Any]:
    """What an output folder records of the aspects asked (nothing without aspects, so a folder
    written before aspects existed resumes as it was): the names in order, ``mention``, and a
    digest per aspect of what decides its answers (its question in each language and its words)."""
    if not aspects:
        return {}
    return {
        "aspects": [a.name for a in aspects],
        "mention": mention,
        "aspect_definitions": {
            a.name: hashlib.sha256(json.dumps([a.ko, a.en, list(a.words)]).encode()).hexdigest()[:12] for a in aspects
        },
    }


def read_texts(values: Sequence[Any]) -> tuple[list[str | None], list[str | None]]:
    """Each value as ``analyze`` reads it, and the error of a value that cannot be read."""
    texts: list[str | None] = []
    errors: list[str | None] = []
    for value in values:
        try:
            texts.append(clean_text(value))
            errors.append(None)
        except Exception as exc:  # e.g. an object whose str() raises: this row fails alone
            texts.append(None)
            errors.append(f"{type(exc).__name__}: {exc}")
    return texts, errors


def check_ids(ids: pa.Array, id_column: str) -> None:
    """Resuming tells rows apart by id: refuse missing and repeated ids."""
    missing = ids.null_count
    if missing:
        raise ValueError(f"{missing} row(s) have no {id_column!r}; resuming with output= needs an id on every row")
    counts = pc.value_counts(ids)
    repeated = counts.filter(pc.greater(counts.field("counts"), 1))
    if len(repeated):
        examples = ", ".join(
            f"{v.as_py()!r} ×{n.as_py()}"
            for v, n in zip(repeated.field("values")[:3], repeated.field("counts")[:3], strict=True)
        )
        raise ValueError(
            f"duplicate ids: {len(repeated)} value(s) of {id_column!r} appear more than once "
            f"({examples}); "
            "resuming with output= needs one row per id: drop the duplicates "
            f"(df.drop_duplicates(subset={id_column!r})) or use a unique id column"
        )


def batch_blocks(table: pa.Table, batch_size: int) -> list[pa.Table]:
    """One Ray block per batch, so each batch is its own task (and its own retry)."""
    return [table.slice(start, batch_size) for start in range(0, table.num_rows, batch_size)]


def from_blocks(ray: Any, blocks: list[pa.Table]) -> Any:
    return ray.data.from_arrow(blocks) if blocks else None


def with_results(
    df: pd.DataFrame, results: pa.Table | None, labels: tuple[str, ...], aspects: Sequence[Aspect] = ()
) -> pd.DataFrame:
    """``df`` with the result columns, in ``df``'s order (results are in that order): the
    overall two, the aspects' as ``analyze`` makes them (Categoricals of positive/negative/none
    and float scores), then ``error``."""
    out = df.copy()
    n = len(df)
    for name, kind in result_types(aspects).items():
        if pa.types.is_floating(kind):
            out[name] = (
                results.column(name).to_numpy(zero_copy_only=False).astype(np.float64)
                if results is not None
                else np.full(n, np.nan)
            )
            continue
        values = results.column(name).to_pylist() if results is not None else [None] * n
        if name == ERROR:
            out[name] = values
        else:
            out[name] = pd.Categorical(values, categories=list(labels) if name == SENTIMENT else list(ASPECT_LABELS))
    return out
