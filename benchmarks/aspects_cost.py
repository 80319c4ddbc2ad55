"""What aspect sentiment costs: overall alone against overall + 5 aspects, on one engine, cache off.

On ``--n`` (1,000) distinct ``reviewkit.varied_reviews``, in one process on one engine, the
result cache off (``cache=False``):

1. ``reviewkit.analyze(df, cache=False)``: the overall label alone;
2. ``reviewkit.analyze(df, aspects=True, cache=False)``: the same plus the five restaurant
   aspects (맛, 서비스, 가격, 양, 웨이팅) → **ratio** = (2) / (1) seconds (target ≤ 2.0);
3. the naive way on the first ``--naive-n`` (200) of the reviews: each aspect a whole prompt
   of its own, the aspect's question *before* the review (the same few-shot prefix, the same
   tokens, but no review block can be shared between a review's questions), sent with the
   engine's ``score_labels`` as reviewkit sends its prompts, after the overall ``analyze`` of
   the same 200 → naive ratio = (overall + naive aspects) / overall, once with every aspect
   asked (what the ~6 × of "one prompt per aspect" means), once with only the aspects that
   ``mention="words"`` asks (the aspects (2) answers).

Runs one after the other, in the order above (not interleaved: one run each); before each
the vLLM prefix cache is reset and only the prompts' shared prefixes are warmed, so a run
gets no cache hits from an earlier one's reviews. The engine is warmed (first requests, the
content-free calibrations of every prompt and question) before anything is timed. Prints
a Markdown table and writes every figure, with the load average before and after, to
``--json``. ``--mention model`` asks every aspect three ways (positive/negative/none) in (2).

    python benchmarks/aspects_cost.py --json benchmarks/results/aspects-cpu-$(date +%F).json

Dollars are the pod price of ``reviewkit.cost`` (``ServingFigures().pod_price_per_hour``,
$0.69/h) over the measured reviews/s: what the same rates would cost on a pod billed by the
hour (on a CPU the rates are this machine's, not a pod's).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench_monitor import host_info  # noqa: E402

TARGET_RATIO = 2.0
QUIET_LOAD = 1.5


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:  # pragma: no cover
        return ""


def reset_prefix_cache(engine: Any, warm_texts: list[str], mention: str) -> None:
    """Forget every cached block, then compute only the prompts' shared prefixes (overall and
    aspect prompts in both languages), by scoring a few warm-up reviews no timed run contains."""
    import pandas as pd

    import reviewkit

    try:
        engine.llm.reset_prefix_cache()
    except Exception as exc:  # pragma: no cover - depends on the engine
        print(f"warning: reset_prefix_cache failed ({exc}); later runs may get cache hits", file=sys.stderr)
    reviewkit.analyze(pd.DataFrame({"content": warm_texts}), aspects=True, mention=mention, cache=False, progress=False)


def timed_analyze(df: Any, **options: Any) -> dict[str, Any]:
    import reviewkit

    started = time.perf_counter()
    reviewkit.analyze(df, cache=False, progress=False, **options)
    seconds = time.perf_counter() - started
    stats = reviewkit.last_run()
    figures: dict[str, Any] = {
        "reviews": len(df),
        "seconds": seconds,
        "reviews_per_s": len(df) / seconds,
        "overall_seconds": stats.seconds,
        "overall_engine_seconds": stats.engine_seconds,
        "overall_prompt_tokens": stats.prompt_tokens,
        "overall_cached_prompt_tokens": stats.cached_prompt_tokens,
        "load_average": os.getloadavg(),
    }
    if stats.aspect_pass is not None:
        a = stats.aspect_pass
        figures["aspect_pass"] = {
            "questions": a.computed,
            "questions_per_review": a.computed / len(df),
            "seconds": a.seconds,
            "engine_seconds": a.engine_seconds,
            "prompt_tokens": a.prompt_tokens,
            "cached_prompt_tokens": a.cached_prompt_tokens,
            "prefix_cache_hit_rate": a.prefix_cache_hit_rate,
            "mentions": dict(a.label_counts),
        }
    return figures


def naive_prompts(engine: Any, texts: list[str], only_mentioned: bool) -> list[list[int]]:
    """Each (review, aspect) as a whole prompt of its own: the aspect prompt's few-shot prefix,
    the question, then the review and the answer tag, so the review's tokens follow a
    per-aspect question and no block of them is shared between the review's questions."""
    from reviewkit.aspect_prompts import ASPECTS, aspect_template
    from reviewkit.prompts import language_of
    from reviewkit.scoring import tokenize_reviews

    built = {lang: aspect_template(lang).build(engine.tokenizer, engine.prefix_block_size) for lang in ("ko", "en")}
    prompts = []
    for text, review in zip(texts, tokenize_reviews(engine, texts), strict=True):
        lang = language_of(text)
        for aspect in ASPECTS:
            if only_mentioned and not aspect.mentioned_in(text):
                continue
            question = engine.tokenizer(aspect.question(lang).lstrip("\n") + "\nReview: ", add_special_tokens=False)[
                "input_ids"
            ]
            prompts.append([*built[lang].prefix_ids, *question, *review, *built[lang].suffix_ids])
    return prompts


def timed_naive(engine: Any, texts: list[str], only_mentioned: bool, chunk_size: int = 1024) -> dict[str, Any]:
    from reviewkit.aspect_prompts import aspect_template

    token_ids = aspect_template("ko").build(engine.tokenizer, engine.prefix_block_size).label_token_ids
    started = time.perf_counter()
    prompts = naive_prompts(engine, texts, only_mentioned)
    scored = []
    for start in range(0, len(prompts), chunk_size):
        scored += engine.score_labels(prompts[start : start + chunk_size], token_ids)
    seconds = time.perf_counter() - started
    prompt_tokens = sum(s.prompt_tokens for s in scored)
    cached = sum(s.cached_tokens for s in scored)
    return {
        "questions": len(prompts),
        "questions_per_review": len(prompts) / len(texts),
        "seconds": seconds,
        "prompt_tokens": prompt_tokens,
        "cached_prompt_tokens": cached,
        "prefix_cache_hit_rate": cached / prompt_tokens if prompt_tokens else None,
        "load_average": os.getloadavg(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="distinct varied reviews (default 1,000)")
    parser.add_argument("--naive-n", type=int, default=200, help="reviews for the naive way (default 200; 0 skips)")
    parser.add_argument(
        "--mention",
        choices=("words", "model"),
        default="words",
        help="how aspects count as mentioned in the aspect run (default words)",
    )
    parser.add_argument("--seed", type=int, default=0, help="varied_reviews seed (default 0)")
    parser.add_argument("--model", default=None, help="the model (default: what reviewkit.load() picks)")
    parser.add_argument("--json", type=Path, default=None, help="write every figure here")
    args = parser.parse_args(argv)

    import pandas as pd

    import reviewkit
    from reviewkit import cost

    before = {"uptime": uptime(), "load_average": os.getloadavg()}
    print(f"benchmark: before: {before['uptime']}", file=sys.stderr, flush=True)
    if before["load_average"][0] >= QUIET_LOAD:
        print(
            f"warning: load average {before['load_average'][0]:.2f} >= {QUIET_LOAD}: the machine is not quiet, "
            "the figures will be low",
            file=sys.stderr,
            flush=True,
        )
    df = reviewkit.varied_reviews(args.n, seed=args.seed)
    texts = list(df["content"])
    # Warm-up reviews no timed run contains (a prefix of their own keeps them distinct).
    warm = [
        f"워밍업 {k}: 맛있고 친절해요, 가격도 괜찮고 양도 많아요. 웨이팅은 길었어요."
        if k % 2
        else f"warm-up {k}: tasty food, friendly staff, fair prices, big portions, a long wait."
        for k in range(8)
    ]

    started = time.perf_counter()
    engine = reviewkit.load(args.model)
    load_seconds = time.perf_counter() - started
    print(f"benchmark: {engine.model_id} loaded in {load_seconds:.0f} s", file=sys.stderr, flush=True)
    # Warm-up: first requests and every prompt's and question's content-free calibration.
    for mention in {"words", args.mention}:
        reviewkit.analyze(pd.DataFrame({"content": warm}), aspects=True, mention=mention, cache=False, progress=False)

    reset_prefix_cache(engine, warm, args.mention)
    print(f"benchmark: overall alone, {args.n} reviews", file=sys.stderr, flush=True)
    overall = timed_analyze(df)
    reset_prefix_cache(engine, warm, args.mention)
    print(f"benchmark: overall + 5 aspects (mention={args.mention}), {args.n} reviews", file=sys.stderr, flush=True)
    both = timed_analyze(df, aspects=True, mention=args.mention)

    naive: dict[str, Any] | None = None
    if args.naive_n:
        subset = df.iloc[: args.naive_n]
        reset_prefix_cache(engine, warm, args.mention)
        print(f"benchmark: naive way, {args.naive_n} reviews", file=sys.stderr, flush=True)
        small = timed_analyze(subset)
        reset_prefix_cache(engine, warm, args.mention)
        every = timed_naive(engine, texts[: args.naive_n], only_mentioned=False)
        reset_prefix_cache(engine, warm, args.mention)
        mentioned = timed_naive(engine, texts[: args.naive_n], only_mentioned=True)
        reset_prefix_cache(engine, warm, args.mention)
        shared = timed_analyze(subset, aspects=True, mention="words")
        naive = {
            "reviews": args.naive_n,
            "overall": small,
            "every_aspect": every,
            "mentioned_aspects": mentioned,
            "shared_review_words": shared,
            "ratio_every_aspect": (small["seconds"] + every["seconds"]) / small["seconds"],
            "ratio_mentioned_aspects": (small["seconds"] + mentioned["seconds"]) / small["seconds"],
            "ratio_shared_review_words": shared["seconds"] / small["seconds"],
        }
    reviewkit.unload()

    price = cost.ServingFigures().pod_price_per_hour
    ratio = both["seconds"] / overall["seconds"]
    dollars = {
        "pod_price_per_hour": price,
        "overall_per_1000": cost.cost_per_1000_reviews(price, overall["reviews_per_s"]),
        "with_aspects_per_1000": cost.cost_per_1000_reviews(price, both["reviews_per_s"]),
    }
    dollars["extra_per_1000"] = dollars["with_aspects_per_1000"] - dollars["overall_per_1000"]
    after = {"uptime": uptime(), "load_average": os.getloadavg()}
    report = {
        "date": _dt.date.today().isoformat(),
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
        "host": host_info(),
        "model": engine.model_id,
        "load_seconds": load_seconds,
        "order": "one run each, not interleaved: overall alone, then overall + aspects, then the naive way's "
        "runs on the first naive_n reviews (overall, every aspect, mentioned aspects, reviewkit's); "
        "prefix cache reset and shared prefixes warmed before each",
        "n": args.n,
        "mention": args.mention,
        "cache": False,
        "seed": args.seed,
        "before": before,
        "after": after,
        "overall": overall,
        "with_aspects": both,
        "ratio": ratio,
        "target_ratio": TARGET_RATIO,
        "met": ratio <= TARGET_RATIO,
        "naive": naive,
        "dollars": dollars,
    }
    a = both["aspect_pass"]
    rows = [
        ("reviews (varied_reviews, cache off)", f"{args.n:,}"),
        ("overall alone", f"{overall['seconds']:.1f} s, {overall['reviews_per_s']:.1f} reviews/s"),
        (
            f"overall + 5 aspects (mention={args.mention})",
            f"{both['seconds']:.1f} s, {both['reviews_per_s']:.1f} reviews/s",
        ),
        ("**ratio** (target ≤ 2.0)", f"**{ratio:.2f}** ({'met' if ratio <= TARGET_RATIO else 'NOT met'})"),
        ("questions computed per review", f"{a['questions_per_review']:.2f} ({a['questions']:,} questions)"),
        ("aspect pass: seconds, prefix-cache hit rate", f"{a['seconds']:.1f} s, {a['prefix_cache_hit_rate']:.2f}"),
        (
            f"$ per 1,000 reviews at ${price}/h: overall / with aspects / extra",
            f"${dollars['overall_per_1000']:.4f} / ${dollars['with_aspects_per_1000']:.4f} / "
            f"${dollars['extra_per_1000']:.4f}",
        ),
    ]
    if naive:
        rows += [
            (
                f"naive, every aspect a whole prompt ({naive['reviews']} reviews, "
                f"{naive['every_aspect']['questions_per_review']:.0f} per review)",
                f"ratio {naive['ratio_every_aspect']:.2f}, "
                f"hit rate {naive['every_aspect']['prefix_cache_hit_rate']:.2f}",
            ),
            (
                f"naive, mentioned aspects only ({naive['mentioned_aspects']['questions_per_review']:.2f} per review)",
                f"ratio {naive['ratio_mentioned_aspects']:.2f}, "
                f"hit rate {naive['mentioned_aspects']['prefix_cache_hit_rate']:.2f}",
            ),
            ("reviewkit (mention=words) on the same reviews", f"ratio {naive['ratio_shared_review_words']:.2f}"),
        ]
    rows.append(("load average before / after", f"{before['load_average'][0]:.2f} / {after['load_average'][0]:.2f}"))
    print(f"\n{engine.model_id}, {report['date']}, order: overall, then overall + aspects, then the naive runs\n")
    print("| figure | value |\n| --- | --- |")
    for name, value in rows:
        print(f"| {name} | {value} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1, ensure_ascii=False, default=str))
        print(f"\nwrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
