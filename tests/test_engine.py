"""The engine is loaded once per process and refuses silent reloads."""

import subprocess
import sys
import time

import pytest

import reviewkit
from conftest import run_python
from reviewkit.engine import EngineSettingsMismatch


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


def test_unload_stops_the_engine_processes_and_load_works_again():
    code = """
import psutil, reviewkit
if __name__ == '__main__':
    reviewkit.load('embedded')
    me = psutil.Process()
    # vLLM's engine core and workers (not multiprocessing's own resource tracker)
    children = [c for c in me.children(recursive=True)
                if 'resource_tracker' not in ' '.join(c.cmdline())]
    print('children', len(children))
    print('unloaded', reviewkit.unload(), reviewkit.unload())
    gone, alive = psutil.wait_procs(children, timeout=30)
    print('alive', len(alive), [c.cmdline() for c in alive])
    print('current', reviewkit.current_engine())
"""
    proc = run_python(code, timeout=400)
    out = proc.stdout
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "unloaded True False" in out
    assert "alive 0 []" in out and "current None" in out
    assert int(out.split("children ")[1].split()[0]) >= 1


def test_script_without_main_guard_gets_a_clear_message(tmp_path):
    script = tmp_path / "unguarded.py"
    script.write_text("import reviewkit\nreviewkit.load('embedded')\nprint('loaded')\n")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=400)
    assert proc.returncode != 0
    assert "if __name__ == '__main__':" in proc.stderr
    assert "re-imports the main script" in proc.stderr or "re-imports the main" in proc.stderr


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
