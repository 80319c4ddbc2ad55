"""Ray benchmark: what Ray costs against in-process ``analyze``, and how it scales with actors.

Two measurements, each in one run:

``--compare`` (default; runs anywhere, ~7 min on 2 CPU cores)
    The same reviews scored by in-process ``reviewkit.analyze`` (engine loaded first, not
    timed) and by ``reviewkit.ray.analyze`` with one actor on a local Ray cluster. Ray's
    figure excludes the actor's engine load (its ``load_seconds``) but includes everything
    else Ray adds: starting the worker process, scheduling, moving batches and results.
    Target: Ray ÷ in-process ≥ 0.85. The in-process engine is unloaded before the actor
    loads its own, so only one engine exists at a time.

``--scaling --actors 1,2,4,8`` (a GPU machine, or a cluster via ``RAY_ADDRESS``)
    ``reviewkit.ray.analyze`` with 1, then N actors (one engine and ``--gpus-per-actor``
    GPUs each) on ``--per-actor-n`` reviews per actor, so each actor has the same work.
    The rate is reviews over the busy span (first batch started to last batch finished),
    which leaves out the engines' loads, started together but finished at different
    times. Target: rate(N) ≥ 0.9 × N × rate(1). Not run yet: see benchmarks/README.md for
    the figures expected on paper.

Reviews are ``throughput.py``'s: the Korean and English samples, cycled and numbered so
every text is distinct. Prints a Markdown table; ``--json`` keeps every figure.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import REPO, find_data_dir, load_reviews, make_reviews  # noqa: E402 - the benchmarks' shared data

TARGET_COMPARE = 0.85
TARGET_SCALING = 0.90


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--compare", action="store_true", help="one actor vs in-process analyze (default)")
    mode.add_argument("--scaling", action="store_true", help="1 vs N actors (a GPU machine or cluster)")
    parser.add_argument("--n", type=int, default=6000, help="reviews for --compare (default 6000)")
    parser.add_argument("--actors", default="1,2,4,8", help="actor counts for --scaling (default 1,2,4,8)")
    parser.add_argument("--per-actor-n", type=int, default=20000, help="reviews per actor for --scaling")
    parser.add_argument(
        "--gpus-per-actor",
        type=float,
        default=None,
        help="num_gpus per actor (default: tensor_parallel_size if the cluster has GPUs)",
    )
    parser.add_argument("--batch-size", type=int, default=None, help="reviews per batch (default: reviewkit.ray's)")
    parser.add_argument("--model", default=None, help="model for both (default: what reviewkit.load() picks)")
    parser.add_argument("--data-dir", default=None, help="folder with the sample CSVs")
    parser.add_argument("--json", type=Path, help="write all figures to this JSON file")
    return parser.parse_args(argv)


def frame(n: int, data_dir: str | None) -> Any:
    import pandas as pd

    texts, _ = make_reviews(load_reviews(find_data_dir(data_dir)), n)
    return pd.DataFrame({"id": [f"r{i}" for i in range(n)], "content": texts})


def ray_figures(run: Any, n: int) -> dict[str, Any]:
    loads = [s for a in run.per_actor.values() for s in a["load_seconds"]]
    steady = run.seconds - max(loads) if loads else float("nan")
    return {
        "reviews": n,
        "seconds": run.seconds,
        "engine_load_seconds": loads,
        "actors": run.actors,
        "restarts": run.restarts,
        "busy_span_seconds": run.busy_span(),
        "reviews_per_s_end_to_end": run.reviews_per_s,
        "reviews_per_s_without_load": n / steady if steady > 0 else None,
        "reviews_per_s_busy_span": n / run.busy_span() if run.busy_span() > 0 else None,
        "reviews_per_s_per_actor": run.actor_reviews_per_s(),
    }


def compare(args: argparse.Namespace, options: dict[str, Any]) -> dict[str, Any]:
    import ray

    import reviewkit
    import reviewkit.ray as rr

    df = frame(args.n, args.data_dir)
    engine = reviewkit.load(**options)
    started = time.perf_counter()
    reviewkit.analyze(df, cache=False, progress=False)
    in_process = {
        "reviews": args.n,
        "seconds": time.perf_counter() - started,
        "engine_load_seconds": engine.load_seconds,
        "model": engine.model_id,
    }
    in_process["reviews_per_s"] = args.n / in_process["seconds"]
    del engine
    reviewkit.unload()  # one engine at a time: the actor loads its own next

    if not ray.is_initialized():
        ray.init(include_dashboard=False)
    kwargs = {"batch_size": args.batch_size} if args.batch_size else {}
    out = rr.analyze(df, engine_options=options, num_gpus=args.gpus_per_actor, **kwargs)
    assert out["sentiment"].notna().all(), "Ray left reviews unscored"
    on_ray = ray_figures(rr.last_run(), args.n)
    ratio = (on_ray["reviews_per_s_without_load"] or 0) / in_process["reviews_per_s"]
    return {
        "in_process": in_process,
        "ray_1_actor": on_ray,
        "ratio": ratio,
        "target": TARGET_COMPARE,
        "met": ratio >= TARGET_COMPARE,
    }


def scaling(args: argparse.Namespace, options: dict[str, Any]) -> dict[str, Any]:
    import ray

    import reviewkit.ray as rr

    if not ray.is_initialized():
        ray.init()  # RAY_ADDRESS joins a running cluster
    counts = [int(c) for c in args.actors.split(",")]
    kwargs = {"batch_size": args.batch_size} if args.batch_size else {}
    runs = {}
    for actors in counts:
        n = args.per_actor_n * actors
        rr.analyze(
            frame(n, args.data_dir), concurrency=actors, engine_options=options, num_gpus=args.gpus_per_actor, **kwargs
        )
        runs[actors] = ray_figures(rr.last_run(), n)
        print(f"{actors} actor(s): {runs[actors]['reviews_per_s_busy_span']:.1f} reviews/s", file=sys.stderr)
    base = runs[counts[0]]["reviews_per_s_busy_span"] / counts[0]
    efficiency = {a: r["reviews_per_s_busy_span"] / (a * base) for a, r in runs.items()}
    return {
        "runs": runs,
        "efficiency": efficiency,
        "target": TARGET_SCALING,
        "met": all(e >= TARGET_SCALING for e in efficiency.values()),
        "cluster_resources": ray.cluster_resources(),
    }


def markdown(mode: str, r: dict[str, Any]) -> str:
    if mode == "compare":
        i, o = r["in_process"], r["ray_1_actor"]
        return "\n".join(
            [
                "| measure | value |",
                "| --- | ---: |",
                f"| in-process `reviewkit.analyze`, {i['reviews']} reviews | {i['reviews_per_s']:.1f} reviews/s |",
                f"| `reviewkit.ray.analyze`, 1 actor, without its engine load ({o['engine_load_seconds'][0]:.0f} s) "
                f"| {o['reviews_per_s_without_load']:.1f} reviews/s |",
                f"| the same, end to end (load included) | {o['reviews_per_s_end_to_end']:.1f} reviews/s |",
                f"| the actor's busy rate (its batches only) | {list(o['reviews_per_s_per_actor'].values())[0]:.1f} "
                "reviews/s |",
                f"| **Ray ÷ in-process** | **{r['ratio']:.2f}** (target ≥ {r['target']}: "
                f"{'yes' if r['met'] else 'no'}) |",
            ]
        )
    lines = ["| actors | reviews | reviews/s (busy span) | efficiency vs linear |", "| ---: | ---: | ---: | ---: |"]
    for actors, run in r["runs"].items():
        lines.append(
            f"| {actors} | {run['reviews']} | {run['reviews_per_s_busy_span']:.1f} | {r['efficiency'][actors]:.2f} |"
        )
    return "\n".join(lines + [f"\ntarget ≥ {r['target']} × linear: {'yes' if r['met'] else 'no'}"])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    mode = "scaling" if args.scaling else "compare"
    options = {"model": args.model} if args.model else {}
    started_at = _dt.datetime.now().astimezone()
    results = compare(args, options) if mode == "compare" else scaling(args, options)
    results["run"] = {
        "mode": mode,
        "started_at": started_at.isoformat(timespec="seconds"),
        "command": "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0], REPO)] + sys.argv[1:]),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "loadavg_end": os.getloadavg(),
    }
    print(markdown(mode, results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")
    return 0 if results["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
