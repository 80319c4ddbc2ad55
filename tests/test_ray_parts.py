"""reviewkit.ray's pieces that need neither an engine nor a Ray cluster: the resumable
output folder, a batch in which some rows fail, and argument checks."""

import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from reviewkit.engines.base import EngineDeadError
from reviewkit.ray.actor import NO_TEXT, score_rows
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
    assert len(calls) <= 2 * math.ceil(math.log2(16)) + 1  # halving, not one call per row


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
    with pytest.raises(ValueError, match=r"labels: \['positive', 'negative'\] there, \['positive', 'negative', "
                                         r"'neutral'\] now"):
        folder.check_settings({**settings, "labels": ["positive", "negative", "neutral"]})


def test_a_folder_refuses_scores_of_another_model(tmp_path):
    folder = OutputFolder(tmp_path)
    folder.claim_model("embedded:gemma-3-270m-it")  # the first run's engines record theirs
    folder.claim_model("embedded:gemma-3-270m-it")  # a resume on the same model goes on
    with pytest.raises(ValueError, match=r"holds scores of the model 'embedded:gemma-3-270m-it'.*loaded "
                                         r"'Qwen/Qwen2.5-7B-Instruct'"):
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
