"""reviewkit.ray on a local Ray cluster (2 CPUs, no dashboard) whose one actor holds the real
embedded engine: the same scores and aspect labels as in-process analyze, order kept, bad
rows, refused ids, an interrupted run resumed, an engine killed mid-run. One cluster for the whole module;
every analyze call starts one actor (one engine load, ~40 s), so the calls are few. The
actors' engines run in float32, as the session's in-process reference (tests/references.py).
The interrupt and the kill happen at a fixed point of the run: the source holds its later
batches back until the test has acted (tests/ray_gate.py), so no test bets on timing.
"""

import os
import signal
import threading
import time

import numpy as np
import pandas as pd
import psutil
import pytest
from ray_gate import BLOCK_ROWS, gated_source
from references import FLOAT32, RAY_N, ray_samples, ray_with_bad_rows
from rk_support import ROOT

from reviewkit.aspect_prompts import ASPECTS, aspect_columns

pytestmark = pytest.mark.ray

EMBEDDED = {"model": "embedded", **FLOAT32}  # as the in-process reference (tests/references.py)


class _Unprintable:
    def __str__(self):
        raise ValueError("this value has no text")


def _engine_processes() -> list[psutil.Process]:
    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:  # exited, not yet reaped: holds no memory
                continue
            if "EngineCor" in proc.name() or "EngineCore" in " ".join(proc.cmdline()):
                found.append(proc)
        except psutil.NoSuchProcess:
            pass
    return found


def _wait_for_no_engine(timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while _engine_processes() and time.monotonic() < deadline:
        time.sleep(1)
    assert not _engine_processes(), "an engine process outlived its run"


@pytest.fixture(scope="module")
def reference(references):
    """In-process analyze of the same rows (the session's float32 reference), its engine gone
    before Ray starts one."""
    _wait_for_no_engine()
    return references.ray


@pytest.fixture(scope="module")
def aspect_reference(references, reference):
    """In-process ``analyze(aspects=True)`` of the same rows, on the session's float32 reference
    engine (tests/references.py)."""
    return references.ray_aspects


@pytest.fixture(scope="module")
def cluster(reference, aspect_reference):
    import ray

    # The workers import this checkout, and tests/ray_gate.py for the gated source.
    ray.init(
        num_cpus=2,
        object_store_memory=300 * 1024**2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}},
    )
    yield ray
    ray.shutdown()


def _when(condition, action, stop: threading.Event) -> threading.Thread:
    def watch():
        while not stop.is_set():
            if condition():
                action()
                return
            time.sleep(0.2)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_dataframe_scores_and_aspects_match_in_process_analyze_in_order(cluster, reference, aspect_reference):
    import reviewkit.ray as rr

    df = ray_with_bad_rows()
    df.loc["unprintable"] = ["bad-object", _Unprintable()]  # in-process analyze would fail on it
    out = rr.analyze(df, text="content", engine_options=EMBEDDED, batch_size=50, aspects=True)

    assert list(out.index) == list(df.index) and out["id"].tolist() == df["id"].tolist()
    aspect_cols = [c for a in ASPECTS for c in aspect_columns(a)]
    assert list(out.columns) == ["id", "content", "sentiment", "sentiment_score", *aspect_cols, "error"]
    assert list(out["sentiment"].cat.categories) == ["positive", "negative"]
    # the aspects: analyze(aspects=True)'s columns, labels and scores, in order
    got_aspects, want_aspects = out.iloc[: len(aspect_reference)], aspect_reference
    assert list(want_aspects.columns[-len(aspect_cols) :]) == aspect_cols
    not_long = (got_aspects["id"] != "bad-long").to_numpy()  # its truncated prompt: see below
    for a in ASPECTS:
        label, score = aspect_columns(a)
        assert got_aspects[label].dtype == want_aspects[label].dtype  # Categorical positive/negative/none
        assert got_aspects[label].isna().tolist() == want_aspects[label].isna().tolist()
        assert got_aspects[score].isna().tolist() == want_aspects[score].isna().tolist()
        assert np.nanmax(np.abs(got_aspects[score] - want_aspects[score])[not_long], initial=0) < 1e-3, label
        clear = (((want_aspects[score] - 0.5).abs() > 1e-3) | want_aspects[score].isna()).to_numpy() & not_long
        assert (
            got_aspects[label].astype(object)[clear].fillna("NaN").tolist()
            == want_aspects[label].astype(object)[clear].fillna("NaN").tolist()
        ), label
    mentioned = out[aspect_cols[0::2]].iloc[: len(reference)].isin(["positive", "negative"]).sum().sum()
    assert mentioned >= 10  # aspects were asked (movie reviews: few mention a restaurant aspect)
    assert out.set_index("id").loc["bad-object", aspect_cols[0::2]].isna().all()
    got, want = out.iloc[: len(reference)], reference
    assert got["sentiment_score"].isna().tolist() == want["sentiment_score"].isna().tolist()
    # The 10,000-character review is truncated to a ~2,000-token prompt, which vLLM prefills in
    # chunks that depend on what else is in the batch: sums in another order (~1e-2 in bf16).
    short = (got["id"] != "bad-long").to_numpy()
    assert np.nanmax(np.abs(got["sentiment_score"] - want["sentiment_score"])[short]) < 1e-3
    assert abs(got["sentiment_score"].iloc[-2] - want["sentiment_score"].iloc[-2]) < 0.05  # bad-long
    clear = (want["sentiment_score"] - 0.5).abs() > 1e-3
    assert (got["sentiment"][clear] == want["sentiment"][clear]).all()
    by_id = out.set_index("id")
    assert by_id.loc[["bad-nan", "bad-empty", "bad-blank"], "error"].tolist() == ["no text"] * 3
    assert by_id.loc[["bad-emoji", "bad-mixed", "bad-long", "bad-int"], "sentiment"].notna().all()
    assert by_id.loc["bad-mixed", "sentiment"] == "positive"
    assert by_id.loc["bad-object", "error"] == "ValueError: this value has no text"
    assert np.isnan(by_id.loc["bad-object", "sentiment_score"])
    assert by_id["error"].isna().sum() == len(df) - 4

    run = rr.last_run()
    assert (run.rows, run.scored, run.no_text, run.errors) == (len(df), len(df), 3, 1)
    assert (run.actors, run.restarts) == (1, 0) and run.reviews_per_s > 0
    (actor,) = run.per_actor.values()
    assert actor["module"].startswith(str(ROOT)) and actor["batches"] == 5  # 208 rows in batches of 50
    assert run.actor_reviews_per_s()[next(iter(run.per_actor))] > run.reviews_per_s  # loads are not busy time
    _wait_for_no_engine()


def test_duplicate_or_missing_ids_are_refused_before_any_engine_starts(cluster, tmp_path):
    import reviewkit.ray as rr

    dup = pd.DataFrame({"id": ["a", "b", "a", "c", "c"], "content": ["good"] * 5})
    with pytest.raises(ValueError, match=r"duplicate ids: 2 value\(s\) of 'id'.*'a' ×2.*drop_duplicates"):
        rr.analyze(dup, output=tmp_path / "out", engine_options=EMBEDDED)
    with pytest.raises(ValueError, match=r"duplicate ids: 2 value"):
        rr.analyze(cluster.data.from_pandas(dup), output=tmp_path / "out", engine_options=EMBEDDED)
    dup.to_parquet(tmp_path / "dup.parquet")  # paths are read with Ray Data, then checked the same way
    with pytest.raises(ValueError, match=r"duplicate ids: 2 value"):
        rr.analyze(str(tmp_path / "dup.parquet"), output=tmp_path / "out", engine_options=EMBEDDED)
    with pytest.raises(ValueError, match=r"1 row\(s\) have no 'id'"):
        rr.analyze(pd.DataFrame({"id": ["a", None], "content": ["x", "y"]}), output=tmp_path / "out")
    with pytest.raises(KeyError, match="output= needs an id column"):
        rr.analyze(pd.DataFrame({"content": ["x"]}), output=tmp_path / "out")
    with pytest.raises(KeyError, match="'review' not found"):
        rr.analyze(pd.DataFrame({"content": ["x"]}), text="review")
    assert not _engine_processes() and not (tmp_path / "out").exists()  # nothing started, nothing written


@pytest.fixture(scope="module")
def resumable(tmp_path_factory, cluster):
    folder = tmp_path_factory.mktemp("ray-resume")
    return folder / "scored", folder


def test_an_interrupted_run_keeps_its_finished_batches(cluster, resumable):
    import reviewkit.ray as rr
    from reviewkit.ray.parts import OutputFolder

    output, folder = resumable
    parts = OutputFolder(output)
    # Blocks 3.. never reach the actor: Ctrl-C comes after three part files, and by then
    # nothing else can have been scored.
    source = gated_source(cluster, ray_samples(), output, folder / "never-opened", held_from=3)
    stop = threading.Event()
    _when(lambda: output.exists() and len(parts.part_paths()) >= 3, lambda: os.kill(os.getpid(), signal.SIGINT), stop)
    try:
        with pytest.raises(KeyboardInterrupt):
            rr.analyze(source, engine_options=EMBEDDED, batch_size=BLOCK_ROWS, output=output)
    finally:
        stop.set()
    written = parts.written_ids("id").to_pylist()  # refuses a folder with an id twice
    assert len(written) == 3 * BLOCK_ROWS and len(parts.part_paths()) == 3
    assert set(written) == set(ray_samples()["id"][: 3 * BLOCK_ROWS])
    assert rr.last_run().interrupted
    assert not (output / "_lease.json").exists()  # an interrupted run gives the folder back
    _wait_for_no_engine()


def test_a_rerun_resumes_and_survives_its_engine_being_killed(cluster, resumable, reference):
    import reviewkit.ray as rr
    from reviewkit.ray.parts import OutputFolder

    output, folder = resumable
    parts = OutputFolder(output)
    written = parts.written_ids("id") if output.exists() else None
    before = 0 if written is None else len(written)
    assert before == 3 * BLOCK_ROWS, "needs the interrupted run of the test before"
    gate = folder / "opened-after-the-kill"
    killed = []

    def kill_engine():  # the engine dies between two batches; the held ones come after it
        for proc in _engine_processes():
            proc.send_signal(signal.SIGKILL)
            killed.append(proc.pid)
        gate.touch()

    # Blocks 3 and 4 are scored, then the engine is killed, then blocks 5.. arrive.
    source = gated_source(cluster, ray_samples(), output, gate, held_from=5)
    stop = threading.Event()
    _when(lambda: len(parts.part_paths()) >= 5 and _engine_processes(), kill_engine, stop)
    try:
        run = rr.analyze(source, engine_options=EMBEDDED, batch_size=BLOCK_ROWS, output=output)
    finally:
        stop.set()
        gate.touch()

    assert killed, "the engine was never killed"
    assert (run.rows, run.skipped, run.scored) == (RAY_N, before, RAY_N - before)
    assert run.restarts >= 1 and run.actors == 1 and not run.interrupted
    stored = parts.read().to_pandas()
    assert stored["id"].is_unique and sorted(stored["id"]) == sorted(ray_samples()["id"])
    assert stored["error"].isna().all() and stored["sentiment"].notna().all()
    want = reference.set_index("id").loc[stored["id"], "sentiment_score"].to_numpy()
    assert np.max(np.abs(stored["sentiment_score"].to_numpy() - want)) < 1e-3
    _wait_for_no_engine()
