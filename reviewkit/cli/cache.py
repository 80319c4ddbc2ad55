"""``reviewkit cache info|clear``: see or clear the on-disk result cache.

Standard library and :mod:`reviewkit.cache` only, so it never loads vllm or an engine.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from reviewkit.cache import ResultCache, cache_info


def add_parser(sub: Any) -> None:
    cache = sub.add_parser("cache", help="see or clear the on-disk result cache (REVIEWKIT_CACHE_DIR)")
    cache.add_argument(
        "action", choices=["info", "clear"], help="info: path, entries, size, per model; clear: delete entries"
    )
    cache.add_argument("--model", default=None, help="only this model's entries (its id as `cache info` lists it)")
    cache.add_argument("--json", action="store_true", help="info as JSON")
    cache.set_defaults(func=cmd_cache)


def cmd_cache(args: argparse.Namespace) -> int:
    if args.action == "info":
        info = cache_info()
        if args.model is not None:
            info.models = {m: v for m, v in info.models.items() if m == args.model}
        print(json.dumps(info.as_dict(), indent=2) if args.json else info)
        return 0
    cache = ResultCache()
    if not cache.enabled:
        print(f"reviewkit: cannot clear the result cache {cache.path}: {cache.disabled_reason}", file=sys.stderr)
        return 1
    count = cache.clear(model=args.model)
    if cache.write_error:
        print(f"reviewkit: clearing {cache.path} failed: {cache.write_error}", file=sys.stderr)
        return 1
    which = f" of model {args.model!r}" if args.model is not None else ""
    print(f"deleted {count:,} entries{which} from {cache.path}")
    cache.close()
    return 0
