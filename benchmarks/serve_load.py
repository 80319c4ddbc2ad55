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
writes them to ``--json``. Then a flood: ``--flood`` requests (10,000) of ``--reviews``
reviews padded to ``--flood-body-bytes`` each (an ignored field, as the seed's clients
send photos and ratings), from a client process holding ``--flood-connections`` (1,000)
connections at once, against the server with its default limits (128 connections, the
queue sized for 60 s of the engine's rate): the peak RSS of this process (the server: the
engine's own process is apart) is printed with its bound (README, "Limits and failure
behaviour"). Run as a script (vLLM spawns its workers):
``python benchmarks/serve_load.py --json out.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as _dt
import json
import os
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
    p.add_argument("--flood", type=int, default=10_000, help="requests in the flood (0: none; default 10,000)")
    p.add_argument("--flood-connections", type=int, default=1000, help="the flood's connections at once")
    p.add_argument("--flood-body-bytes", type=int, default=100_000, help="each flood request's size (default 100 kB)")
    p.add_argument("--flood-client", default=None, help=argparse.SUPPRESS)  # the flood's client process: its URL
    p.add_argument("--json", default=None, help="write the figures here")
    return p.parse_args(argv)


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


def flood_client(url: str, args: argparse.Namespace) -> None:
    """The flood, from its own process (its memory is not the server's): counts by answer, on stdout."""
    import httpx

    texts, _ = make_reviews(load_reviews(find_data_dir(args.data_dir)), args.reviews)
    body = {"restaurant_id": 1, "reviews": [{"id": k, "content": t} for k, t in enumerate(texts)]}
    pad = max(0, args.flood_body_bytes - len(json.dumps(body, ensure_ascii=False).encode()) - 20)
    body["reviews"][0]["photo"] = "x" * pad  # ignored by the server, as the seed's clients' extra fields
    payload = json.dumps(body, ensure_ascii=False).encode()
    counts: dict[str, int] = {}

    async def run() -> None:
        # One sender per connection, each taking the next request when its last is answered (httpx is
        # slow to hand thousands of waiting requests to a pool of connections).
        left = [args.flood]
        limits = httpx.Limits(max_connections=args.flood_connections)
        async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as client:

            async def sender() -> None:
                while left[0] > 0:
                    left[0] -= 1
                    try:
                        response = await client.post(
                            ANALYZE, content=payload, headers={"Content-Type": "application/json"}
                        )
                        key = str(response.status_code)
                        if response.status_code == 503:
                            key += " queue" if "queue is full" in response.text else " connections"
                    except httpx.HTTPError as exc:
                        key = type(exc).__name__
                    counts[key] = counts.get(key, 0) + 1

            await asyncio.gather(*(sender() for _ in range(args.flood_connections)))

    started = time.perf_counter()
    asyncio.run(run())
    print(json.dumps({"seconds": time.perf_counter() - started, "answers": counts, "body_bytes": len(payload)}))


def flood(url: str, args: argparse.Namespace, application: Any) -> dict[str, Any]:
    """Run the flood client, sampling this process's RSS meanwhile; the figures and the documented bound."""
    import subprocess

    import psutil

    me = psutil.Process()
    baseline = me.memory_info().rss
    peak = [baseline]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], me.memory_info().rss)
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    command = [
        sys.executable,
        __file__,
        "--flood-client",
        url,
        "--flood",
        str(args.flood),
        "--flood-connections",
        str(args.flood_connections),
        "--flood-body-bytes",
        str(args.flood_body_bytes),
        "--reviews",
        str(args.reviews),
        *(["--data-dir", args.data_dir] if args.data_dir else []),
    ]
    run = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    done.set()
    sampler.join()
    if run.returncode != 0:
        raise SystemExit(f"the flood client failed:\n{run.stderr[-3000:]}")
    out = json.loads(run.stdout.strip().splitlines()[-1])
    limits = application.state.reviewkit.limits
    # Each request the server holds keeps its body about three times over (bytes, text, parsed JSON):
    # at most max_connections of them at once, each at most max_body_bytes.
    bound = baseline + limits.max_connections * 3 * limits.max_body_bytes
    out.update(
        requests=args.flood,
        connections=args.flood_connections,
        rss_before_mb=baseline / 1e6,
        rss_peak_mb=peak[0] / 1e6,
        rss_growth_mb=(peak[0] - baseline) / 1e6,
        rss_bound_mb=bound / 1e6,
        within_bound=peak[0] <= bound,
        max_connections=limits.max_connections,
        max_body_bytes=limits.max_body_bytes,
        queue_limit=application.state.reviewkit.batcher.queue_limit,
    )
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.flood_client:
        flood_client(args.flood_client, args)
        return 0
    import pandas as pd

    import reviewkit
    from reviewkit.serve import ThreadServer, app

    per_round = args.clients * args.requests * args.reviews
    texts, _ = make_reviews(load_reviews(find_data_dir(args.data_dir)), per_round)
    bodies = [
        [
            {
                "restaurant_id": c * 1000 + r,
                "reviews": [
                    {"id": k, "content": texts[i]}
                    for k, i in enumerate(
                        range((c * args.requests + r) * args.reviews, (c * args.requests + r + 1) * args.reviews)
                    )
                ],
            }
            for r in range(args.requests)
        ]
        for c in range(args.clients)
    ]
    engine = reviewkit.load(args.model)
    print(f"engine: {engine!r}", file=sys.stderr)

    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    prefixes = [TokensPrompt(prompt_token_ids=p) for p in prefix_prompts(engine)]

    def warm() -> None:  # the shared prompt prefixes only, as throughput.py does
        engine.llm.generate(prefixes, SamplingParams(max_tokens=1), use_tqdm=False)

    reviewkit.analyze(
        pd.DataFrame({"content": ["warm-up review, fine .", "워밍업 리뷰 괜찮아요"]}), cache=False, progress=False
    )
    rounds = []
    application = app(
        engine, api_key="", cache=False, batch_wait_ms=args.batch_wait_ms, max_reviews=max(1000, args.reviews)
    )
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
            row = {
                "round": r,
                "analyze_reviews_per_s": per_round / analyze_s,
                "serve_reviews_per_s": per_round / serve_s,
                "analyze_seconds": analyze_s,
                "serve_seconds": serve_s,
                "engine_calls": application.state.reviewkit.batcher.batches - batches,
                "requests": args.clients * args.requests,
            }
            row["ratio"] = row["serve_reviews_per_s"] / row["analyze_reviews_per_s"]
            rounds.append(row)
            print(
                f"round {r}: analyze {row['analyze_reviews_per_s']:.1f} reviews/s, serve "
                f"{row['serve_reviews_per_s']:.1f} reviews/s ({row['engine_calls']} engine calls for "
                f"{row['requests']} requests), ratio {row['ratio']:.2f}",
                file=sys.stderr,
            )
        flooded = flood(url, args, application) if args.flood else None
    ratio = statistics.median(r["ratio"] for r in rounds)
    result = {
        "date": _dt.date.today().isoformat(),
        "command": " ".join(["python", *sys.argv]),
        "model": engine.model_id,
        "device": engine.device,
        "clients": args.clients,
        "requests_per_client": args.requests,
        "reviews_per_request": args.reviews,
        "reviews_per_round": per_round,
        "batch_wait_ms": args.batch_wait_ms,
        "analyze_reviews_per_s": statistics.median(r["analyze_reviews_per_s"] for r in rounds),
        "serve_reviews_per_s": statistics.median(r["serve_reviews_per_s"] for r in rounds),
        "ratio": ratio,
        "target": TARGET,
        "met": ratio >= TARGET,
        "rounds_detail": rounds,
        "flood": flooded,
        "host": host_info(),
        "load_average_after": os.getloadavg(),
        "note": "the machine may be shared: other work can have loaded it during the run (see load_average_after)",
    }
    print("| measure | value |\n| --- | --- |")
    print(f"| `analyze()` over {per_round} reviews, one call | {result['analyze_reviews_per_s']:.1f} reviews/s |")
    print(
        f"| {args.clients} clients x {args.requests} requests x {args.reviews} reviews on `reviewkit serve` | "
        f"{result['serve_reviews_per_s']:.1f} reviews/s |"
    )
    print(
        f"| serve / analyze (median of {args.rounds} interleaved rounds; target >= {TARGET}) | "
        f"{ratio:.2f} ({'met' if result['met'] else 'NOT met'}) |"
    )
    if flooded:
        print(
            f"| flood: {flooded['requests']} requests of {flooded['body_bytes'] / 1e3:.0f} kB from "
            f"{flooded['connections']} connections at once, {flooded['seconds']:.0f} s | answers "
            f"{flooded['answers']} |"
        )
        print(
            f"| server RSS under the flood | {flooded['rss_before_mb']:.0f} MB before, peak "
            f"{flooded['rss_peak_mb']:.0f} MB (bound {flooded['rss_bound_mb']:.0f} MB: "
            f"{'held' if flooded['within_bound'] else 'EXCEEDED'}) |"
        )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2, default=str) + "\n")
    reviewkit.unload()
    return 0


if __name__ == "__main__":
    sys.exit(main())
