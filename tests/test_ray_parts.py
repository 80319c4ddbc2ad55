"""reviewkit.ray's pieces that need neither an engine nor a Ray cluster: the resumable
output folder, a batch in which some rows fail, argument checks, and the aspect columns
(the actor asks ``score_aspects``, here a stand-in)."""

import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from reviewkit.aspect_prompts import Aspect, AspectError
from reviewkit.aspects import ScoredAspects
from reviewkit.engines.base import EngineDeadError
from reviewkit.ray.actor import (
    ASPECT_ERROR,
    NO_TEXT,
    POSITION,
    PRESET_ERROR,
    ReviewScorer,
    score_aspect_rows,
    score_rows,
)
from reviewkit.ray.inputs import aspect_settings, with_results
from reviewkit.ray.parts import OutputFolder, digest, drop_written
from reviewkit.scoring import ScoredTexts


class _Scored(ScoredTexts):
    def __init__(self, texts):
        probs = np.array([[np.nan, np.nan] if t is None else [0.75, 0.25] for t in texts])
        super().__init__(labels=("positive", "negative"), probs=probs, stats=None)


def test_a_failing_row_fails_alone_and_the_rest_is_scored():
    calls = []

    def score(texts):  # a scorer that cannot handle one particular row
        calls.append(len(texts))
        if "bad" in texts:
            raise UnicodeError("cannot encode this review")
        return _Scored(texts)

    texts = ["good"] * 5 + ["bad"] + [None] + ["fine"] * 9
    sentiments, scores, errors = score_rows(texts, score)
    assert len(sentiments) == len(scores) == len(errors) == 16
    assert sentiments[5] is None and math.isnan(scores[5]) and errors[5] == "UnicodeError: cannot encode this review"
    assert errors[6] == NO_TEXT and sentiments[6] is None
    ok = [i for i in range(16) if i not in (5, 6)]
    assert all(sentiments[i] == "positive" and scores[i] == 0.75 and errors[i] is None for i in ok)
    # halving, not one call per row (a single row is tried twice before it is blamed)
    assert len(calls) <= 2 * math.ceil(math.log2(16)) + 2


def test_a_dead_engine_is_not_mistaken_for_a_bad_row():
    def score(texts):
        raise RuntimeError("engine core gone")

    def check_alive():
        raise EngineDeadError("vLLM's engine process has died")

    with pytest.raises(EngineDeadError):
        score_rows(["a", "b"], score, check_alive)


def test_parts_are_whole_named_by_their_ids_and_rewritten_in_place(tmp_path):
    folder = OutputFolder(tmp_path / "out")
    folder.create()
    assert folder.written_ids("id") is None
    table = pa.table({"id": [1, 2, 3], "sentiment": ["positive", None, "negative"]})
    name = folder.write_part(table, [1, 2, 3])
    assert name == f"part-{digest([1, 2, 3])}.parquet" and digest([1, 2, 3]) != digest(["1", "2", "3"])
    assert folder.write_part(table, [1, 2, 3]) == name  # a retried batch replaces its own part
    folder.write_part(pa.table({"id": [4], "sentiment": ["positive"]}), [4])
    assert sorted(folder.written_ids("id").to_pylist()) == [1, 2, 3, 4]
    (tmp_path / "out" / f".{name}.tmp-deadbeef").write_bytes(b"half a file")  # an interrupted write
    assert len(folder.part_paths()) == 2 and folder.remove_temporary() == 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted([name, f"part-{digest([4])}.parquet"])


def test_a_folder_with_an_id_twice_is_refused(tmp_path):
    folder = OutputFolder(tmp_path)
    folder.write_part(pa.table({"id": ["a", "b"]}), ["a", "b"])
    folder.write_part(pa.table({"id": ["b"]}), ["b"])
    with pytest.raises(RuntimeError, match="1 id.*more than once.*'b'"):
        folder.written_ids("id")


def test_resuming_with_other_settings_is_refused(tmp_path):
    folder = OutputFolder(str(tmp_path))
    settings = {"id": "id", "labels": ["positive", "negative"], "engine_options": {"model": "embedded"}}
    folder.check_settings(settings)
    folder.check_settings(dict(settings))  # the same settings resume
    with pytest.raises(
        ValueError,
        match=r"labels: \['positive', 'negative'\] there, \['positive', 'negative', "
        r"'neutral'\] now",
    ):
        folder.check_settings({**settings, "labels": ["positive", "negative", "neutral"]})


def test_a_folder_refuses_scores_of_another_model(tmp_path):
    folder = OutputFolder(tmp_path)
    folder.claim_model("embedded:gemma-3-270m-it")  # the first run's engines record theirs
    folder.claim_model("embedded:gemma-3-270m-it")  # a resume on the same model goes on
    with pytest.raises(
        ValueError,
        match=r"holds scores of the model 'embedded:gemma-3-270m-it'.*loaded "
        r"'Qwen/Qwen2.5-7B-Instruct'",
    ):
        folder.claim_model("Qwen/Qwen2.5-7B-Instruct")


def test_one_run_at_a_time_holds_the_folder(tmp_path, monkeypatch):
    from reviewkit.ray import parts

    first, second = OutputFolder(tmp_path), OutputFolder(str(tmp_path))
    first.acquire("run-a")
    first.acquire("run-a")  # the holder may refresh it
    with pytest.raises(parts.FolderBusy, match=r"in use by another run \(run run-a on .*pid \d+"):
        second.acquire("run-b")
    # run-a's own half-written file is kept while it runs; another run's leftover is not
    first.write_part(pa.table({"id": [1]}), [1], "run-a")
    (tmp_path / ".part-x.parquet.tmp-run-a-123").write_bytes(b"run-a writing")
    (tmp_path / ".part-y.parquet.tmp-run-old-456").write_bytes(b"left by a killed run")
    assert first.remove_temporary(keep_run="run-a") == 1
    assert (tmp_path / ".part-x.parquet.tmp-run-a-123").exists()
    first.release("run-a")
    second.acquire("run-b")  # released: the next run takes it
    # a lease nobody refreshes any more (a killed driver) is taken over after LEASE_SECONDS
    later = parts.time.time() + parts.LEASE_SECONDS + 1
    monkeypatch.setattr(parts.time, "time", lambda: later)
    first.acquire("run-c")
    assert first._read_json(parts.LEASE_FILE)["run"] == "run-c"


def test_drop_written_keeps_only_new_ids_whatever_the_integer_width():
    batch = pa.table({"id": pa.array([1, 2, 3, 4], type=pa.int32()), "content": list("abcd")})
    kept = drop_written(batch, "id", pa.array([2, 4], type=pa.int64()))
    assert kept.column("id").to_pylist() == [1, 3] and kept.column("content").to_pylist() == ["a", "c"]


def test_bad_arguments_are_refused_before_ray_starts():
    import reviewkit.ray as rr

    df = pd.DataFrame({"content": ["x"], "id": [1]})
    with pytest.raises(ValueError, match="batch_size"):
        rr.analyze(df, batch_size=0)
    with pytest.raises(ValueError, match="concurrency"):
        rr.analyze(df, concurrency=0)
    with pytest.raises(TypeError, match="labels"):
        rr.analyze(df, labels="positive")
    with pytest.raises(ValueError, match="same column"):
        rr.analyze(df, text="id")


# -- aspects ------------------------------------------------------------------------------

ASPECT_NAMES = ("taste", "service")


def _scored_aspects(texts, errors=None):
    """A stand-in for score_aspects: taste positive (0.8) where the text says "tasty", service
    negative (0.3) where it says "rude", else none; None without text or for ``errors``."""
    from reviewkit.aspect_prompts import ASPECTS

    errors = errors or {}
    labels, scores = [], np.full((len(texts), 2), np.nan)
    for i, text in enumerate(texts):
        if text is None or i in errors:
            labels.append([None, None])
            continue
        labels.append(["positive" if "tasty" in text else "none", "negative" if "rude" in text else "none"])
        if "tasty" in text:
            scores[i, 0] = 0.8
        if "rude" in text:
            scores[i, 1] = 0.3
    return ScoredAspects(ASPECTS[:2], labels, scores, stats=None, errors=errors)


def test_a_row_whose_aspects_fail_fails_alone_and_the_rest_are_answered():
    calls = []

    def score(texts):
        calls.append(len(texts))
        if "explodes" in texts:  # the engine fails on this row, in every call it is in
            raise RuntimeError("engine refused the prompt")
        # a row score_aspects reports itself (invalid Unicode) is not split out again
        return _scored_aspects(texts, {i: "not valid Unicode" for i, t in enumerate(texts) if t == "bad \ud800"})

    texts = ["tasty"] * 4 + ["explodes", None, "bad \ud800", "rude and tasty"] + ["fine"] * 8
    labels, scores, errors = score_aspect_rows(texts, 2, score)
    assert [len(column) for column in labels + scores] == [16] * 4 and len(errors) == 16
    assert errors[4] == "RuntimeError: engine refused the prompt" and errors[6] == "not valid Unicode"
    assert errors[5] is None and labels[0][5] is None  # no text: no error of the aspects' own
    assert labels[0][4] is labels[1][4] is None and math.isnan(scores[0][4])
    assert (labels[0][7], labels[1][7], scores[0][7], scores[1][7]) == ("positive", "negative", 0.8, 0.3)
    assert labels[0][:4] == ["positive"] * 4 and labels[1][8:] == ["none"] * 8 and math.isnan(scores[1][8])
    assert len(calls) <= 2 * math.ceil(math.log2(16)) + 2  # halving, not one call per row


def test_a_dead_engine_during_the_aspects_is_not_a_bad_row():
    def score(texts):
        raise RuntimeError("engine core gone")

    def check_alive():
        raise EngineDeadError("vLLM's engine process has died")

    with pytest.raises(EngineDeadError):
        score_aspect_rows(["a", "b"], 2, score, check_alive)


class _FakeEngine:
    def check_alive(self):
        pass


def _scorer(monkeypatch, mode, aspects, **attributes):
    """A ReviewScorer without Ray or an engine, whose scoring functions are stand-ins."""
    from reviewkit.ray import actor

    asked = []

    def score_texts(texts, engine, **options):
        return _Scored(texts)

    def score_aspects(texts, engine, **options):
        asked.append((list(texts), options))
        return _scored_aspects(list(texts))

    monkeypatch.setattr(actor, "score_texts", score_texts)
    monkeypatch.setattr(actor, "score_aspects", score_aspects)
    scorer = ReviewScorer.__new__(ReviewScorer)
    scorer.engine, scorer.labels, scorer.text, scorer.id_column, scorer.mode = (
        _FakeEngine(),
        ("positive", "negative"),
        "content",
        "id",
        mode,
    )
    scorer.output, scorer.cache, scorer.figures, scorer.run = None, False, None, "run-x"
    scorer.aspects, scorer.mention = aspects, "words"
    scorer._busy = __import__("threading").Event()
    for name, value in attributes.items():
        setattr(scorer, name, value)
    return scorer, asked


def test_the_actor_asks_score_aspects_and_returns_analyzes_aspect_columns(monkeypatch):
    from reviewkit.aspect_prompts import ASPECTS

    scorer, asked = _scorer(monkeypatch, "return", ASPECTS[:2], cache=True)
    batch = pa.table(
        {
            POSITION: [0, 1, 2, 3],
            "content": ["tasty", "rude", None, None],
            PRESET_ERROR: [None, None, None, "ValueError: no str"],
        }
    )
    out = scorer(batch)
    assert out.column_names == [
        POSITION,
        "sentiment",
        "sentiment_score",
        "aspect_taste",
        "aspect_taste_score",
        "aspect_service",
        "aspect_service_score",
        "error",
    ]
    assert asked == [
        (["tasty", "rude", None, None], {"aspects": ASPECTS[:2], "mention": "words", "cache": True, "progress": False})
    ]
    assert out.column("aspect_taste").to_pylist() == ["positive", "none", None, None]
    assert out.column("aspect_service_score").to_pylist()[1] == 0.3
    assert out.column("error").to_pylist() == [None, None, NO_TEXT, "ValueError: no str"]

    plain, asked = _scorer(monkeypatch, "return", ())  # no aspects: the columns of before, no aspect call
    assert plain(batch).column_names == [POSITION, "sentiment", "sentiment_score", "error"] and asked == []


def test_a_row_whose_aspects_fail_keeps_its_overall_label_and_says_why(monkeypatch):
    from reviewkit.aspect_prompts import ASPECTS
    from reviewkit.ray import actor

    scorer, _ = _scorer(monkeypatch, "return", ASPECTS[:2])

    def score_aspects(texts, engine, **options):
        if "explodes" in texts:
            raise RuntimeError("the aspect prompt broke")
        return _scored_aspects(list(texts))

    monkeypatch.setattr(actor, "score_aspects", score_aspects)
    out = scorer(pa.table({POSITION: [0, 1], "content": ["tasty", "explodes"]})).to_pydict()
    assert out["sentiment"] == ["positive", "positive"] and out["aspect_taste"] == ["positive", None]
    assert out["error"] == [None, ASPECT_ERROR + "RuntimeError: the aspect prompt broke"]


def test_written_parts_hold_the_aspect_columns(monkeypatch, tmp_path):
    from reviewkit.aspect_prompts import ASPECTS

    folder = OutputFolder(tmp_path)
    folder.create()
    scorer, _ = _scorer(monkeypatch, "write", ASPECTS[:2], output=folder)
    summary = scorer(pa.table({"id": [7, 8], "content": ["tasty and rude", None]})).to_pydict()
    assert summary["rows"] == [2] and summary["no_text"] == [1] and summary["errors"] == [0]
    stored = folder.read().to_pydict()
    assert list(stored) == [
        "id",
        "sentiment",
        "sentiment_score",
        "aspect_taste",
        "aspect_taste_score",
        "aspect_service",
        "aspect_service_score",
        "error",
    ]
    assert stored["aspect_taste"] == ["positive", None] and stored["aspect_service"] == ["negative", None]

    appended, _ = _scorer(monkeypatch, "append", ASPECTS[:1])  # a lazy Dataset: the columns are appended
    table = appended(pa.table({"content": ["tasty"], "aspect_taste": ["stale"], "other": [1]}))
    assert table.column_names == [
        "content",
        "other",
        "sentiment",
        "sentiment_score",
        "aspect_taste",
        "aspect_taste_score",
        "error",
    ]
    assert table.column("aspect_taste").to_pylist() == ["positive"]


def test_results_become_analyzes_aspect_columns_in_the_frames_order():
    from reviewkit.aspect_prompts import ASPECTS

    df = pd.DataFrame({"content": ["tasty", "x", None]}, index=[5, 2, 2])
    results = pa.table(
        {
            "sentiment": ["positive", "negative", None],
            "sentiment_score": [0.9, 0.1, None],
            "aspect_taste": ["positive", "none", None],
            "aspect_taste_score": [0.8, None, None],
            "error": [None, None, NO_TEXT],
        }
    )
    out = with_results(df, results, ("positive", "negative"), ASPECTS[:1])
    assert list(out.columns) == [
        "content",
        "sentiment",
        "sentiment_score",
        "aspect_taste",
        "aspect_taste_score",
        "error",
    ]
    assert list(out["aspect_taste"].cat.categories) == ["positive", "negative", "none"]
    assert out["aspect_taste"].tolist()[:2] == ["positive", "none"] and pd.isna(out["aspect_taste"].iloc[2])
    assert out["aspect_taste_score"].dtype == np.float64 and out["aspect_taste_score"].isna().tolist() == [
        False,
        True,
        True,
    ]
    empty = with_results(df.iloc[:0], None, ("positive", "negative"), ASPECTS[:1])
    assert list(empty.columns) == list(out.columns) and empty["aspect_taste"].dtype == out["aspect_taste"].dtype


def test_resuming_with_other_aspects_is_refused(tmp_path):
    from reviewkit.aspect_prompts import ASPECTS

    folder = OutputFolder(str(tmp_path))
    base = {"id": "id", "labels": ["positive", "negative"], "engine_options": {}}
    assert aspect_settings((), "words") == {}  # no aspects: the settings of before, so old folders resume
    folder.check_settings({**base, **aspect_settings(ASPECTS, "words")})
    folder.check_settings({**base, **aspect_settings(ASPECTS, "words")})  # the same aspects resume
    with pytest.raises(
        ValueError,
        match=r"aspects: \['taste', 'service', 'price', 'portion', 'wait'\] there, "
        r"\['taste'\] now.*Resume with the same settings",
    ):
        folder.check_settings({**base, **aspect_settings(ASPECTS[:1], "words")})
    with pytest.raises(ValueError, match=r"aspects: \[.*\] there, None now"):
        folder.check_settings(base)  # a resume that forgot aspects=
    with pytest.raises(ValueError, match=r"mention: 'words' there, 'model' now"):
        folder.check_settings({**base, **aspect_settings(ASPECTS, "model")})
    # a custom aspect of the same name asking something else is another setting too
    other = OutputFolder(str(tmp_path / "custom"))
    other.create()
    other.check_settings({**base, **aspect_settings((Aspect("parking", "주차", "parking"),), "words")})
    with pytest.raises(ValueError, match=r"aspect_definitions: \{'parking': '[0-9a-f]{12}'\} there"):
        other.check_settings({**base, **aspect_settings((Aspect("parking", "주차", "parking", ("lot",)),), "words")})


def test_bad_aspects_are_refused_before_ray_starts():
    import reviewkit.ray as rr

    df = pd.DataFrame({"content": ["x"], "id": [1]})
    with pytest.raises(AspectError, match="unknown aspect 'smell'"):
        rr.analyze(df, aspects=["smell"])
    with pytest.raises(ValueError, match="mention must be one of"):
        rr.analyze(df, aspects=True, mention="always")
    with pytest.raises(AspectError, match="collides with a label"):
        rr.analyze(df, aspects=[Aspect("neutral", "중립", "neutral")])
    with pytest.raises(AspectError, match="would overwrite the column 'aspect_taste'"):
        rr.analyze(df.rename(columns={"content": "aspect_taste"}), text="aspect_taste", aspects=["taste"])
