"""``reviewkit`` command line: the demo, files for pandas pipelines, the server and the cache.

    reviewkit demo                                   # bundled reviews, summary, figures
    reviewkit analyze reviews.csv -o scored.parquet --text content
    reviewkit analyze reviews.csv --url http://POD:8000/v1     # on a vLLM server elsewhere
    reviewkit cache info | clear [--model ID]        # the on-disk result cache
    reviewkit serve --port 8000                      # the seed's HTTP API (see README)

One module per command (:mod:`.analyze` for ``analyze`` and ``demo``, :mod:`.serve`,
:mod:`.cache`); the engine flags they share are defined once in :mod:`.engine_options`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from reviewkit.cli import analyze, cache, serve


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reviewkit", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress and run figures")
    sub = parser.add_subparsers(dest="command", required=True)
    analyze.add_parsers(sub)
    cache.add_parser(sub)
    serve.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.verbose:  # vLLM's warnings too (by default a load shows reviewkit's status only)
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s - %(levelname)s - %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S",
    )
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
