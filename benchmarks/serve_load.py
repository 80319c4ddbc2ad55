"""Serve benchmark: 32 concurrent clients on ``reviewkit serve`` against one ``analyze()`` call, in one run.

One process, one engine: ``reviewkit.load()``, then interleaved rounds on the same
reviews (result cache off in both, vLLM's prefix cache reset to the shared prompt
prefixes before each phase, as in throughput.py):

- ``reviewkit.analyze(df)`` over all N reviews in one call;
- the seed's API: the app of ``reviewkit serve`` under uvicorn on 127.0.0.1 (in a thread
  of this process, on the same engine), and ``--clients`` clients (asyncio + httpx,
  in the main thread) each sending ``--requests`` requests of ``--reviews`` reviews to
  ``POST /api/v1/sentiment/analyze``, one after another, all clients at once.

Prints the reviews/s of both and their ratio (target: serve >= 0.8 x analyze) and
writes them to ``--json``. Run as a script (vLLM spawns its workers):
``python benchmarks/serve_load.py --json out.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as _dt
import json
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import find_data_dir, host_info, load_reviews, make_reviews, prefix_prompts, reset_prefix_cache  # noqa: E402

TARGET = 0.8
ANALYZE = "/api/v1/sentiment/analyze"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="as for reviewkit.load (default: by hardware)")
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--requests", type=int, default=5, help="requests per client per round (default 5)")
    p.add_argument("--reviews", type=int, default=10, help="reviews per request (default 10)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--batch-wait-ms", type=float, default=5.0)
    p.add_argument("--port", type=int, default=8799)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--json", default=None, help="write the figures here")
    return p.parse_args(argv)


class ThreadServer:
    """uvicorn serving ``application`` in a daemon thread (no signal handlers off the main thread)."""

    def __init__(self, application: Any, port: int) -> None:
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(application, host="127.0.0.1", port=port, log_config=None,
                                                    access_log=False, lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ThreadServer:
        self.thread.start()
        while not self.server.started:
            if not self.thread.is_alive():
                raise SystemExit("the server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(60)


async def _clients(url: str, bodies: list[list[dict[str, Any]]]) -> tuple[float, int]:
    """Each client sends its bodies in turn; returns (seconds, reviews answered)."""
    import httpx

    async def one(client: httpx.AsyncClient, mine: list[dict[str, Any]]) -> int:
        done = 0
        for body in mine:
            response = await client.post(ANALYZE, json=body)
            if response.status_code != 200:
                raise SystemExit(f"HTTP {response.status_code}: {response.text[:300]}")
            done += response.json()["total_count"]
        return done

    limits = httpx.Limits(max_connections=len(bodies) + 4)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:
        started = time.perf_counter()
        counts = await asyncio.gather(*(one(client, mine) for mine in bodies))
        return time.perf_counter() - started, sum(counts)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import pandas as pd

    import reviewkit
    from reviewkit.serve import app

    per_round = args.clients * args.requests * args.reviews
    texts, _ = make_reviews(load_reviews(find_data_dir(args.data_dir)), per_round)
    bodies = [[{"restaurant_id": c * 1000 + r, "reviews": [{"id": k, "content": texts[i]} for k, i in enumerate(
        range((c * args.requests + r) * args.reviews, (c * args.requests + r + 1) * args.reviews))]}
        for r in range(args.requests)] for c in range(args.clients)]
    engine = reviewkit.load(args.model)
    print(f"engine: {engine!r}", file=sys.stderr)

    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    prefixes = [TokensPrompt(prompt_token_ids=p) for p in prefix_prompts(engine)]

    def warm() -> None:  # the shared prompt prefixes only, as throughput.py does
        engine.llm.generate(prefixes, SamplingParams(max_tokens=1), use_tqdm=False)

    reviewkit.analyze(pd.DataFrame({"content": ["warm-up review, fine .", "워밍업 리뷰 괜찮아요"]}),
                      cache=False, progress=False)
    rounds = []
    application = app(engine, api_key="", cache=False, batch_wait_ms=args.batch_wait_ms,
                      max_reviews=max(1000, args.reviews))
    with ThreadServer(application, args.port):
        url = f"http://127.0.0.1:{args.port}"
        for r in range(args.rounds):
            reset_prefix_cache(engine, warm)
            started = time.perf_counter()
            out = reviewkit.analyze(pd.DataFrame({"content": texts}), cache=False, progress=False)
            analyze_s = time.perf_counter() - started
            assert len(out) == per_round
            reset_prefix_cache(engine, warm)
            batches = application.state.reviewkit.batcher.batches
            serve_s, answered = asyncio.run(_clients(url, bodies))
            assert answered == per_round, (answered, per_round)
            row = {"round": r, "analyze_reviews_per_s": per_round / analyze_s,
                   "serve_reviews_per_s": per_round / serve_s, "analyze_seconds": analyze_s, "serve_seconds": serve_s,
                   "engine_calls": application.state.reviewkit.batcher.batches - batches,
                   "requests": args.clients * args.requests}
            row["ratio"] = row["serve_reviews_per_s"] / row["analyze_reviews_per_s"]
            rounds.append(row)
            print(f"round {r}: analyze {row['analyze_reviews_per_s']:.1f} reviews/s, serve "
                  f"{row['serve_reviews_per_s']:.1f} reviews/s ({row['engine_calls']} engine calls for "
                  f"{row['requests']} requests), ratio {row['ratio']:.2f}", file=sys.stderr)
    ratio = statistics.median(r["ratio"] for r in rounds)
    result = {
        "date": _dt.date.today().isoformat(), "command": " ".join(["python", *sys.argv]), "model": engine.model_id,
        "device": engine.device, "clients": args.clients, "requests_per_client": args.requests,
        "reviews_per_request": args.reviews, "reviews_per_round": per_round, "batch_wait_ms": args.batch_wait_ms,
        "analyze_reviews_per_s": statistics.median(r["analyze_reviews_per_s"] for r in rounds),
        "serve_reviews_per_s": statistics.median(r["serve_reviews_per_s"] for r in rounds),
        "ratio": ratio, "target": TARGET, "met": ratio >= TARGET, "rounds_detail": rounds, "host": host_info(),
    }
    print("| measure | value |\n| --- | --- |")
    print(f"| `analyze()` over {per_round} reviews, one call | {result['analyze_reviews_per_s']:.1f} reviews/s |")
    print(f"| {args.clients} clients x {args.requests} requests x {args.reviews} reviews on `reviewkit serve` | "
          f"{result['serve_reviews_per_s']:.1f} reviews/s |")
    print(f"| serve / analyze (median of {args.rounds} interleaved rounds; target >= {TARGET}) | "
          f"{ratio:.2f} ({'met' if result['met'] else 'NOT met'}) |")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2, default=str) + "\n")
    reviewkit.unload()
    return 0


if __name__ == "__main__":
    sys.exit(main())
