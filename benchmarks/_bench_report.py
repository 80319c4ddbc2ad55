"""The Markdown table the benchmark prints, and the targets its ratios are held to."""

from __future__ import annotations

from typing import Any

# The targets: ratios measured in one run.
TARGETS = {
    "reviewkit_vs_seed_style": 3.0,  # reviewkit >= 3 x the seed's way
    "prefix_cache_speedup": 4.0,  # prefix caching >= 4 x without it
    "cached_rerun_speedup": 50.0,  # cached re-run >= 50 x faster than the first
    "reviewkit_vs_engine_tokens": 0.80,  # reviewkit's tokens/s >= 80 % of the raw engine
    "scaling_per_review_ratio": 1.20,  # time/review at --scale-n <= 1.2 x that at --n
    "tcmalloc_speedup": 1.20,  # reviewkit with the tcmalloc preload >= 1.2 x without (issue 14)
    "reviewkit_vs_llama_cpp": 2.5,  # reviewkit >= 2.5 x llama-cpp-python on the same GGUF (issue 14)
}


def met(key: str, value: float | None, target: float) -> bool | None:
    if value is None:
        return None
    return value <= target if key == "scaling_per_review_ratio" else value >= target


def markdown(r: dict[str, Any]) -> str:
    def f(value: Any, digits: int = 1, unit: str = "") -> str:
        if value is None:
            return "n/a"
        if isinstance(value, float):
            return f"{value:,.{digits}f}{unit}"
        return f"{value}{unit}"

    def target(key: str) -> str:
        t = r["targets"][key]
        sign = "≤" if key == "scaling_per_review_ratio" else "≥"
        mark = {True: "yes", False: "**no**", None: "n/a"}[t["met"]]
        shown = f"{100 * t['target']:g} %" if key == "reviewkit_vs_engine_tokens" else f"{t['target']:g}×"
        return f"{sign} {shown} ({mark})"

    ratios, load, mem, cpu_r = r["ratios"], r["load"], r["memory"], r["cpu_time_ratios"]
    n, sn = r["n"], r["scale_n"]
    vs_engine = ratios["reviewkit_vs_engine_tokens"]
    seed = r["seed_style"]
    host = r["run"]["host"]
    where = host.get("gpu") or f"{host.get('cpu')} ({host.get('cpu_affinity')} cores)"
    lines = [
        f"Throughput of reviewkit on `{r['model']}` ({r['device']}: {where}), {r['run']['date']}",
        f"`{r['run']['command']}`; load average {r['run']['loadavg_start'][0]:.1f} at start, "
        f"{r['run']['loadavg_end'][0]:.1f} at end",
        "",
        "| measure | value | ratio | target |",
        "| --- | ---: | ---: | --- |",
        f"| reviewkit.analyze, cache off (N={n}, median of {r['rounds']} round{'s' if r['rounds'] > 1 else ''}) | "
        f"{f(r['reviewkit_reviews_per_s'])} reviews/s | | |",
        f"| seed's way: JSON label + reason, greedy ≤ 64 tokens, parsed (N={r['seed_n']}) | "
        f"{f(r['seed_style_reviews_per_s'])} reviews/s | reviewkit {f(ratios['reviewkit_vs_seed_style'])}× | "
        f"{target('reviewkit_vs_seed_style')} |",
        f"| reviewkit, prefix caching off (N={r['no_prefix_n']}) | {f(r['no_prefix_cache_reviews_per_s'])} reviews/s | "
        f"with caching {f(ratios['prefix_cache_speedup'])}× | {target('prefix_cache_speedup')} |",
        f"| first run, result cache on (N={n}) | {f(r['first_run_seconds'], 2)} s | | |",
        f"| cached re-run of the same DataFrame | {f(r['cached_rerun_seconds'], 3)} s | "
        f"{f(ratios['cached_rerun_speedup'], 0)}× faster | {target('cached_rerun_speedup')} |",
        f"| raw engine prefill, same prompt ids, max_tokens=1 (ceiling) | "
        f"{f(r['engine_prefill_tokens_per_s'], 0)} tokens/s "
        f"({f(r['engine_prefill_computed_tokens_per_s'], 0)} computed) | | |",
        f"| reviewkit tokens/s | {f(r['reviewkit_tokens_per_s'], 0)} tokens/s "
        f"({f(r['reviewkit_computed_tokens_per_s'], 0)} computed) | "
        f"{f(vs_engine and 100 * vs_engine, 0)} % of the engine | "
        f"{target('reviewkit_vs_engine_tokens')} |",
        f"| time per review at N={n} / N={sn} | {f(1000 * r['seconds_per_review'][str(n)], 1)} / "
        f"{f(1000 * r['seconds_per_review'][str(sn)], 1)} ms | {f(ratios['scaling_per_review_ratio'], 2)}× | "
        f"{target('scaling_per_review_ratio')} |",
        f"| peak memory (RSS, this process + vLLM's) | {f(mem['peak_rss_tree_bytes'] / 2**30, 2)} GiB | | |",
    ]
    if mem.get("peak_gpu_memory_used_bytes"):
        lines.append(f"| peak GPU memory in use | {f(mem['peak_gpu_memory_used_bytes'] / 2**30, 1)} GiB | | |")
    lines += _tcmalloc_and_llama_rows(r, f, target)
    conv = load.get("conversion_seconds")
    lines += [
        f"| load: first, with conversion / later, load alone (engine 1, engine 2) | "
        f"{f(load.get('first_load_with_conversion_seconds'), 1, ' s')} / {f(load.get('load_seconds'), 1, ' s')}, "
        f"{f(load.get('load_no_prefix_cache_seconds'), 1, ' s')} | | "
        f"{'conversion ' + f(conv) + ' s' if conv is not None else 'conversion not measured (--measure-conversion)'} |",
        "",
        f"Prompt tokens per review {f(r['prompt_tokens_per_review'])} ({f(r['computed_tokens_per_review'])} computed "
        f"after the cached prefix). Seed's way: {f(seed['prompt_tokens_per_review'])} prompt tokens "
        f"({f(seed['computed_prompt_tokens_per_review'])} computed), "
        f"{f(seed['generated_tokens_per_review'])} generated tokens per review, "
        f"{seed['parse_failures']}/{seed['reviews']} parse failures. Accuracy on these labelled reviews: "
        f"reviewkit {f(100 * r['accuracy']['reviewkit'], 1)} %, seed's way "
        f"{f(100 * r['accuracy']['seed_style'], 1)} % (parse failures count as wrong).",
        "",
        f"Cross-check from CPU seconds per review (this process and vLLM's) instead of wall time: reviewkit vs "
        f"seed's way {f(cpu_r['reviewkit_vs_seed_style'], 1, '×')}, prefix caching "
        f"{f(cpu_r['prefix_cache_speedup'], 1, '×')}, reviewkit at "
        f"{f(cpu_r['reviewkit_vs_engine'] and 100 * cpu_r['reviewkit_vs_engine'], 0, ' %')} of the engine's "
        f"efficiency, N={sn} / N={n} {f(cpu_r['scaling_per_review_ratio'], 2, '×')}.",
    ]
    lines += _tcmalloc_and_llama_notes(r, f)
    busy = r["run"].get("busy_phases")
    if busy:
        lines += [
            "",
            f"Other work kept the 1-minute load average above {r['run']['busy_load_threshold']:g} "
            f"during: {', '.join(busy)}; those figures are slowed by it.",
        ]
    return "\n".join(lines)


def _tcmalloc_and_llama_rows(r: dict[str, Any], f: Any, target: Any) -> list[str]:
    rows = []
    tc = r.get("tcmalloc") or {}
    if tc.get("speedup") is not None:
        rows.append(
            f"| reviewkit, engine without the tcmalloc preload / with it (N={tc['n']}, engines "
            f"{', '.join(tc['order'])}) | {f(tc['without_tcmalloc_reviews_per_s'])} / "
            f"{f(tc['with_tcmalloc_reviews_per_s'])} reviews/s | tcmalloc {f(tc['speedup'], 2)}× | "
            f"{target('tcmalloc_speedup')} |"
        )
    ll = r.get("llama_cpp")
    if ll:
        rows.append(
            f"| llama-cpp-python {ll['llama_cpp_version']}, same GGUF, prompts and cores (N={ll['n']}, "
            f"{len(ll['round_seconds'])} rounds) | {f(ll['reviews_per_s'])} reviews/s | "
            f"reviewkit {f(ll['reviewkit_vs_llama_cpp'])}× | {target('reviewkit_vs_llama_cpp')} |"
        )
    return rows


def _tcmalloc_and_llama_notes(r: dict[str, Any], f: Any) -> list[str]:
    notes = []
    tc = r.get("tcmalloc") or {}
    if tc.get("skipped"):
        notes += ["", f"tcmalloc phase skipped: {tc['skipped']}."]
    elif tc:
        rates = ", ".join(f"{o} {f(x)}" for o, x in zip(tc["order"], tc["reviews_per_s_per_engine"], strict=True))
        notes += [
            "",
            f"tcmalloc: engines loaded in turn, reviews/s {rates} (tcmalloc mapped into the engine "
            f"process: {tc['mapped']}); ratios of neighbours "
            f"{', '.join(f(x, 2) for x in tc['neighbour_ratios'])}; "
            f"from CPU seconds per review {f(tc['speedup_from_cpu_seconds'], 2, '×')}.",
        ]
    ll = r.get("llama_cpp")
    if ll:
        notes += [
            "",
            f"llama.cpp ({ll['threads']} threads): {', '.join(f(x, 1, ' s') for x in ll['round_seconds'])} "
            f"per round, per-round ratios {', '.join(f(x, 2) for x in ll['ratio_per_round'])} against the "
            f"preloaded engine next to each round (against the main rounds: "
            f"{f(ll['reviewkit_main_rounds_vs_llama_cpp'], 2, '×')}); accuracy "
            f"{f(100 * ll['accuracy'], 1)} %, same label as reviewkit on "
            f"{f(100 * ll['agreement_with_reviewkit'], 1)} % of the reviews; prefix reuse vs fresh "
            f"evaluation: label log-probabilities within {f(ll['prefix_reuse_max_abs_diff'], 4)}.",
        ]
    return notes
