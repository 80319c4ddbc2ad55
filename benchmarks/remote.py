"""Remote vs in-process: reviews/s of the same model on the same machine, in one run.

1. ``reviewkit.load()`` in this process; a warm-up batch; then ``score_texts`` of ``--n``
   distinct reviews with the result cache off, ``--rounds`` times (fresh texts each round).
2. The engine unloaded (one engine at a time), vLLM's OpenAI server started here with the
   same model (``reviewkit.vllm_server``: the time to a healthy server is this
   machine's cold start), ``reviewkit.connect`` to it, and the very same rounds through HTTP.
3. The server stopped by its pid.

Both paths send the same token-id prompts with the same cached few-shot prefix, so the
ratio is the cost of HTTP, JSON and the server's frontend. Prints a Markdown table and
writes ``--json``. Target (issue 9): remote >= 0.8 x in-process.

    python benchmarks/remote.py --json benchmarks/results/remote-cpu-$(date +%F).json
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import find_data_dir, load_reviews, make_reviews  # noqa: E402

TARGET = 0.8


def timed_rounds(texts_per_round: list[list[str]]) -> list[dict[str, Any]]:
    import reviewkit

    rounds = []
    for texts in texts_per_round:
        reviewkit.score_texts(texts, cache=False, progress=False)
        run = reviewkit.last_run()
        rounds.append(
            {
                "reviews": run.computed,
                "seconds": run.seconds,
                "reviews_per_s": run.reviews_per_s,
                "prefix_cache_hit_rate": run.prefix_cache_hit_rate,
                "requests": run.remote_requests,
                "retries": run.remote_retries,
            }
        )
    return rounds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded", help="the model for both engines (default: embedded)")
    parser.add_argument("--n", type=int, default=600, help="distinct reviews per round (default 600)")
    parser.add_argument("--rounds", type=int, default=2, help="timed rounds per engine (default 2)")
    parser.add_argument("--batch-size", type=int, default=None, help="remote prompts per request")
    parser.add_argument("--max-in-flight", type=int, default=None, help="remote requests at once")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--json", type=Path, default=None, help="write every figure here")
    args = parser.parse_args(argv)

    import reviewkit
    from reviewkit.vllm_server import start_server

    base = load_reviews(find_data_dir(args.data_dir))
    texts, _ = make_reviews(base, args.n * (args.rounds + 1))
    warm, rounds = texts[:64], [texts[args.n * (k + 1) : args.n * (k + 2)] for k in range(args.rounds)]
    result: dict[str, Any] = {
        "date": _dt.date.today().isoformat(),
        "command": " ".join(sys.argv),
        "host": {"machine": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "n": args.n,
        "rounds": args.rounds,
        "target_ratio": TARGET,
    }

    engine = reviewkit.load(args.model)
    result["in_process_load_seconds"] = engine.load_seconds
    reviewkit.score_texts(warm, cache=False, progress=False)
    result["in_process"] = timed_rounds(rounds)
    reviewkit.unload()
    print(f"in-process: {[round(r['reviews_per_s'], 1) for r in result['in_process']]} reviews/s", file=sys.stderr)

    options = {k: v for k, v in (("batch_size", args.batch_size), ("max_in_flight", args.max_in_flight)) if v}
    server = start_server(args.model)
    try:
        result["server_startup_seconds"] = server.startup_seconds
        engine = reviewkit.connect(server.url, **options)
        result["connect_seconds"] = engine.load_seconds
        result["remote_settings"] = engine.settings.describe()
        reviewkit.score_texts(warm, cache=False, progress=False)
        result["remote"] = timed_rounds(rounds)
    finally:
        reviewkit.unload()
        server.stop()
    print(f"remote: {[round(r['reviews_per_s'], 1) for r in result['remote']]} reviews/s", file=sys.stderr)

    local_rate = statistics.median(r["reviews_per_s"] for r in result["in_process"])
    remote_rate = statistics.median(r["reviews_per_s"] for r in result["remote"])
    result.update(
        in_process_reviews_per_s=local_rate,
        remote_reviews_per_s=remote_rate,
        ratio=remote_rate / local_rate,
        target_met=remote_rate / local_rate >= TARGET,
    )
    print(f"""| figure | value |
| --- | --- |
| in-process reviews/s (median of {args.rounds} x {args.n}) | {local_rate:.1f} |
| remote reviews/s, same reviews through vLLM's OpenAI server | {remote_rate:.1f} |
| remote / in-process | {result['ratio']:.2f} (target >= {TARGET}: {'met' if result['target_met'] else 'NOT met'}) |
| in-process load | {result['in_process_load_seconds']:.1f} s |
| server start to healthy (cold start here) | {result['server_startup_seconds']:.1f} s |
| connect (its checks) | {result['connect_seconds']:.1f} s |""")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
