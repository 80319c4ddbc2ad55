"""One bad row never fails the others (issue 20, item 1), in the notebook path and in the shared
bisect (``reviewkit.isolation.score_apart``), with the small stand-in engine: no vLLM needed."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from serve_support import SwitchEngine

from reviewkit.analysis import analyze, score_texts
from reviewkit.engines.base import EngineDeadError
from reviewkit.isolation import SYSTEMIC_PARTS, score_apart
from reviewkit.scoring import UnscorableText
from reviewkit.scoring import score_texts as scoring_score_texts


def _caught(fn):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = fn()
    return out, [str(w.message) for w in caught]


def test_analyze_gives_an_unencodable_or_unscorable_row_nan_and_one_warning_naming_its_index():
    engine = SwitchEngine(delay=0)
    texts = ["zzgood a", "zzbad b", "half a pair \ud800 here", "zzboom c", None, "zzgood d"]
    df = pd.DataFrame({"content": pd.Series(texts, dtype=object, index=[10, 11, 12, 13, 14, 15]), "n": range(6)})
    out, messages = _caught(lambda: analyze(df, engine=engine, cache=False, progress=False))
    assert list(out.index) == [10, 11, 12, 13, 14, 15] and list(out["n"]) == list(range(6))
    assert list(out["sentiment"].astype(object).where(out["sentiment"].notna(), None)) == [
        "positive",
        "negative",
        None,
        None,
        None,
        "positive",
    ]
    assert out["sentiment_score"].isna().tolist() == [False, False, True, True, True, False]
    [message] = [m for m in messages if "could not be scored" in m]
    assert "2 review(s)" in message and "index 12, 13" in message
    assert "lone surrogate '\\ud800' at character 12" in message and "cannot score 'zzboom'" in message


def test_score_texts_names_positions_and_keeps_the_reasons():
    engine = SwitchEngine(delay=0)
    scored, messages = _caught(
        lambda: score_texts(["a\udc00", "zzgood", "zzboom"], engine=engine, cache=False, progress=False)
    )
    assert scored.sentiments() == [None, "positive", None]
    assert sorted(scored.errors) == [0, 2] and "surrogate" in scored.errors[0]
    assert any("position 0, 2" in m for m in messages)


def test_the_internal_call_raises_for_callers_that_isolate_failures_themselves():
    with pytest.raises(UnscorableText, match="lone surrogate") as raised:
        scoring_score_texts(["fine", "x\ud800"], SwitchEngine(delay=0), cache=False, progress=False)
    assert raised.value.position == 1


def test_an_engine_that_fails_everything_is_not_blamed_on_the_rows():
    engine = SwitchEngine(delay=0)
    score_texts(["zzgood warm-up"], engine=engine, cache=False, progress=False)  # calibrated: later calls fail
    engine.failing = RuntimeError("GPU fell off the bus")
    with pytest.raises(RuntimeError, match="fell off"):
        analyze(
            pd.DataFrame({"content": [f"zzgood {i}" for i in range(40)]}), engine=engine, cache=False, progress=False
        )
    engine.failing = EngineDeadError("engine process died")
    with pytest.raises(EngineDeadError):
        score_texts(["zzgood x", "zzbad y"], engine=engine, cache=False, progress=False)


def test_score_apart_pins_culprits_in_few_calls_and_stops_on_a_systemic_failure():
    calls = []

    def score(items):
        calls.append(len(items))
        if any(i in (5, 40) for i in items):
            raise ValueError(f"bad item in {items[:1]}")
        return np.array(items) * 2

    found = score_apart(list(range(64)), score)
    assert sorted(found.failed) == [5, 40]
    assert np.concatenate([r for _, _, r in found.parts]).tolist() == [2 * i for i in range(64) if i not in (5, 40)]
    assert [(a, b) for a, b, _ in found.parts] == sorted((a, b) for a, b, _ in found.parts)
    assert len(calls) <= 4 * math.ceil(math.log2(64)) + 1 + 2  # the halving, and each culprit tried twice alone

    calls.clear()
    hiccups = [2]

    def flaky(items):  # the engine fails twice, then works: no item is to blame
        calls.append(len(items))
        if hiccups[0]:
            hiccups[0] -= 1
            raise ConnectionError("reset")
        return np.array(items)

    found = score_apart(list(range(3)), flaky)
    assert not found.failed and np.concatenate([r for _, _, r in found.parts]).tolist() == [0, 1, 2]

    calls.clear()
    with pytest.raises(OSError, match="down"):
        score_apart(list(range(1000)), lambda items: calls.append(1) or (_ for _ in ()).throw(OSError("down")))
    assert len(calls) == 2 * SYSTEMIC_PARTS - 1  # 1 + 2 + 4 + 8 calls, not 2 x 1000
