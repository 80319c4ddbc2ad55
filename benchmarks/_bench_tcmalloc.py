"""The tcmalloc phase: reviewkit on engines loaded with and without the tcmalloc preload.

``reviewkit.load()`` preloads libtcmalloc into vLLM's engine process on the CPU build
(``REVIEWKIT_TCMALLOC=0`` turns it off). The preload is fixed when the engine process
starts, so the comparison needs one engine per setting, and only one engine may exist at
a time: the phase loads engines one after the other, alternating off / on / off / ...,
each timed on the same reviews, and the speed-up is the median of the ratios of
neighbouring engines (with off, on, off a linear drift of the machine's load cancels).
Between two engines, with none loaded, ``between`` runs (the llama.cpp rounds).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from collections.abc import Callable, Sequence
from typing import Any

from _bench_data import ratio
from _bench_monitor import Recorder
from _bench_paths import prefix_prompts, reset_prefix_cache, run_reviewkit

WARM_UP_TEXTS = ["warm-up review, fine .", "워밍업 리뷰 괜찮아요"]


def why_not_compared() -> str | None:
    """Why the preload cannot be compared on this machine, or None when it can."""
    from reviewkit.engines import local

    if not local.is_cpu_build():
        return "not vLLM's CPU build (reviewkit preloads tcmalloc only there)"
    if os.environ.get("LD_PRELOAD"):
        return "LD_PRELOAD is set by the user: reviewkit leaves it alone in both settings"
    if local.find_tcmalloc() is None:
        return "libtcmalloc is not installed (apt-get install libtcmalloc-minimal4)"
    return None


def tcmalloc_mapped(engine: Any) -> bool | None:
    """Whether libtcmalloc is mapped into vLLM's engine process(es) (None: none found).

    Only processes vLLM names ``VLLM::...``: helpers such as multiprocessing's resource
    tracker outlive an engine and keep the environment of the first one.
    """
    import psutil

    found = None
    for proc in psutil.Process().children(recursive=True):
        try:
            if "VLLM" not in proc.name():
                continue
            with open(f"/proc/{proc.pid}/maps") as fh:
                found = bool(found) or "libtcmalloc" in fh.read()
        except (OSError, psutil.Error):
            continue
    return found


def _load(reviewkit: Any, model: str | None, preload: bool) -> Any:
    from reviewkit.engines.local import TCMALLOC_ENV

    saved = os.environ.pop(TCMALLOC_ENV, None)
    if not preload:
        os.environ[TCMALLOC_ENV] = "0"
    try:
        return reviewkit.load(model, reload=True)
    finally:
        os.environ.pop(TCMALLOC_ENV, None)
        if saved is not None:
            os.environ[TCMALLOC_ENV] = saved


def run_phase(
    args: argparse.Namespace,
    reviewkit: Any,
    rec: Recorder,
    texts: Sequence[str],
    between: Callable[[int], None] | None = None,
) -> list[dict[str, Any]]:
    """Load ``args.tcmalloc_engines`` engines in turn (off first), time ``args.tcmalloc_rounds``
    rounds of ``analyze`` on each; ``between(i)`` runs after engine i is unloaded."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    engines = []
    for i in range(args.tcmalloc_engines):
        preload = i % 2 == 1
        state = "on" if preload else "off"
        print(f"benchmark: loading engine {i} (tcmalloc {state})", file=sys.stderr, flush=True)
        engine, _ = rec.run(f"load {i} (tcmalloc {state})", lambda p=preload: _load(reviewkit, args.model, p))
        entry: dict[str, Any] = {
            "tcmalloc": preload,
            "mapped": tcmalloc_mapped(engine),
            "load_seconds": engine.load_seconds,
            "rounds": [],
        }
        if entry["mapped"] is not None and entry["mapped"] != preload:
            print(
                f"warning: engine {i} should {'' if preload else 'not '}have tcmalloc mapped, but "
                f"{'has' if entry['mapped'] else 'has not'}",
                file=sys.stderr,
            )
        rec.run(
            f"warm-up {i} (tcmalloc {state})",
            lambda: run_reviewkit(WARM_UP_TEXTS, cache=False, chunk_size=args.chunk_size),
        )
        prefixes = [TokensPrompt(prompt_token_ids=p) for p in prefix_prompts(engine)]

        def warm(engine: Any = engine, prefixes: list[Any] = prefixes) -> None:
            engine.llm.generate(prefixes, SamplingParams(max_tokens=1), use_tqdm=False)

        for r in range(args.tcmalloc_rounds):
            reset_prefix_cache(engine, warm)
            _, s = rec.run(
                f"reviewkit n={len(texts)} tcmalloc {state} engine {i} round {r}",
                lambda: run_reviewkit(texts, cache=False, chunk_size=args.chunk_size),
            )
            entry["rounds"].append({"seconds": s, "cpu_seconds": rec.last_cpu})
        del engine
        rec.run(f"unload {i} (tcmalloc {state})", reviewkit.unload)
        engines.append(entry)
        if between is not None:
            between(i)
    return engines


def engine_rate(entry: dict[str, Any], n: int) -> float:
    return statistics.median(n / r["seconds"] for r in entry["rounds"])


def figures(engines: list[dict[str, Any]], n: int) -> dict[str, Any]:
    """Rates per engine, the speed-up from neighbouring engines, and its CPU-time cross-check."""
    rates = [engine_rate(e, n) for e in engines]
    neighbours = [
        ratio(rates[i + 1], rates[i]) if engines[i + 1]["tcmalloc"] else ratio(rates[i], rates[i + 1])
        for i in range(len(engines) - 1)
    ]
    on = [r for e, r in zip(engines, rates, strict=True) if e["tcmalloc"]]
    off = [r for e, r in zip(engines, rates, strict=True) if not e["tcmalloc"]]

    def cpu_per_review(preload: bool) -> float | None:
        cpus = [r["cpu_seconds"] for e in engines if e["tcmalloc"] == preload for r in e["rounds"]]
        return None if not cpus or None in cpus else statistics.median(cpus) / n

    return {
        "n": n,
        "order": ["on" if e["tcmalloc"] else "off" for e in engines],
        "mapped": [e["mapped"] for e in engines],
        "reviews_per_s_per_engine": rates,
        "seconds_per_round": [[r["seconds"] for r in e["rounds"]] for e in engines],
        "with_tcmalloc_reviews_per_s": statistics.median(on) if on else None,
        "without_tcmalloc_reviews_per_s": statistics.median(off) if off else None,
        "neighbour_ratios": neighbours,
        "speedup": statistics.median(neighbours) if neighbours else None,
        "cpu_seconds_per_review": {"with": cpu_per_review(True), "without": cpu_per_review(False)},
        "speedup_from_cpu_seconds": ratio(cpu_per_review(False), cpu_per_review(True)),
        "note": "engines loaded one after the other, alternating (off first); each engine's rate is the median "
        "of its rounds; the speed-up is the median of the on/off ratios of neighbouring engines",
    }
