"""``score_apart``: one bad item never fails the others of its batch.

The server's batcher (a batch of requests), ``score_texts`` (a chunk of texts), the aspect
pass and the Ray actor (a batch of rows) all isolate failures with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Generic, Sequence, TypeVar

from reviewkit.engines.base import EngineDeadError

#: A failure that every one of this many parts of a batch repeats is the engine's, not a row's.
SYSTEMIC_PARTS = 8

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class Isolated(Generic[R]):
    """What :func:`score_apart` found: each part that scored, and each item that failed alone."""

    parts: list[tuple[int, int, R]]  # (start, stop, result of score(items[start:stop])), in order
    failed: dict[int, Exception]  # position -> its error


def score_apart(
    items: Sequence[T],
    score: Callable[[list[T]], R],
    check_alive: Callable[[], None] | None = None,
    *,
    engine_works: bool = False,
) -> Isolated[R]:
    """``score(items)``; when that raises, the halves, then their halves, until each failure is
    pinned on the single items that cause it, so one bad item never fails the others.

    The server's batcher (a batch of requests), ``analyze`` (a chunk of texts) and the Ray
    actor (a batch of rows) all use it. A bad item costs O(log n) extra calls. A dead engine
    is not a bad item: :class:`EngineDeadError` (from ``score`` or from ``check_alive``,
    called after each failure, since an engine dying mid-call may raise something else
    first) propagates, and so does a failure that every part repeats once the batch is cut
    in :data:`SYSTEMIC_PARTS` parts (the engine's failure: at most 15 calls, not 2n), or
    that no part escapes (nothing scored: no proof that the items are to blame, unless the
    caller knows the engine works, ``engine_works``). A single item is tried twice before it
    is blamed, so a passing hiccup of the engine or its connection costs no row.
    """
    items = list(items)
    parts: list[tuple[int, int, R]] = []
    failed: dict[int, Exception] = {}
    level = [(0, len(items))] if items else []
    first_error: Exception | None = None
    tried_alone: set[int] = set()
    while level:
        again, alone_again, scored = [], [], 0
        for start, stop in level:
            try:
                parts.append((start, stop, score(items[start:stop])))
                scored += 1
            except EngineDeadError:
                raise
            except Exception as exc:  # noqa: BLE001 - sorted below: an item's or the engine's
                if check_alive is not None:
                    check_alive()
                first_error = first_error or exc
                if stop - start > 1:
                    again.append((start, stop))
                elif start in tried_alone:
                    failed[start] = exc
                else:
                    tried_alone.add(start)
                    alone_again.append((start, stop))
        if len(level) >= SYSTEMIC_PARTS and not scored and first_error is not None:
            raise first_error
        level = [
            half for start, stop in again for half in ((start, (start + stop) // 2), ((start + stop) // 2, stop))
        ] + alone_again
    if first_error is not None and not parts and not engine_works:
        raise first_error
    parts.sort(key=lambda part: part[0])
    return Isolated(parts, failed)
