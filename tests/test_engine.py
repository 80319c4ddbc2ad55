"""The engine is loaded once per process and refuses silent reloads."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rk_support import run_python

import reviewkit
from reviewkit.process_engine import EngineSettingsMismatch


def test_second_load_with_same_settings_returns_the_same_engine(engine):
    started = time.perf_counter()
    again = reviewkit.load("embedded")
    elapsed = time.perf_counter() - started
    assert again is engine
    assert reviewkit.load() is engine  # no argument resolves to the same settings here
    assert reviewkit.current_engine() is engine
    print(f"second load(): {elapsed * 1000:.3f} ms")


def test_different_settings_raise_and_say_how_to_switch(engine):
    with pytest.raises(EngineSettingsMismatch) as info:
        reviewkit.load("embedded", max_model_len=1024)
    message = str(info.value)
    assert "reviewkit.unload()" in message and "reload=True" in message
    assert reviewkit.current_engine() is engine  # still loaded, untouched


def test_engine_reports_cpu_defaults(engine):
    assert engine.device == "cpu"
    assert engine.max_model_len == 2048
    assert engine.prefix_block_size == 32
    assert engine.model_id.startswith("embedded:gemma-3-270m-")
    assert "embedded" in repr(engine)


def test_engine_process_has_tcmalloc_mapped(engine):
    from reviewkit.engines.local import find_tcmalloc

    assert find_tcmalloc(), "the set-up (scripts/system-packages.sh) installs libtcmalloc-minimal4"
    pids = engine.engine_pids()
    assert pids, "vLLM's engine process not found"
    maps = [Path(f"/proc/{pid}/maps").read_text() for pid in pids]
    assert any("libtcmalloc" in m for m in maps)
    assert "libtcmalloc" not in Path("/proc/self/maps").read_text()  # only vLLM's engine process
    assert "LD_PRELOAD" not in os.environ  # restored after the engine process started


def test_tcmalloc_preload_leaves_user_settings_alone():
    from reviewkit.engines.local import find_tcmalloc, tcmalloc_preload

    assert tcmalloc_preload({"LD_PRELOAD": "/usr/lib/libmine.so"}) is None
    assert tcmalloc_preload({"REVIEWKIT_TCMALLOC": "0"}) is None
    assert tcmalloc_preload({"REVIEWKIT_TCMALLOC": "off"}) is None
    assert tcmalloc_preload({}) == find_tcmalloc()


@pytest.mark.own_engine
def test_script_without_main_guard_gets_a_clear_message(tmp_path):
    script = tmp_path / "unguarded.py"
    script.write_text("import reviewkit\nreviewkit.load('embedded')\nprint('loaded')\n")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=400)
    assert proc.returncode != 0
    assert "if __name__ == '__main__':" in proc.stderr
    assert "re-imports the main script" in proc.stderr or "re-imports the main" in proc.stderr


@pytest.mark.own_engine
def test_out_of_memory_at_load_names_the_fix():
    code = """
import reviewkit
if __name__ == '__main__':
    try:
        reviewkit.load('embedded')
    except reviewkit.EngineLoadError as e:
        print('LOAD-ERROR', e)
"""
    proc = run_python(code, env={"VLLM_CPU_KVCACHE_SPACE": "4000"}, timeout=400)  # 4 TB of KV cache
    assert "LOAD-ERROR" in proc.stdout, proc.stderr[-3000:]
    assert "less than requested memory" in proc.stderr  # vLLM's own reason, shown above ours
    for fix in ("VLLM_MAX_MODEL_LEN", "gpu_memory_utilization", "VLLM_CPU_KVCACHE_SPACE"):
        assert fix in proc.stdout


def test_loading_marks_the_activity_file_busy(monkeypatch):
    """A 5-minute download or weight load at 0 % GPU is work: the watchdog must see it."""
    from reviewkit import activity, process_engine

    seen = {}

    def start():
        seen["during"] = activity.read_activity()
        raise RuntimeError("stop here: the state during the load is what this test reads")

    monkeypatch.setattr(process_engine, "_engine", None)
    with pytest.raises(RuntimeError, match="stop here"):
        process_engine._install(("settings",), start, reload=False, warm_up=False)
    assert seen["during"]["state"] == "busy" and seen["during"]["label"] == "load"
    assert activity.read_activity()["state"] == "idle"


def test_a_score_cached_in_one_dtype_is_not_reused_in_another(engine, fresh_cache, monkeypatch):
    """bfloat16 and float32 scores of the same weights differ (up to ~0.03): separate cache entries."""
    texts = ["the dtype is part of the cache key"]
    reviewkit.score_texts(texts, cache=fresh_cache, progress=False)
    assert reviewkit.score_texts(texts, cache=fresh_cache, progress=False).stats.cached == 1
    monkeypatch.setattr(engine, "dtype", "bfloat16" if engine.dtype == "float32" else "float32")
    assert reviewkit.score_texts(texts, cache=fresh_cache, progress=False).stats.computed == 1
