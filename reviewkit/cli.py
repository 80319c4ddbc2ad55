"""``reviewkit`` command line: the demo, and CSV/Parquet files for pandas pipelines.

    reviewkit demo                                   # bundled reviews, summary, figures
    reviewkit analyze reviews.csv -o scored.parquet --text content
    reviewkit cache info | clear [--model ID]        # the on-disk result cache
    reviewkit serve --port 8000                      # the seed's HTTP API (see README)
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Sequence

_READERS = {".csv": "read_csv", ".parquet": "read_parquet", ".pq": "read_parquet",
            ".jsonl": "read_json", ".json": "read_json"}


def _read(path: Path):
    import pandas as pd

    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise SystemExit(f"reviewkit: cannot read {path}: use .csv, .parquet or .jsonl")
    if not path.exists():
        raise SystemExit(f"reviewkit: input file {path} does not exist")
    if reader == "read_json":
        return pd.read_json(path, lines=path.suffix.lower() == ".jsonl")
    return getattr(pd, reader)(path)


def _write(df, path: Path) -> None:
    suffix = path.suffix.lower()
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".csv":
        df.to_csv(path, index=False)
    elif suffix in (".parquet", ".pq"):
        df.to_parquet(path, index=False)
    elif suffix == ".jsonl":
        df.to_json(path, orient="records", lines=True, force_ascii=False)
    else:
        raise SystemExit(f"reviewkit: cannot write {path}: use .csv, .parquet or .jsonl")


def _engine_options(args: argparse.Namespace) -> dict:
    options = {}
    if args.max_model_len:
        options["max_model_len"] = args.max_model_len
    if args.no_prefix_caching:
        options["enable_prefix_caching"] = False
    return options


def _engine(args: argparse.Namespace):
    """``--url``: a vLLM server (reviewkit.connect); otherwise an engine in this process."""
    import reviewkit

    if args.url:
        return reviewkit.connect(args.url, api_key=args.api_key, model=args.model)
    return reviewkit.load(args.model, **_engine_options(args))


def cmd_analyze(args: argparse.Namespace) -> int:
    import reviewkit

    df = _read(args.input)
    if args.text not in df.columns:
        raise SystemExit(f"reviewkit: column {args.text!r} not in {args.input}; "
                         f"its columns are {list(df.columns)}")
    out_path = args.output or args.input.with_name(args.input.stem + ".sentiment" + args.input.suffix)
    _engine(args)
    out = reviewkit.analyze(df, text=args.text, labels=args.labels, cache=not args.no_cache,
                            progress=not args.quiet)
    _write(out, out_path)
    print(f"{reviewkit.last_run()}\nwrote {len(out)} rows to {out_path}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    import pandas as pd

    import reviewkit
    from reviewkit.cost import cost_per_1000_reviews

    engine = _engine(args)
    reviews = reviewkit.sample_reviews()
    out = reviewkit.analyze(reviews, text="content", cache=not args.no_cache, progress=not args.quiet)
    run = reviewkit.last_run()
    with pd.option_context("display.width", 160, "display.max_colwidth", 48, "display.max_rows", 100):
        print(out[["restaurant", "content", "sentiment", "sentiment_score"]].to_string())
        print("\nPer restaurant:")
        summary = reviewkit.summarize(out, by=["restaurant_id", "restaurant"])
        print(summary.to_string(float_format=lambda x: f"{x:.2f}"))
    print(f"\nEngine: {engine!r}")
    print(f"Run: {run}")
    if run.computed:
        rate = run.engine_reviews_per_s
        print(f"Cost at ${args.price_per_hour:.2f}/h and {rate:.1f} reviews/s: "
              f"${cost_per_1000_reviews(args.price_per_hour, rate):.4f} per 1,000 reviews")
    else:
        print(f"Cost: all {run.unique_texts} results came from the result cache "
              "(run with --no-cache to measure the engine's throughput and cost)")
    return 0


def cmd_cache(args: argparse.Namespace) -> int:
    """See or clear the result cache; stdlib only, so it never loads vllm or an engine."""
    import json

    from reviewkit.cache import ResultCache, cache_info

    if args.action == "info":
        info = cache_info()
        if args.model is not None:
            info.models = {m: v for m, v in info.models.items() if m == args.model}
        print(json.dumps(info.as_dict(), indent=2) if args.json else info)
        return 0
    cache = ResultCache()
    if not cache.enabled:
        print(f"reviewkit: cannot clear the result cache {cache.path}: {cache.disabled_reason}",
              file=sys.stderr)
        return 1
    count = cache.clear(model=args.model)
    if cache.write_error:
        print(f"reviewkit: clearing {cache.path} failed: {cache.write_error}", file=sys.stderr)
        return 1
    which = f" of model {args.model!r}" if args.model is not None else ""
    print(f"deleted {count:,} entries{which} from {cache.path}")
    cache.close()
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Load (or connect to) the engine first, then accept requests; exit 0 after a SIGTERM drain."""
    import os

    import reviewkit
    from reviewkit import serve

    for name in ("reviewkit.serve", "uvicorn.error"):  # one line per request, even without -v
        logging.getLogger(name).setLevel(logging.INFO)
    if args.url:
        engine_key = args.engine_api_key or os.environ.get("REVIEWKIT_ENGINE_API_KEY")
        engine = reviewkit.connect(args.url, api_key=engine_key, model=args.model)
    else:
        engine = reviewkit.load(args.model, **_engine_options(args))
    api_key = args.api_key if args.api_key is not None else os.environ.get("REVIEWKIT_API_KEY")
    application = serve.app(engine, api_key=api_key or "", max_reviews=args.max_reviews,
                            max_body_bytes=args.max_body_bytes, batch_wait_ms=args.batch_wait_ms,
                            idle_after_s=args.idle_after, labels=args.labels, cache=not args.no_cache)
    logging.getLogger("reviewkit.serve").info(
        "serving %s on http://%s:%d (auth %s; at most %d reviews and %d bytes per request)", engine.model_id,
        args.host, args.port, "on" if api_key else "off", args.max_reviews, args.max_body_bytes)
    if args.host not in ("127.0.0.1", "localhost", "::1") and not api_key:
        logging.getLogger("reviewkit.serve").warning(
            "listening on %s without an API key: anyone who can reach the port can use the engine", args.host)
    try:
        return serve.run(application, args.host, args.port)
    except KeyboardInterrupt:
        return 130
    finally:
        reviewkit.unload()  # stop vLLM's engine process now, not in interpreter teardown


def _serve_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve the seed's HTTP API (POST /api/v1/sentiment/analyze) over the engine")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--model", default=None, help="as for demo; with --url, the served model's name")
    p.add_argument("--url", default=None, help="use the vLLM server at this URL instead of loading a model")
    p.add_argument("--engine-api-key", default=None, help="that server's key (env REVIEWKIT_ENGINE_API_KEY)")
    p.add_argument("--api-key", default=None,
                   help="require 'Authorization: Bearer KEY' on all routes but /health (env REVIEWKIT_API_KEY)")
    p.add_argument("--max-model-len", type=int, default=None, help="vLLM max_model_len")
    p.add_argument("--no-prefix-caching", action="store_true", help="turn vLLM prefix caching off")
    p.add_argument("--no-cache", action="store_true", help="bypass the on-disk result cache")
    p.add_argument("--labels", nargs="+", default=["positive", "negative"], help="labels (default: positive negative)")
    p.add_argument("--max-reviews", type=int, default=1000, help="reviews per request; more get 413 (default 1000)")
    p.add_argument("--max-body-bytes", type=int, default=1_000_000, help="body size; larger get 413 (default 1 MB)")
    p.add_argument("--batch-wait-ms", type=float, default=5.0,
                   help="how long a request waits for others to share its engine call (default 5)")
    p.add_argument("--idle-after", type=float, default=10.0, metavar="SECONDS",
                   help="/health reads busy until this long after the last request (default 10)")
    p.set_defaults(func=cmd_serve)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reviewkit", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress and run figures")
    sub = parser.add_subparsers(dest="command", required=True)

    def engine_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument("--model", default=None,
                       help="'embedded', a Hugging Face id or a path (default: LLM_MODEL, else by hardware)")
        p.add_argument("--url", default=None,
                       help="use a vLLM server instead of an engine here: http://HOST:8000/v1, or a RunPod "
                            "Serverless endpoint's https://api.runpod.ai/v2/ENDPOINT_ID/openai/v1")
        p.add_argument("--api-key", default=os.environ.get("REVIEWKIT_API_KEY"),
                       help="the server's API key (default: $REVIEWKIT_API_KEY)")
        p.add_argument("--max-model-len", type=int, default=None, help="vLLM max_model_len")
        p.add_argument("--no-prefix-caching", action="store_true", help="turn vLLM prefix caching off")
        p.add_argument("--no-cache", action="store_true", help="bypass the on-disk result cache")
        p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    demo = sub.add_parser("demo", help="analyze the bundled restaurant reviews and summarize them")
    engine_flags(demo)
    demo.add_argument("--price-per-hour", type=float, default=0.69,
                      help="pod price in $/hour for the cost figure (default 0.69)")
    demo.set_defaults(func=cmd_demo)

    analyze = sub.add_parser("analyze", help="analyze a CSV/Parquet/JSONL file into a new file")
    analyze.add_argument("input", type=Path)
    analyze.add_argument("-o", "--output", type=Path, default=None,
                         help="output file (.csv, .parquet, .jsonl); default INPUT.sentiment.EXT")
    analyze.add_argument("--text", default="content", help="the text column (default: content)")
    analyze.add_argument("--labels", nargs="+", default=["positive", "negative"],
                         help="labels (default: positive negative; add neutral for three classes)")
    engine_flags(analyze)
    analyze.set_defaults(func=cmd_analyze)

    cache = sub.add_parser("cache", help="see or clear the on-disk result cache (REVIEWKIT_CACHE_DIR)")
    cache.add_argument("action", choices=["info", "clear"],
                       help="info: path, entries, size, per model; clear: delete entries")
    cache.add_argument("--model", default=None,
                       help="only this model's entries (its id as `cache info` lists it)")
    cache.add_argument("--json", action="store_true", help="info as JSON")
    cache.set_defaults(func=cmd_cache)
    _serve_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.verbose:  # vLLM's start-up log drowns the result
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s - %(levelname)s - %(message)s", datefmt="%Y-%m-%d %H:%M:%S")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
