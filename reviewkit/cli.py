"""``reviewkit`` command line: the demo, and CSV/Parquet files for pandas pipelines.

    reviewkit demo                                   # bundled reviews, summary, figures
    reviewkit analyze reviews.csv -o scored.parquet --text content
"""

from __future__ import annotations

import argparse
import logging
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


def cmd_analyze(args: argparse.Namespace) -> int:
    import reviewkit

    df = _read(args.input)
    if args.text not in df.columns:
        raise SystemExit(f"reviewkit: column {args.text!r} not in {args.input}; "
                         f"its columns are {list(df.columns)}")
    out_path = args.output or args.input.with_name(args.input.stem + ".sentiment" + args.input.suffix)
    reviewkit.load(args.model, **_engine_options(args))
    out = reviewkit.analyze(df, text=args.text, labels=args.labels, cache=not args.no_cache,
                            progress=not args.quiet)
    _write(out, out_path)
    print(f"{reviewkit.last_run()}\nwrote {len(out)} rows to {out_path}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    import pandas as pd

    import reviewkit
    from reviewkit.cost import cost_per_1000_reviews

    engine = reviewkit.load(args.model, **_engine_options(args))
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reviewkit", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress and run figures")
    sub = parser.add_subparsers(dest="command", required=True)

    def engine_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument("--model", default=None,
                       help="'embedded', 'smollm2', a Hugging Face id or a path "
                            "(default: LLM_MODEL, else by hardware)")
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    import os

    args = build_parser().parse_args(argv)
    if not args.verbose:  # vLLM's start-up log drowns the result
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s - %(levelname)s - %(message)s", datefmt="%Y-%m-%d %H:%M:%S")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
