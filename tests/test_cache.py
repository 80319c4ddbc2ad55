"""The result cache never breaks an analysis, is shared safely, bounded, and visible.

Each failure is produced for real: a file that is not a database, a folder under a
regular file, permissions enforced by dropping root (a forked child as ``nobody``),
a full disk (SQLite's ``max_page_count``, a file-size limit, a tiny tmpfs where
mounting is allowed), writers in several processes. The last section runs
``analyze`` on the real engine with a broken cache and compares it to ``cache=False``.
"""

from __future__ import annotations

import itertools
import json
import os
import pickle
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import pytest
from rk_support import ROOT, run_python

from reviewkit.cache import CacheWarning, ResultCache, cache_info, default_cache, default_max_mb

NOBODY = 65534


def _probs(text: str) -> list[float]:
    """A distinct, checkable value per text."""
    first = (sum(map(ord, text)) % 997) / 997
    return [first, 1.0 - first]


def _fill(cache: ResultCache, texts: list[str], space: str = "ns", model: str = "m") -> None:
    cache.put_many(space, [(t, _probs(t)) for t in texts], model=model)


def _warnings_of(fn, *args):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fn(*args)
    return result, [str(w.message) for w in caught if issubclass(w.category, CacheWarning)]


def run_unprivileged(fn, *args):
    """``fn(*args)`` where file permissions apply: as is, or, under root, in a forked child as nobody."""
    if os.geteuid() != 0:
        return fn(*args)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop root, run, send back the result, exit without cleanup
        os.close(read)
        try:
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            outcome = ("ok", fn(*args))
        except BaseException as exc:  # noqa: BLE001 - any failure is the test's result
            outcome = ("error", repr(exc))
        with os.fdopen(write, "wb") as pipe:
            pickle.dump(outcome, pipe)
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    status, value = pickle.loads(data)
    assert status == "ok", value
    return value


@pytest.fixture
def open_dir():
    """A folder the unprivileged child can enter (tmp_path's parents are root-only)."""
    folder = Path(tempfile.mkdtemp(prefix="rk-cache-"))
    folder.chmod(0o777)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


# -- cannot open ---------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["garbage", "half-written"])
def test_a_corrupt_file_is_moved_aside_and_a_fresh_cache_works(tmp_path, damage):
    path = tmp_path / "results.sqlite3"
    if damage == "garbage":
        path.write_bytes(b"this is not a database\x00" * 400)
    else:  # a real cache cut in half, as a full disk or a killed copy leaves it
        good = ResultCache(path)
        _fill(good, [f"review {i} " * 20 for i in range(400)])
        good.close()
        data = path.read_bytes()
        path.write_bytes(data[:4096] + b"\xff" * (len(data) // 2 - 4096))
    damaged = path.read_bytes()

    cache, messages = _warnings_of(ResultCache, path)
    assert cache.enabled and cache.disabled_reason is None
    assert len(messages) == 1 and "moved it aside" in messages[0] and str(path) in messages[0]
    moved = [p for p in tmp_path.glob("results.sqlite3.corrupt-*") if not p.name.endswith(("-wal", "-shm"))]
    assert len(moved) == 1 and moved[0].read_bytes() == damaged  # kept, byte for byte
    _fill(cache, ["a", "b"])
    assert cache.get_many("ns", ["a", "b", "c"]) == {"a": _probs("a"), "b": _probs("b")}
    assert cache.info().moved_aside == sorted(tmp_path.glob("results.sqlite3.corrupt-*"))
    cache.clear()
    assert not list(tmp_path.glob("results.sqlite3.corrupt-*"))  # clear deletes them too


def test_an_uncreatable_folder_turns_the_cache_off_with_one_warning(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    path = blocker / "cache" / "results.sqlite3"
    cache, messages = _warnings_of(ResultCache, path)
    assert not cache.enabled and "cannot create the folder" in cache.disabled_reason
    assert cache.status.startswith("off: cannot create the folder")
    assert len(messages) == 1
    for needle in (str(path), "REVIEWKIT_CACHE_DIR", "cache=False", "continues without it"):
        assert needle in messages[0]
    (hits, again) = _warnings_of(lambda: (cache.get_many("ns", ["a"]), _fill(cache, ["a"]), ResultCache(path))[0])
    assert hits == {} and again == []  # no raise, and reported once per process and path
    assert len(cache) == 0 and cache.info().enabled is False


def _open_as_unprivileged(path: str) -> tuple[bool, str | None, list[str], dict, int]:
    cache, messages = _warnings_of(ResultCache, path)
    hits = cache.get_many("ns", ["a"])
    _fill(cache, ["a", "b"])  # must not raise
    return cache.enabled, cache.disabled_reason, messages, hits, len(cache)


def test_an_unwritable_folder_turns_the_cache_off(open_dir):
    folder = open_dir / "cache"
    folder.mkdir()
    folder.chmod(0o555)
    enabled, reason, messages, hits, size = run_unprivileged(_open_as_unprivileged, str(folder / "results.sqlite3"))
    assert not enabled and "cannot open it" in reason and hits == {} and size == 0
    assert len(messages) == 1 and "REVIEWKIT_CACHE_DIR" in messages[0]


def test_a_read_only_file_turns_the_cache_off(open_dir):
    path = open_dir / "results.sqlite3"
    cache = ResultCache(path)
    _fill(cache, ["a"])
    cache.close()
    path.chmod(0o444)
    enabled, reason, messages, hits, _ = run_unprivileged(_open_as_unprivileged, str(path))
    assert not enabled and "read-only" in reason and hits == {}
    assert len(messages) == 1 and str(path) in messages[0]
    path.chmod(0o644)
    assert ResultCache(path).get_many("ns", ["a", "b"]) == {"a": _probs("a")}  # left as it was


def test_a_file_from_a_newer_reviewkit_is_left_alone(tmp_path):
    path = tmp_path / "results.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    before = path.read_bytes()
    cache, messages = _warnings_of(ResultCache, path)
    assert not cache.enabled and "newer reviewkit" in cache.disabled_reason and len(messages) == 1
    assert path.read_bytes() == before


def test_an_old_cache_file_is_migrated_and_keeps_its_entries(tmp_path):
    path = tmp_path / "results.sqlite3"
    conn = sqlite3.connect(path)  # schema of reviewkit <= 0.1: no model, size or last_used
    conn.execute("CREATE TABLE results (key TEXT PRIMARY KEY, probs TEXT NOT NULL)")
    conn.executemany(
        "INSERT INTO results VALUES (?, ?)",
        [(ResultCache.key("ns", t), json.dumps(_probs(t))) for t in ("old1", "old2")],
    )
    conn.commit()
    conn.close()
    cache = ResultCache(path)
    _fill(cache, ["new"], model="gemma")
    assert cache.get_many("ns", ["old1", "old2", "new"]) == {t: _probs(t) for t in ("old1", "old2", "new")}
    info = cache.info()
    assert info.entries == 3 and info.models.keys() == {"", "gemma"} and info.models[""][0] == 2
    assert "(model not recorded): 2 entries" in str(info)


# -- fails mid-run -------------------------------------------------------------------------


def test_a_full_database_skips_the_store_and_keeps_reading(fresh_cache):
    _fill(fresh_cache, ["kept"])
    pages = fresh_cache._conn.execute("PRAGMA page_count").fetchone()[0]
    fresh_cache._conn.execute(f"PRAGMA max_page_count = {pages}")  # the disk is full from now on
    big = [f"review {i} " * 30 for i in range(300)]
    _, messages = _warnings_of(_fill, fresh_cache, big)
    assert len(messages) == 1 and "full" in messages[0] and "REVIEWKIT_CACHE_MAX_MB" in messages[0]
    assert fresh_cache.enabled and fresh_cache.status.startswith("on (writes failing: the disk")
    _, again = _warnings_of(_fill, fresh_cache, big)
    assert again == []  # once per process
    assert fresh_cache.get_many("ns", ["kept", *big]) == {"kept": _probs("kept")}
    fresh_cache._conn.execute("PRAGMA max_page_count = 1073741823")  # space freed: stores resume
    _fill(fresh_cache, big)
    assert len(fresh_cache.get_many("ns", big)) == 300


_FULL_DISK_CHILD = r"""
import json, resource, signal, sys, warnings
from reviewkit.cache import ResultCache, CacheWarning
path, limit = sys.argv[1], int(sys.argv[2])
cache = ResultCache(path)
if limit:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    for chunk in range(60):
        cache.put_many("ns", [(f"text {chunk} {i} " * 4, [chunk / 100, i / 100]) for i in range(50)])
    stored = [c for c in range(60) if len(cache.get_many("ns", [f"text {c} {i} " * 4 for i in range(50)])) == 50]
print(json.dumps({"stored": stored, "status": cache.status,
                  "messages": [str(w.message) for w in caught if w.category is CacheWarning]}))
"""


def _fill_till_full(path: Path, limit: int = 0) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", _FULL_DISK_CHILD, str(path), str(limit)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_write_past_a_file_size_limit_is_reported_and_skipped(tmp_path):
    result = _fill_till_full(tmp_path / "results.sqlite3", limit=150_000)
    assert 0 < len(result["stored"]) < 60 and result["stored"] == list(range(len(result["stored"])))
    assert len(result["messages"]) == 1 and "storing results failed" in result["messages"][0]
    assert result["status"].startswith("on (writes failing")


def test_a_tiny_filesystem_fills_up_without_breaking(tmp_path):
    mount = tmp_path / "tiny"
    mount.mkdir()
    if (
        os.geteuid() != 0
        or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=160k", "tmpfs", str(mount)], capture_output=True
        ).returncode
        != 0
    ):
        pytest.skip("mounting a tmpfs needs root")
    try:
        result = _fill_till_full(mount / "results.sqlite3")
    finally:
        subprocess.run(["umount", str(mount)], check=True)
    assert 0 < len(result["stored"]) < 60
    assert len(result["messages"]) == 1 and "full" in result["messages"][0]


def test_a_read_of_damaged_pages_is_a_miss(tmp_path):
    path = tmp_path / "results.sqlite3"
    texts = [f"review {i} " * 10 for i in range(2000)]
    cache = ResultCache(path)
    _fill(cache, texts)
    cache.close()
    data = bytearray(path.read_bytes())
    data[len(data) // 2 :] = b"\x5a" * (len(data) - len(data) // 2)  # later pages overwritten
    path.write_bytes(bytes(data))
    cache, messages = _warnings_of(lambda: ResultCache(path))
    assert cache.enabled and messages == []  # the header is fine: the damage shows on reading
    found, messages = _warnings_of(cache.get_many, "ns", texts)
    assert all(found[t] == _probs(t) for t in found) and len(found) < len(texts)  # never a wrong value
    assert len(messages) == 1 and "a read failed" in messages[0] and "malformed" in messages[0]
    assert "cannot read it" in str(cache.info())
    assert cache.clear() == 0 and cache.enabled  # the damaged file is replaced by a fresh one
    _fill(cache, texts[:5])
    assert cache.get_many("ns", texts) == {t: _probs(t) for t in texts[:5]}


# -- shared by processes -------------------------------------------------------------------

_WRITER = r"""
import sys, warnings
warnings.simplefilter("error")  # any CacheWarning (a lock reaching the user) fails the writer
from reviewkit.cache import ResultCache
path, me = sys.argv[1], int(sys.argv[2])
def probs(text):
    first = (sum(map(ord, text)) % 997) / 997
    return [first, 1.0 - first]
cache = ResultCache(path)
for start in range(0, 240, 6):
    own = [f"writer {me} review {i}" for i in range(start, start + 6)]
    shared = [f"shared review {i}" for i in range(start, start + 6)]
    cache.put_many("ns", [(t, probs(t)) for t in own + shared], model=f"model-{me % 2}")
    got = cache.get_many("ns", own + shared)
    assert got == {t: probs(t) for t in own + shared}, "read back wrong"
print("ok")
"""


def test_writers_in_several_processes_at_once(tmp_path):
    path = tmp_path / "results.sqlite3"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(path), str(me)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for me in range(4)
    ]
    for proc in writers:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0 and out.strip() == "ok", err
    cache = ResultCache(path)
    texts = [f"writer {me} review {i}" for me in range(4) for i in range(240)]
    texts += [f"shared review {i}" for i in range(240)]
    assert cache.get_many("ns", texts) == {t: _probs(t) for t in texts}
    info = cache.info()
    assert info.entries == len(texts) == sum(n for n, _ in info.models.values())
    assert info.models["model-0"][0] + info.models["model-1"][0] == len(texts)


def test_a_forked_child_opens_its_own_connection(fresh_cache):
    _fill(fresh_cache, ["before fork"])
    pid = os.fork()
    if pid == 0:
        _fill(fresh_cache, ["from child"])
        os._exit(0 if fresh_cache.get_many("ns", ["before fork"]) else 1)
    assert os.waitpid(pid, 0)[1] == 0
    assert fresh_cache.get_many("ns", ["from child"]) == {"from child": _probs("from child")}


# -- bounded -------------------------------------------------------------------------------


def test_the_least_recently_used_entries_are_evicted_at_the_bound(tmp_path):
    cache = ResultCache(tmp_path / "results.sqlite3", max_mb=0.05)
    cache.touch_after_s = 0  # every hit refreshes last_used (default: at most hourly)
    first = [f"early review {i}" for i in range(100)]
    _fill(cache, first)
    assert cache.get_many("ns", first[:10]) == {t: _probs(t) for t in first[:10]}  # used again
    later: list[str] = []
    while len(cache) == len(first) + len(later):  # until the bound first evicts
        later += [f"later review {len(later) + i}" for i in range(10)]
        _fill(cache, later[-10:])
        assert len(later) < 1000, "nothing was ever evicted"
    assert len(cache.get_many("ns", later)) == len(later)
    evicted = set(first) - set(cache.get_many("ns", first))
    assert evicted and evicted <= set(first[10:])  # the least recently used went first
    assert cache.info().entry_bytes <= 0.9 * 50_000

    for batch in range(40):  # far past the bound: it holds, on disk too
        _fill(cache, [f"more {batch} {i}" for i in range(50)])
    info = cache.info()
    assert info.entry_bytes <= 50_000 and 150 < info.entries < 300
    assert (tmp_path / "results.sqlite3").stat().st_size <= 2 * 50_000 + 64 * 1024
    assert len(cache.get_many("ns", [f"more 39 {i}" for i in range(50)])) == 50


def test_the_bound_setting(monkeypatch):
    monkeypatch.setenv("REVIEWKIT_CACHE_MAX_MB", "12.5")
    assert default_max_mb() == 12.5
    monkeypatch.setenv("REVIEWKIT_CACHE_MAX_MB", "lots")
    value, messages = _warnings_of(default_max_mb)
    assert value == 1024 and len(messages) <= 1  # reported once per process
    with pytest.raises(ValueError, match="max_mb"):
        ResultCache(":memory:", max_mb=-1)


# -- seen and cleared ----------------------------------------------------------------------


def test_default_cache_recovers_when_the_location_is_fixed(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("REVIEWKIT_CACHE_DIR", str(blocker / "sub"))
    with pytest.warns(CacheWarning, match="cache is off"):
        assert default_cache().enabled is False
    monkeypatch.setenv("REVIEWKIT_CACHE_DIR", str(tmp_path / "good"))
    assert default_cache().enabled is True


def test_cache_info_in_a_notebook(tmp_path, monkeypatch):
    import reviewkit

    monkeypatch.setenv("REVIEWKIT_CACHE_DIR", str(tmp_path / "c"))
    info = reviewkit.cache_info()
    assert info.entries == 0 and not info.exists and not (tmp_path / "c").exists()  # nothing created
    cache = ResultCache()
    _fill(cache, ["a", "b"], model="embedded:gemma")
    info = cache_info()
    assert (info.entries, info.models["embedded:gemma"][0]) == (2, 2) and info.disk_bytes > 0
    text = repr(info)
    assert str(tmp_path / "c" / "results.sqlite3") in text and "embedded:gemma: 2 entries" in text


def _cli(*args: str, cache_dir: Path) -> subprocess.CompletedProcess:
    script = Path(sys.executable).with_name("reviewkit")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "reviewkit"]
    return subprocess.run(
        [*command, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT), "REVIEWKIT_CACHE_DIR": str(cache_dir)},
    )


def test_cli_cache_info_and_clear(tmp_path):
    cache = ResultCache(tmp_path / "results.sqlite3")
    _fill(cache, ["a", "b", "c"], model="model-a")
    _fill(cache, ["d", "e"], model="model-b")
    cache.close()
    done = _cli("cache", "info", cache_dir=tmp_path)
    assert done.returncode == 0, done.stderr
    for needle in (str(tmp_path / "results.sqlite3"), "5 entries", "model-a: 3 entries", "model-b: 2 entries"):
        assert needle in done.stdout
    done = _cli("cache", "clear", "--model", "model-a", cache_dir=tmp_path)
    assert done.returncode == 0 and "deleted 3 entries of model 'model-a'" in done.stdout
    info = json.loads(_cli("cache", "info", "--json", cache_dir=tmp_path).stdout)
    assert info["entries"] == 2 and list(info["models"]) == ["model-b"]
    assert _cli("cache", "clear", cache_dir=tmp_path).stdout.startswith("deleted 2 entries")
    assert ResultCache(tmp_path / "results.sqlite3").get_many("ns", ["d"]) == {}


def test_cli_cache_commands_load_no_engine(tmp_path):
    done = run_python(
        "import sys\nfrom reviewkit.cli import main\nmain(['cache', 'info'])\n"
        "heavy = [m for m in ('vllm', 'torch', 'pandas') if m in sys.modules]\n"
        "assert not heavy, heavy",
        env={"PYTHONPATH": str(ROOT), "REVIEWKIT_CACHE_DIR": str(tmp_path)},
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    blocker = tmp_path / "file"
    blocker.write_text("x")
    done = _cli("cache", "clear", cache_dir=blocker / "sub")
    assert done.returncode == 1 and "cannot clear" in done.stderr


# -- the analysis on the real engine -------------------------------------------------------

REVIEWS = [
    "Fantastic dumplings, friendly staff!",
    "Cold soup and rude service.",
    None,
    "정말 맛있어요, 또 올게요",
    "최악이에요. 다시는 안 가요",
    "Fantastic dumplings, friendly staff!",
    "Lovely view, the best pasta in town.",
    "Overpriced and the fish was not fresh.",
    "직원분들이 친절하고 음식이 훌륭해요",
    "음식이 너무 짜고 불친절했어요",
    "   ",
    "Great coffee, cozy corner seats.",
    "Waited an hour, food arrived cold.",
]


def _same(out, expected) -> None:
    import pandas as pd

    pd.testing.assert_frame_equal(out, expected, check_exact=False, atol=2e-3)


@pytest.mark.engine
def test_analysis_is_complete_and_correct_with_a_broken_cache(engine, tmp_path, monkeypatch):
    import pandas as pd

    import reviewkit

    df = pd.DataFrame({"content": REVIEWS, "stars": range(len(REVIEWS))}, index=range(100, 100 + len(REVIEWS)))
    unique = len({r for r in REVIEWS if r and r.strip()})
    expected = reviewkit.analyze(df, cache=False, chunk_size=4, progress=False)
    assert expected["sentiment"].notna().sum() == len(REVIEWS) - 2

    # a corrupt file where the default cache lives: moved aside, a fresh cache serves the re-run
    monkeypatch.setenv("REVIEWKIT_CACHE_DIR", str(tmp_path / "corrupt"))
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "results.sqlite3").write_bytes(b"half-written\x00" * 500)
    with pytest.warns(CacheWarning, match="moved it aside"):
        _same(reviewkit.analyze(df, chunk_size=4, progress=False), expected)
    _same(reviewkit.analyze(df, chunk_size=4, progress=False), expected)
    assert (reviewkit.last_run().cached, reviewkit.last_run().computed) == (unique, 0)

    # a folder that cannot be created: the cache is off, everything is computed
    (tmp_path / "blocker").write_text("x")
    monkeypatch.setenv("REVIEWKIT_CACHE_DIR", str(tmp_path / "blocker" / "cache"))
    with pytest.warns(CacheWarning, match="cache is off"):
        _same(reviewkit.analyze(df, chunk_size=4, progress=False), expected)
    assert reviewkit.last_run().computed == unique
    assert reviewkit.last_run().cache.startswith("off") and "result cache off" in str(reviewkit.last_run())

    # the disk fills up after the first chunk: every row still comes back, correct
    full = ResultCache(tmp_path / "full.sqlite3")
    _fill_after_each_store(full)
    with pytest.warns(CacheWarning, match="storing results failed"):
        _same(reviewkit.analyze(df, cache=full, chunk_size=4, progress=False), expected)
    assert reviewkit.last_run().computed == unique
    _same(reviewkit.analyze(df, cache=full, chunk_size=4, progress=False), expected)
    assert 0 < reviewkit.last_run().cached < unique  # the chunk stored before the disk filled up


def _fill_after_each_store(cache: ResultCache) -> None:
    """After each store, the database file may not grow and its free space is taken: a full disk."""
    store = cache.put_many
    fillers = itertools.count()

    def store_then_fill(space, results, *, model=""):
        store(space, results, model=model)
        conn = cache._conn
        conn.execute(f"PRAGMA max_page_count = {conn.execute('PRAGMA page_count').fetchone()[0]}")
        try:
            for _ in range(100_000):
                conn.execute(
                    "INSERT INTO results (key, probs, size, last_used) VALUES (?, '[]', 0, 0)",
                    (f"filler {next(fillers)}",),
                )
        except sqlite3.OperationalError as exc:
            assert "full" in str(exc)

    cache.put_many = store_then_fill
