"""``reviewkit analyze`` (a file in, a file out) and ``reviewkit demo`` (the bundled reviews).

Every argument is checked before the engine loads (half a minute to minutes), so a typo
costs a second, not a model load.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from reviewkit.cli.engine_options import add_engine_flags, add_labels_flag, open_engine
from reviewkit.cost import DEFAULT_FIGURES

_READERS = {
    ".csv": "read_csv",
    ".parquet": "read_parquet",
    ".pq": "read_parquet",
    ".jsonl": "read_json",
    ".json": "read_json",
}
_WRITERS = (".csv", ".parquet", ".pq", ".jsonl")


def add_parsers(sub: Any) -> None:
    """``analyze`` and ``demo``."""
    demo = sub.add_parser("demo", help="analyze the bundled restaurant reviews and summarize them")
    add_engine_flags(demo)
    _add_run_flags(demo)
    price = DEFAULT_FIGURES.pod_price_per_hour
    demo.add_argument(
        "--price-per-hour", type=float, default=price, help=f"pod price in $/hour for the cost figure (default {price})"
    )
    demo.set_defaults(func=cmd_demo)

    analyze = sub.add_parser("analyze", help="analyze a CSV/Parquet/JSONL file into a new file")
    analyze.add_argument("input", type=Path)
    analyze.add_argument(
        "-o",
        "--output",
        type=Path,
        default=None,
        help="output file (.csv, .parquet, .jsonl); default INPUT.sentiment.EXT",
    )
    analyze.add_argument("--text", default="content", help="the text column (default: content)")
    analyze.add_argument(
        "--aspects",
        nargs="?",
        const=True,
        default=None,
        type=aspects_arg,
        metavar="NAMES",
        help="also label what each review says about taste, service, price, portion and wait "
        "(맛, 서비스, 가격, 양, 웨이팅): adds aspect_<name> (positive/negative/none) and "
        "aspect_<name>_score; alone or 'all' for the five, or some: --aspects taste,wait "
        "(after the input file)",
    )
    add_labels_flag(analyze)
    add_engine_flags(analyze)
    _add_run_flags(analyze)
    analyze.set_defaults(func=cmd_analyze)


def _add_run_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-cache", action="store_true", help="bypass the on-disk result cache")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def aspects_arg(value: str) -> Any:
    """``--aspects``' value: ``all`` (True) or comma-separated built-in names, checked at parse time
    (a bad one is argparse's one-line error, exit status 2, before anything loads)."""
    from reviewkit.aspect_prompts import ASPECTS

    if value.strip().lower() == "all":
        return True
    known = [a.name for a in ASPECTS]
    names = [name.strip() for name in value.split(",")]
    for name in names:
        if name not in known:
            hint = "; put the input file before --aspects" if "." in value or os.sep in value else ""
            raise argparse.ArgumentTypeError(
                f"unknown aspect {name!r}: choose from {','.join(known)} (comma-separated) or all{hint}"
            )
    if len(set(names)) < len(names):
        raise argparse.ArgumentTypeError(f"an aspect is given twice in {value!r}")
    return names


def cmd_analyze(args: argparse.Namespace) -> int:
    import reviewkit

    _check_input(args.input)
    out_path = args.output or args.input.with_name(args.input.stem + ".sentiment" + args.input.suffix)
    _check_output(out_path, args.input)
    _check_labels(args.labels)
    df = _read(args.input)
    if args.text not in df.columns:
        raise SystemExit(f"reviewkit: column {args.text!r} not in {args.input}; its columns are {list(df.columns)}")
    _check_aspects(args)
    with open_engine(args) as engine:
        out = reviewkit.analyze(
            df,
            text=args.text,
            labels=args.labels,
            engine=engine,
            cache=not args.no_cache,
            progress=not args.quiet,
            aspects=args.aspects,
        )
    _write(out, out_path)
    print(f"{reviewkit.last_run()}\nwrote {len(out)} rows to {out_path}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    import pandas as pd

    import reviewkit

    if not args.price_per_hour > 0:
        raise SystemExit(f"reviewkit: --price-per-hour must be positive, got {args.price_per_hour}")
    with open_engine(args) as engine:
        reviews = reviewkit.sample_reviews()
        out = reviewkit.analyze(
            reviews, text="content", engine=engine, cache=not args.no_cache, progress=not args.quiet
        )
    with pd.option_context("display.width", 160, "display.max_colwidth", 48, "display.max_rows", 100):
        print(out[["restaurant", "content", "sentiment", "sentiment_score"]].to_string())
        print("\nPer restaurant:")
        summary = reviewkit.summarize(out, by=["restaurant_id", "restaurant"])
        print(summary.to_string(float_format=lambda x: f"{x:.2f}"))
    print(f"\nEngine: {engine!r}")
    print(demo_figures(reviewkit.last_run(), args.price_per_hour))
    return 0


def demo_figures(run: Any, price_per_hour: float) -> str:
    """The run in words, with ONE rate: the engine's throughput, which the cost also uses."""
    from reviewkit.cost import cost_per_1000_reviews

    lines = [
        f"Run: {run.counts_line()}",
        f"     {run.rows} reviews in {run.seconds:.2f} s: {run.cached} cached, {run.computed} computed, "
        f"{run.prompt_tokens} prompt tokens",
    ]
    if not run.computed:
        lines.append(
            f"Cost: all {run.unique_texts} results came from the result cache (run with --no-cache "
            "to measure the engine's throughput and cost)"
        )
        return "\n".join(lines)
    rate = run.engine_reviews_per_s
    lines += [
        f"Throughput: {rate:.1f} reviews/s = {run.computed} reviews computed in {run.engine_seconds:.2f} s "
        "inside the engine (the model load and the one-off warm-up are not counted;",
        "     the rest of the run's time is tokenizing, the result cache and assembling the table)",
        f"Cost at ${price_per_hour:.2f}/h at that throughput: "
        f"${cost_per_1000_reviews(price_per_hour, rate):.4f} per 1,000 reviews",
    ]
    return "\n".join(lines)


def _check_input(path: Path) -> str:
    """The pandas reader for ``path``, once its format is known and the file exists."""
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise SystemExit(f"reviewkit: cannot read {path}: use .csv, .parquet or .jsonl")
    if not path.is_file():
        raise SystemExit(f"reviewkit: input file {path} does not exist")
    return reader


def _read(path: Path) -> Any:
    import pandas as pd

    reader = _check_input(path)
    try:
        if reader == "read_json":
            return pd.read_json(path, lines=path.suffix.lower() == ".jsonl")
        return getattr(pd, reader)(path)
    except Exception as exc:  # unreadable, empty or malformed: say which file and why
        raise SystemExit(f"reviewkit: cannot read {path}: {type(exc).__name__}: {exc}") from None


def _check_output(out_path: Path, in_path: Path) -> None:
    """Refuse an output the run could not write, before minutes of loading and analysis."""
    if out_path.suffix.lower() not in _WRITERS:
        raise SystemExit(f"reviewkit: cannot write {out_path}: use .csv, .parquet or .jsonl")
    if out_path.resolve() == in_path.resolve():
        raise SystemExit(f"reviewkit: the output {out_path} would overwrite the input; choose another -o")
    try:
        out_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SystemExit(f"reviewkit: cannot create the output folder {out_path.parent}: {exc}") from None
    if out_path.is_dir() or not os.access(out_path.parent, os.W_OK):
        raise SystemExit(f"reviewkit: cannot write {out_path}: not a writable file path")


def _check_labels(labels: list[str]) -> None:
    from reviewkit.prompts import default_templates

    try:
        default_templates(labels)
    except ValueError as exc:
        raise SystemExit(f"reviewkit: --labels {' '.join(labels)}: {exc}") from None


def _check_aspects(args: argparse.Namespace) -> None:
    """What ``analyze`` would refuse about the aspects (a label or the text column taking an aspect's
    name), refused before the engine loads, as argparse refuses a bad value (exit status 2)."""
    if not args.aspects:
        return
    from reviewkit.analysis import check_aspects  # analyze's own check: one definition
    from reviewkit.aspect_prompts import AspectError

    try:
        check_aspects(args.aspects, args.labels, args.text)
    except AspectError as exc:
        print(f"reviewkit analyze: error: argument --aspects: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _write(df: Any, path: Path) -> None:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        df.to_csv(path, index=False)
    elif suffix in (".parquet", ".pq"):
        df.to_parquet(path, index=False)
    else:
        df.to_json(path, orient="records", lines=True, force_ascii=False)
