"""A new user's first minutes: bad arguments refused before any loading, a load that says
what it is doing, and a demo that prints one rate, runs from a script on standard input and
exits without vLLM's kill warnings."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from rk_support import ROOT

_CASES = r"""
import json, sys
from reviewkit.cli import main
import reviewkit

messages = {}
for name, argv in json.loads(sys.argv[1]).items():
    try:
        main(argv)
        messages[name] = "no error"
    except SystemExit as exc:
        messages[name] = str(exc)
print(json.dumps({"messages": messages, "vllm": "vllm" in sys.modules, "torch": "torch" in sys.modules,
                  "engine": reviewkit.current_engine() is not None}))
"""


def test_bad_arguments_are_refused_before_anything_loads(tmp_path):
    good = tmp_path / "reviews.csv"
    pd.DataFrame({"content": ["Great noodles.", "Cold soup."]}).to_csv(good, index=False)
    (tmp_path / "garbage.parquet").write_bytes(b"not a parquet file")
    (tmp_path / "empty.csv").write_text("")
    cases = {
        "xlsx output": ["analyze", str(good), "-o", str(tmp_path / "out.xlsx")],
        "missing input": ["analyze", str(tmp_path / "missing.csv"), "-o", str(tmp_path / "o.parquet")],
        "bad column": ["analyze", str(good), "--text", "review"],
        "malformed file": ["analyze", str(tmp_path / "garbage.parquet")],
        "empty file": ["analyze", str(tmp_path / "empty.csv")],
        "one label": ["analyze", str(good), "--labels", "positive"],
        "overwrite input": ["analyze", str(good), "-o", str(good)],
        "output is a folder": ["analyze", str(good), "-o", str(tmp_path)],
        "zero price": ["demo", "--price-per-hour", "0"],
    }
    proc = subprocess.run(
        [sys.executable, "-c", _CASES, json.dumps(cases)], capture_output=True, text=True, timeout=120, cwd=str(ROOT)
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    messages = result["messages"]
    expected = {
        "xlsx output": r"cannot write .*out\.xlsx: use \.csv, \.parquet or \.jsonl",
        "missing input": r"input file .*missing\.csv does not exist",
        "bad column": r"column 'review' not in .*\['content'\]",
        "malformed file": r"cannot read .*garbage\.parquet: \w+",
        "empty file": r"cannot read .*empty\.csv: \w+",
        "one label": r"--labels positive: need at least two labels",
        "overwrite input": r"would overwrite the input",
        "output is a folder": r"cannot write",
        "zero price": r"--price-per-hour must be positive",
    }
    for name, pattern in expected.items():
        assert re.search(pattern, messages[name]), f"{name}: {messages[name]!r}"
    # Nothing was loaded to find out: no vLLM, no torch, no engine.
    assert result == {**result, "vllm": False, "torch": False, "engine": False}
    assert not (tmp_path / "out.xlsx").exists() and good.read_text().startswith("content")


def test_load_status_outside_jupyter_is_one_line_per_step(capsys):
    from reviewkit import loadstatus

    loadstatus.step("nothing shown outside a load")
    with loadstatus.shown():
        loadstatus.step("starting vLLM with embedded")
        with loadstatus.shown():  # a nested load adds no second status
            loadstatus.step("warming up")
    with pytest.raises(RuntimeError), loadstatus.shown():
        raise RuntimeError("boom")
    lines = capsys.readouterr().err.splitlines()
    assert lines[:3] == [
        "reviewkit: loading the engine...",
        "reviewkit: starting vLLM with embedded...",
        "reviewkit: warming up...",
    ]
    assert re.fullmatch(r"reviewkit: engine ready after \d+\.\d s", lines[3])
    assert lines[4] == "reviewkit: loading the engine..."
    assert re.fullmatch(r"reviewkit: loading failed after \d+\.\d s", lines[5]) and len(lines) == 6


_DEMO_FROM_STDIN = """
import threading
import psutil
import reviewkit
from reviewkit.cli import main

def engine_processes():  # vLLM's engine core and workers, not multiprocessing's resource tracker
    return [c for c in psutil.Process().children(recursive=True) if 'resource_tracker' not in ' '.join(c.cmdline())]

def watch(seen, stop):  # while the demo runs: vLLM's processes, and whether tcmalloc got into them
    while not stop.is_set():
        for child in engine_processes():
            try:
                seen[child.pid] = 'libtcmalloc' in open(f'/proc/{child.pid}/maps').read()
            except OSError:
                pass
        stop.wait(0.5)

if __name__ == '__main__':
    seen, stop = {}, threading.Event()
    watcher = threading.Thread(target=watch, args=(seen, stop), daemon=True)
    watcher.start()
    code = main(['demo', '--no-cache'])
    stop.set()
    watcher.join()
    gone, alive = psutil.wait_procs(engine_processes(), timeout=30)
    print('WATCHED', len(seen), 'tcmalloc', any(seen.values()), 'alive', len(alive),
          'current', reviewkit.current_engine(), 'unload', reviewkit.unload())
    raise SystemExit(code)
"""


@pytest.mark.own_engine
def test_demo_from_a_stdin_script_prints_one_rate_keeps_the_users_preload_and_exits_cleanly(tmp_path):
    """The whole demo as a user runs it, in a fresh process with an empty result cache, and
    from ``python - <<EOF`` (no main file for vLLM's spawned processes to re-import) with
    the user's own ``LD_PRELOAD`` (one engine start covers both)."""
    libm = "/lib/x86_64-linux-gnu/libm.so.6" if Path("/lib/x86_64-linux-gnu/libm.so.6").exists() else "libm.so.6"
    proc = subprocess.run(
        [sys.executable, "-"],
        input=_DEMO_FROM_STDIN,
        capture_output=True,
        text=True,
        timeout=420,
        cwd=str(ROOT),
        env={**os.environ, "LD_PRELOAD": libm, "REVIEWKIT_CACHE_DIR": str(tmp_path / "cache")},
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    # vLLM kills engine processes that take over 5 s to exit, and says so; unload waits for them.
    assert "force killing" not in output and "still running" not in output, output[-3000:]
    assert "leaked shared_memory" not in output, output[-3000:]
    # The demo loaded and unloaded its engine: its processes ran and are gone. vLLM renames its
    # processes (VLLM::EngineCore), which overwrites /proc/<pid>/environ, so their memory maps
    # are the evidence that the user's LD_PRELOAD was kept: no tcmalloc was added.
    watched = re.search(r"WATCHED (\d+) tcmalloc (\w+) alive (\d+) current (\w+) unload (\w+)", proc.stdout)
    assert watched, proc.stdout[-1500:]
    assert int(watched[1]) >= 1 and watched.groups()[1:] == ("False", "0", "None", "False")
    # One rate on stdout, explained, and the cost line uses it.
    demo_output = proc.stdout[: watched.start()]
    rates = re.findall(r"(\d+(?:\.\d+)?) ?reviews?/s", demo_output)
    assert len(rates) == 1, demo_output[-1500:]
    assert re.search(
        rf"Throughput: {re.escape(rates[0])} reviews/s = 48 reviews computed in [\d.]+ s inside "
        r"the engine",
        demo_output,
    )
    assert re.search(r"Cost at \$0\.69/h at that throughput: \$\d+\.\d{4} per 1,000 reviews", demo_output)
    assert "48 computed" in demo_output
    # The load said what it was doing (stderr; a widget in Jupyter, see test_browser).
    assert "reviewkit: starting vLLM with embedded..." in proc.stderr
    assert re.search(r"reviewkit: engine ready after \d+\.\d s", proc.stderr)
