"""The figures of the main phases, from the timed runs ``throughput.measure`` collected.

Rates are medians over the rounds and the ratios of interleaved paths medians of the
per-round ratios, so one round disturbed by other work on a shared machine does not
decide a figure; the pooled figures (total work / total seconds) are kept beside them.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from typing import Any

from _bench_data import accuracy, rate, ratio


def core_figures(args: argparse.Namespace, m: dict[str, Any], results: dict[str, Any]) -> dict[str, Any]:
    """Fill ``results`` from ``m``: the runs of the rounds, the scaling, cache and no-prefix phases."""
    n = args.n
    rk_runs, raw_runs, seed_runs = m["rk_runs"], m["raw_runs"], m["seed_runs"]
    scale, scale_s = m["scale"], m["scale_s"]
    first_s, again_s, same = m["first_s"], m["again_s"], m["same"]
    nopc_s, nopc_cpu, nopc_acc = m["nopc_s"], m["nopc_cpu"], m["nopc_acc"]
    gold, seed_gold, seed_texts = m["gold"], m["seed_gold"], m["seed_texts"]
    prefix_tokens, load = m["prefix_tokens"], m["load"]
    rk_s = sum(x["seconds"] for x in rk_runs)
    raw_s = sum(x["seconds"] for x in raw_runs)
    seed_s = sum(x["seconds"] for x in seed_runs)
    rk_tokens = sum(x["prompt_tokens"] for x in rk_runs)
    rk_cached = sum(x["cached_tokens"] for x in rk_runs)
    raw_tokens = sum(x["prompt_tokens"] for x in raw_runs)
    raw_cached = sum(x["cached_tokens"] for x in raw_runs)
    # Medians over the rounds: a burst of other work on the machine spoils one round, not the figure.
    med = statistics.median
    rk_rate = med(n / x["seconds"] for x in rk_runs)
    raw_rate = med(n / x["seconds"] for x in raw_runs)
    seed_rate = med(args.seed_n / x["seconds"] for x in seed_runs)
    nopc_rate = rate(args.no_prefix_n, nopc_s)
    rk_tps = med(x["prompt_tokens"] / x["seconds"] for x in rk_runs)
    raw_tps = med(x["prompt_tokens"] / x["seconds"] for x in raw_runs)
    rk_ctps = med((x["prompt_tokens"] - x["cached_tokens"]) / x["seconds"] for x in rk_runs)
    raw_ctps = med((x["prompt_tokens"] - x["cached_tokens"]) / x["seconds"] for x in raw_runs)
    per_review_n = 1 / rk_rate
    vs_engine_rounds = [
        (a["prompt_tokens"] / a["seconds"]) / (b["prompt_tokens"] / b["seconds"])
        for a, b in zip(rk_runs, raw_runs, strict=True)
    ]
    vs_seed_rounds = [
        (n / a["seconds"]) / (args.seed_n / c["seconds"]) for a, c in zip(rk_runs, seed_runs, strict=True)
    ]
    per_review_scale = scale_s / args.scale_n
    last_seed = seed_runs[-1]
    failures = sum(p is None for p in last_seed["parsed"])
    seed_pred = [p[0] if p else None for p in last_seed["parsed"]]
    rk_pred = [str(x) for x in rk_runs[-1]["out"]["sentiment"]]

    results.update(
        {
            "n": n,
            "scale_n": args.scale_n,
            "seed_n": args.seed_n,
            "no_prefix_n": args.no_prefix_n,
            "rounds": args.rounds,
            "reviewkit_reviews_per_s": rk_rate,
            "seed_style_reviews_per_s": seed_rate,
            "no_prefix_cache_reviews_per_s": nopc_rate,
            "engine_prefill_reviews_per_s": raw_rate,
            "figures_note": "reviews/s and tokens/s are medians over the rounds; the interleaved ratios are "
            "medians of the per-round ratios; 'pooled' has total work / total seconds",
            "pooled": {
                "reviewkit_reviews_per_s": rate(n * len(rk_runs), rk_s),
                "engine_prefill_reviews_per_s": rate(n * len(raw_runs), raw_s),
                "seed_style_reviews_per_s": rate(args.seed_n * len(seed_runs), seed_s),
                "reviewkit_tokens_per_s": rate(rk_tokens, rk_s),
                "engine_prefill_tokens_per_s": rate(raw_tokens, raw_s),
            },
            "first_run_seconds": first_s,
            "cached_rerun_seconds": again_s,
            "cached_rerun_same_labels": same,
            "reviewkit_tokens_per_s": rk_tps,
            "engine_prefill_tokens_per_s": raw_tps,
            "reviewkit_computed_tokens_per_s": rk_ctps,
            "engine_prefill_computed_tokens_per_s": raw_ctps,
            "tokens_note": "tokens/s = prompt tokens (the cached shared prefix included) / wall seconds of the "
            "whole call; computed = prompt tokens minus prefix-cache hits. reviewkit's seconds "
            "are the whole analyze() call (tokenisation, routing, calibration, DataFrame out); "
            "the engine's are llm.generate of ready token ids alone.",
            "prompt_tokens_per_review": rk_tokens / (n * len(rk_runs)),
            "computed_tokens_per_review": (rk_tokens - rk_cached) / (n * len(rk_runs)),
            "seconds_per_review": {str(n): per_review_n, str(args.scale_n): per_review_scale},
            "scaling_computed_tokens_per_review": {
                str(n): (rk_tokens - rk_cached) / (n * len(rk_runs)),
                str(args.scale_n): (scale["prompt_tokens"] - scale["cached_tokens"]) / args.scale_n,
            },
            "seed_style": {
                "parse_failures": failures,
                "reviews": args.seed_n,
                "failure_rate": failures / args.seed_n,
                "accuracy": accuracy(seed_pred, seed_gold),
                "prompt_tokens_per_review": last_seed["prompt_tokens"] / args.seed_n,
                "computed_prompt_tokens_per_review": (last_seed["prompt_tokens"] - last_seed["cached_tokens"])
                / args.seed_n,
                "generated_tokens_per_review": last_seed["generated_tokens"] / args.seed_n,
                "examples": [
                    {"review": t, "answer": a} for t, a in zip(seed_texts[:3], last_seed["answers"][:3], strict=True)
                ],
            },
            "accuracy": {
                "reviewkit": accuracy(rk_pred, gold),
                "reviewkit_on_seed_reviews": accuracy(rk_pred[: args.seed_n], seed_gold) if args.seed_n <= n else None,
                "seed_style": accuracy(seed_pred, seed_gold),
                "reviewkit_no_prefix_cache": nopc_acc,
            },
            "load": load,
            "rounds_detail": {
                "reviewkit_seconds": [x["seconds"] for x in rk_runs],
                "engine_seconds": [x["seconds"] for x in raw_runs],
                "seed_style_seconds": [x["seconds"] for x in seed_runs],
                "reviewkit_vs_engine_per_round": vs_engine_rounds,
                "reviewkit_vs_seed_per_round": vs_seed_rounds,
            },
        }
    )

    # Cross-check that a busy machine disturbs less: CPU seconds of the process tree per review.
    def cpu_per_review(runs: list[dict[str, Any]], per_run: int) -> float | None:
        cpus = [x.get("cpu_seconds") for x in runs]
        return None if None in cpus or not cpus else med(cpus) / per_run

    cpu = {
        "reviewkit": cpu_per_review(rk_runs, n),
        "engine_prefill": cpu_per_review(raw_runs, n),
        "seed_style": cpu_per_review(seed_runs, args.seed_n),
        "no_prefix_cache": None if nopc_cpu is None else nopc_cpu / args.no_prefix_n,
        "reviewkit_scale_n": None if scale.get("cpu_seconds") is None else scale["cpu_seconds"] / args.scale_n,
    }
    results["cpu_seconds_per_review"] = cpu
    results["cpu_time_ratios"] = {
        "note": "the same ratios from CPU seconds of this process and vLLM's per review instead of wall time",
        "reviewkit_vs_seed_style": ratio(cpu["seed_style"], cpu["reviewkit"]),
        "prefix_cache_speedup": ratio(cpu["no_prefix_cache"], cpu["reviewkit"]),
        "reviewkit_vs_engine": ratio(cpu["engine_prefill"], cpu["reviewkit"]),
        "scaling_per_review_ratio": ratio(cpu["reviewkit_scale_n"], cpu["reviewkit"]),
    }
    # The ceiling must prefill exactly what analyze() sent.
    results["same_prompt_tokens_as_engine"] = rk_tokens * len(raw_runs) == raw_tokens * len(rk_runs)
    if not results["same_prompt_tokens_as_engine"]:
        print(
            f"warning: reviewkit sent {rk_tokens // len(rk_runs)} prompt tokens, the raw engine "
            f"{raw_tokens // len(raw_runs)}: benchmarks/throughput.py no longer builds analyze()'s prompts",
            file=sys.stderr,
        )
    # Only the shared prefix may come from the prefix cache: anything more is free work.
    cached_per_review = {
        "reviewkit": rk_cached / (n * len(rk_runs)),
        "engine_prefill": raw_cached / (n * len(raw_runs)),
        f"reviewkit_n{args.scale_n}": scale["cached_tokens"] / args.scale_n,
    }
    results["cached_tokens_per_review"] = {**cached_per_review, "shared_prefix_tokens": prefix_tokens}
    if any(v > prefix_tokens + 0.5 for v in cached_per_review.values()):
        print(
            f"warning: prefix-cache hits beyond the shared prefix ({cached_per_review}, prefix "
            f"{prefix_tokens} tokens): the timings include free work",
            file=sys.stderr,
        )
    results["ratios"] = {
        "reviewkit_vs_seed_style": med(vs_seed_rounds),
        "prefix_cache_speedup": ratio(rk_rate, nopc_rate),
        "cached_rerun_speedup": ratio(first_s, again_s),
        "reviewkit_vs_engine_tokens": med(vs_engine_rounds),
        "scaling_per_review_ratio": ratio(per_review_scale, per_review_n),
    }
    return results
