"""Throughput benchmark: reviewkit against the seed's way and the raw engine, in one run.

Everything runs in one process on one model, one vLLM engine at a time:

1. the engine with prefix caching (load time, optionally after a fresh conversion);
2. interleaved rounds of, on the same reviews:
   - ``reviewkit.analyze`` with the result cache off,
   - the raw engine prefilling the very same prompt token ids (``max_tokens=1``, no
     log-probabilities, nothing else): the ceiling,
   - the seed's way: one greedy JSON ``{"label": ..., "reason": ...}`` per review
     (at most 64 tokens, stopped at the closing brace), parsed;
3. ``reviewkit.analyze`` on ``--scale-n`` reviews (time per review against ``--n``);
4. one DataFrame analyzed twice with the result cache on (first run, cached re-run);
5. the engine again with prefix caching off, and reviewkit on it;
6. tcmalloc: engines loaded one after the other without and with reviewkit's tcmalloc
   preload into vLLM's engine process (off, on, off, ...), reviewkit timed on each;
7. optional (``--llama-cpp PYTHON``): the same reviews and prompts through
   llama-cpp-python on the packaged GGUF file, in the gaps between phase 6's engines.

Before each timed phase the prefix cache is reset and only the shared prompt prefixes
are warmed, so no phase gets cache hits from an earlier one beyond that prefix. Reviews
come from the labelled CSVs in ``--data-dir`` (Korean and English interleaved), cycled
and numbered ``(k) text`` so texts stay distinct, repeats share no cached block, and
every review carries the same extra tokens at any N.

Prints a Markdown table and writes everything to ``--json``. Run it as a script (vLLM
spawns its workers): ``python benchmarks/throughput.py --json out.json`` (see
benchmarks/README.md). The machine may be shared: ratios come from interleaved rounds,
and the JSON records the load average and the process tree's CPU use per phase. The
phases' code is in the ``_bench_*`` modules beside this script.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import resource
import shlex
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import _bench_llamacpp
import _bench_tcmalloc
from _bench_data import REPO, accuracy, find_data_dir, load_reviews, make_reviews
from _bench_figures import core_figures
from _bench_monitor import Monitor, Recorder, host_info
from _bench_paths import (
    prefix_prompts,
    prefix_tokens_of,
    reset_prefix_cache,
    reviewkit_prompts,
    run_raw_engine,
    run_reviewkit,
)
from _bench_report import TARGETS, markdown, met
from _bench_seed import run_seed_style, seed_uses_chat, seed_warm


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write all results to this JSON file")
    parser.add_argument("--n", type=int, default=None, help="reviews per measured run (default 1000)")
    parser.add_argument("--scale-n", type=int, default=None, help="reviews of the scaling run (default 5000)")
    parser.add_argument(
        "--seed-n", type=int, default=None, help="reviews per round of the seed's way (default 200; it is slow)"
    )
    parser.add_argument(
        "--no-prefix-n", type=int, default=None, help="reviews of the prefix-caching-off run (default 300)"
    )
    parser.add_argument(
        "--rounds", type=int, default=None, help="interleaved rounds of reviewkit / raw engine / seed's way (default 3)"
    )
    parser.add_argument("--quick", action="store_true", help="small N for a smoke run (a few minutes on 2 CPU cores)")
    parser.add_argument(
        "--model",
        default=None,
        help="model for reviewkit.load, e.g. smollm2 (default: reviewkit's default: LLM_MODEL, "
        "the pod model on a CUDA GPU, else the embedded Gemma)",
    )
    parser.add_argument(
        "--measure-conversion",
        action="store_true",
        help="convert the packaged model (--model, default embedded) into a fresh temporary folder first and time it",
    )
    parser.add_argument(
        "--data-dir", default=None, help="folder with the labelled CSVs (default: tests/data in the repo)"
    )
    parser.add_argument("--chunk-size", type=int, default=None, help="analyze(chunk_size=...) (default: reviewkit's)")
    parser.add_argument("--max-tokens", type=int, default=64, help="generation limit of the seed's way")
    parser.add_argument(
        "--tcmalloc-engines",
        type=int,
        default=None,
        help="engines loaded in turn without / with the tcmalloc preload (default 3: off, on, off; 0 skips the phase)",
    )
    parser.add_argument(
        "--tcmalloc-rounds",
        type=int,
        default=None,
        help="timed rounds of reviewkit on --n reviews per tcmalloc engine (default 2)",
    )
    parser.add_argument(
        "--llama-cpp",
        metavar="PYTHON",
        default=None,
        help="also score the reviews with llama-cpp-python, run by this Python (a virtualenv "
        "with llama_cpp; see benchmarks/README.md)",
    )
    parser.add_argument(
        "--llama-n",
        type=int,
        default=None,
        help="reviews per llama.cpp round, the first of the --n reviews (default 300)",
    )
    args = parser.parse_args(argv)
    quick = dict(
        n=200, scale_n=600, seed_n=40, no_prefix_n=60, rounds=1, tcmalloc_engines=2, tcmalloc_rounds=1, llama_n=100
    )
    full = dict(
        n=1000, scale_n=5000, seed_n=200, no_prefix_n=300, rounds=3, tcmalloc_engines=3, tcmalloc_rounds=2, llama_n=300
    )
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    for key in ("n", "scale_n", "seed_n", "no_prefix_n", "rounds"):
        if getattr(args, key) < 1:
            parser.error(f"--{key.replace('_', '-')} must be at least 1")
    if args.tcmalloc_engines < 0 or args.tcmalloc_rounds < 1 or not 1 <= args.llama_n <= args.n:
        parser.error("--tcmalloc-engines must be at least 0, --tcmalloc-rounds at least 1, --llama-n between 1 and --n")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0], REPO)] + sys.argv[1:])
    data_dir = find_data_dir(args.data_dir)
    base = load_reviews(data_dir)
    llama_version = _bench_llamacpp.check_python(args.llama_cpp) if args.llama_cpp else None
    # A private result cache: nothing cached by other runs leaks into first_run_seconds.
    cache_dir = Path(tempfile.mkdtemp(prefix="rk-bench-cache-"))
    os.environ["REVIEWKIT_CACHE_DIR"] = str(cache_dir)
    conversion_dir = Path(tempfile.mkdtemp(prefix="rk-bench-models-")) if args.measure_conversion else None

    import reviewkit
    from reviewkit.cache import ResultCache

    monitor = Monitor()
    rec = Recorder(monitor)
    started_at = _dt.datetime.now().astimezone()
    loadavg_start = os.getloadavg()
    results: dict[str, Any] = {}
    try:
        results = measure(args, base, rec, monitor, conversion_dir, cache_dir, ResultCache, reviewkit)
        if llama_version:
            results["llama_cpp"]["version_checked"] = llama_version
    finally:
        monitor.stop()
        reviewkit.unload()
        shutil.rmtree(cache_dir, ignore_errors=True)
        if conversion_dir is not None:
            shutil.rmtree(conversion_dir, ignore_errors=True)

    usage_self = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    usage_children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    results["memory"] = {
        "peak_rss_tree_bytes": monitor.peak_rss,
        "peak_rss_tree_note": "sum of the RSS of this process and its children, sampled every 0.25 s "
        "(shared pages are counted once per process)",
        "maxrss_self_bytes": usage_self,
        "maxrss_largest_child_bytes": usage_children,
        "peak_gpu_memory_used_bytes": monitor.peak_gpu,
    }
    results["run"] = {
        "date": started_at.date().isoformat(),
        "started_at": started_at.isoformat(timespec="seconds"),
        "command": command,
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "data_dir": str(data_dir),
        "host": host_info(),
        "loadavg_start": loadavg_start,
        "loadavg_end": os.getloadavg(),
        "phases": rec.phases,
    }
    busy_load = 2.5 * rec.cores
    results["run"]["busy_phases"] = [p["phase"] for p in rec.phases if p["loadavg_1m"] > busy_load]
    results["run"]["busy_load_threshold"] = busy_load
    results["targets"] = {
        k: {"target": v, "value": results["ratios"].get(k), "met": met(k, results["ratios"].get(k), v)}
        for k, v in TARGETS.items()
    }
    print(markdown(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, ensure_ascii=False, default=_json_default) + "\n")
        print(f"\nwrote {args.json}", file=sys.stderr)
    return 0


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def measure(
    args: argparse.Namespace,
    base: list[tuple[str, str]],
    rec: Recorder,
    monitor: Monitor,
    conversion_dir: Path | None,
    cache_dir: Path,
    ResultCache: Any,
    reviewkit: Any,
) -> dict[str, Any]:
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    n = args.n
    texts, gold = make_reviews(base, n)
    seed_texts, seed_gold = make_reviews(base, args.seed_n)
    np_texts, np_gold = make_reviews(base, args.no_prefix_n)
    scale_texts, _ = make_reviews(base, args.scale_n)
    load: dict[str, Any] = {"conversion_seconds": None, "first_load_with_conversion_seconds": None}

    # 1. Engine with prefix caching (optionally after a fresh conversion of the embedded model).
    print("benchmark: loading the engine (prefix caching on)", file=sys.stderr, flush=True)
    if conversion_dir is not None:
        from reviewkit import embedded

        name = args.model or embedded.EMBEDDED_NAME
        if name not in embedded.PACKAGED:
            raise SystemExit(f"--measure-conversion needs a packaged model {sorted(embedded.PACKAGED)}, not {name!r}")
        os.environ["REVIEWKIT_MODEL_DIR"] = str(conversion_dir)
        _, conv = rec.run(f"convert {name} model", lambda: embedded.ensure_converted(name, quiet=True))
        load["conversion_seconds"] = conv
    engine, wall = rec.run("load (prefix caching)", lambda: reviewkit.load(args.model, reload=True))
    load["load_seconds"] = engine.load_seconds
    load["load_wall_seconds"] = wall
    if conversion_dir is not None:
        load["first_load_with_conversion_seconds"] = load["conversion_seconds"] + wall
    results: dict[str, Any] = {
        "model": engine.model_id,
        "model_path": engine.model_path,
        "device": engine.device,
        "prefix_block_size": engine.prefix_block_size,
        "max_model_len": engine.max_model_len,
        "seed_style_prompt": "chat template" if seed_uses_chat(engine) else "few-shot completion",
    }
    results["tcmalloc_mapped_main_engine"] = _bench_tcmalloc.tcmalloc_mapped(engine)
    llama = None
    if args.llama_cpp:  # reviewkit's prompts for llama.cpp, built with this engine's tokenizer
        if not engine.settings.is_embedded:
            raise SystemExit("--llama-cpp compares on the embedded model's GGUF file: leave out --model")
        llama = _bench_llamacpp.write_spec(engine, texts[: args.llama_n], _bench_llamacpp.new_folder())
    scheduler = engine.llm.llm_engine.vllm_config.scheduler_config
    results["engine_config"] = {
        "max_num_batched_tokens": scheduler.max_num_batched_tokens,
        "max_num_seqs": scheduler.max_num_seqs,
    }

    # Warm-up: first requests, and the per-engine calibration (content-free inputs).
    rec.run(
        "warm-up",
        lambda: run_reviewkit(
            ["warm-up review, fine .", "워밍업 리뷰 괜찮아요"], cache=False, chunk_size=args.chunk_size
        ),
    )
    prefixes = [TokensPrompt(prompt_token_ids=p) for p in prefix_prompts(engine)]
    prefix_tokens = prefix_tokens_of(engine)

    def warm_rk() -> None:
        engine.llm.generate(prefixes, SamplingParams(max_tokens=1), use_tqdm=False)

    def warm_seed() -> None:
        seed_warm(engine)

    raw_prompts = [TokensPrompt(prompt_token_ids=p) for p in reviewkit_prompts(engine, texts)]
    rec.run("warm-up seed's way", lambda: run_seed_style(engine, seed_texts[:4], args.max_tokens))

    # 2. Interleaved rounds on the same reviews.
    rk_runs, raw_runs, seed_runs = [], [], []

    def do_rk(r: int) -> None:
        reset_prefix_cache(engine, warm_rk)
        res, s = rec.run(
            f"reviewkit n={n} round {r}", lambda: run_reviewkit(texts, cache=False, chunk_size=args.chunk_size)
        )
        res["seconds"], res["cpu_seconds"] = s, rec.last_cpu
        rk_runs.append(res)

    def do_raw(r: int) -> None:
        reset_prefix_cache(engine, warm_rk)
        res, s = rec.run(f"raw engine n={n} round {r}", lambda: run_raw_engine(engine, raw_prompts))
        res["seconds"], res["cpu_seconds"] = s, rec.last_cpu
        raw_runs.append(res)

    def do_seed(r: int) -> None:
        reset_prefix_cache(engine, warm_seed)
        res, s = rec.run(
            f"seed's way n={args.seed_n} round {r}", lambda: run_seed_style(engine, seed_texts, args.max_tokens)
        )
        res["seconds"], res["cpu_seconds"] = s, rec.last_cpu
        seed_runs.append(res)

    def do_scale() -> tuple[dict[str, Any], float]:
        # 3. Scaling: the same path on --scale-n reviews, run between the rounds so that
        # the N=--n figure brackets it in time (the machine's load drifts).
        reset_prefix_cache(engine, warm_rk)
        res, s = rec.run(
            f"reviewkit n={args.scale_n}", lambda: run_reviewkit(scale_texts, cache=False, chunk_size=args.chunk_size)
        )
        del res["out"]
        res["cpu_seconds"] = rec.last_cpu
        return res, s

    for r in range(args.rounds):
        order = [do_rk, do_raw, do_seed] if r % 2 == 0 else [do_seed, do_raw, do_rk]
        for step in order:
            step(r)
        if r == (args.rounds - 1) // 2:
            scale, scale_s = do_scale()

    # 4. First run and cached re-run of one DataFrame, result cache on (private folder).
    store = ResultCache(cache_dir / "results.sqlite3")
    reset_prefix_cache(engine, warm_rk)
    first, first_s = rec.run(
        f"first run n={n} (cache on)", lambda: run_reviewkit(texts, cache=store, chunk_size=args.chunk_size)
    )
    again, again_s = rec.run(
        f"cached re-run n={n}", lambda: run_reviewkit(texts, cache=store, chunk_size=args.chunk_size)
    )
    same = bool((first["out"]["sentiment"].astype(str) == again["out"]["sentiment"].astype(str)).all())
    store.close()

    # 5. Prefix caching off: a second engine (the first is unloaded: one at a time).
    rec.run("unload", reviewkit.unload)
    print("benchmark: loading the engine (prefix caching off)", file=sys.stderr, flush=True)
    engine2, wall2 = rec.run(
        "load (no prefix caching)", lambda: reviewkit.load(args.model, enable_prefix_caching=False, reload=True)
    )
    load["load_no_prefix_cache_seconds"] = engine2.load_seconds
    rec.run(
        "warm-up (no prefix caching)",
        lambda: run_reviewkit(
            ["warm-up review, fine .", "워밍업 리뷰 괜찮아요"], cache=False, chunk_size=args.chunk_size
        ),
    )
    nopc, nopc_s = rec.run(
        f"reviewkit n={args.no_prefix_n}, no prefix cache",
        lambda: run_reviewkit(np_texts, cache=False, chunk_size=args.chunk_size),
    )
    nopc_cpu = rec.last_cpu
    rec.run("unload (no prefix caching)", reviewkit.unload)
    nopc_acc = accuracy([str(x) for x in nopc["out"]["sentiment"]], np_gold)

    measured = {
        "rk_runs": rk_runs,
        "raw_runs": raw_runs,
        "seed_runs": seed_runs,
        "scale": scale,
        "scale_s": scale_s,
        "first_s": first_s,
        "again_s": again_s,
        "same": same,
        "nopc_s": nopc_s,
        "nopc_cpu": nopc_cpu,
        "nopc_acc": nopc_acc,
        "gold": gold,
        "seed_gold": seed_gold,
        "seed_texts": seed_texts,
        "prefix_tokens": prefix_tokens,
        "load": load,
    }
    results = core_figures(args, measured, results)
    # 6. and 7.: tcmalloc off / on, and llama.cpp between those engines.
    rk_labels = [str(x) for x in rk_runs[-1]["out"]["sentiment"]]
    tcmalloc_and_llama(args, reviewkit, rec, texts, gold, rk_labels, llama, results)
    return results


def tcmalloc_and_llama(
    args: argparse.Namespace,
    reviewkit: Any,
    rec: Recorder,
    texts: list[str],
    gold: list[str],
    rk_labels: list[str],
    llama: dict[str, Any] | None,
    results: dict[str, Any],
) -> None:
    """Phase 6 (engines without and with the tcmalloc preload, one at a time) and phase 7
    (llama.cpp rounds, run while no engine is loaded, each next to a tcmalloc-preloaded engine)."""
    skip = _bench_tcmalloc.why_not_compared() if args.tcmalloc_engines else "--tcmalloc-engines 0"
    llama_runs: list[dict[str, Any]] = []
    nearest: list[int] = []  # per llama.cpp round: the preloaded engine next to it

    def between(i: int) -> None:
        # Engines alternate off (even i), on (odd i): after an on engine, or before the next one.
        if llama is not None and (i % 2 == 1 or i + 1 < args.tcmalloc_engines):
            name = f"llama.cpp n={args.llama_n} after engine {i}"
            llama_runs.append(_bench_llamacpp.run_round(args.llama_cpp, llama["spec"], rec, name))
            nearest.append(i if i % 2 == 1 else i + 1)

    engines: list[dict[str, Any]] = []
    if skip is None:
        engines = _bench_tcmalloc.run_phase(args, reviewkit, rec, texts, between)
        results["tcmalloc"] = _bench_tcmalloc.figures(engines, args.n)
        results["ratios"]["tcmalloc_speedup"] = results["tcmalloc"]["speedup"]
    else:
        print(f"benchmark: tcmalloc phase skipped: {skip}", file=sys.stderr, flush=True)
        results["tcmalloc"] = {"skipped": skip}
        results["ratios"]["tcmalloc_speedup"] = None
    if llama is None:
        results["ratios"]["reviewkit_vs_llama_cpp"] = None
        return
    if llama_runs:
        neighbour_rates = [_bench_tcmalloc.engine_rate(engines[j], args.n) for j in nearest]
    else:  # no preloaded engine to sit next to: two rounds, against the main rounds' rate
        for r in range(2):
            llama_runs.append(
                _bench_llamacpp.run_round(args.llama_cpp, llama["spec"], rec, f"llama.cpp n={args.llama_n} round {r}")
            )
        neighbour_rates = [results["reviewkit_reviews_per_s"]] * 2
    k = args.llama_n
    results["llama_cpp"] = _bench_llamacpp.figures(
        llama_runs,
        neighbour_rates,
        k,
        llama["routes"],
        llama["labels"],
        gold[:k],
        rk_labels[:k],
        results["reviewkit_reviews_per_s"],
    )
    results["ratios"]["reviewkit_vs_llama_cpp"] = results["llama_cpp"]["reviewkit_vs_llama_cpp"]


if __name__ == "__main__":
    raise SystemExit(main())
