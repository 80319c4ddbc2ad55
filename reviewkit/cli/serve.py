"""``reviewkit serve``: its flags and what it runs."""

from __future__ import annotations

import argparse
import logging
import os
from typing import Any

from reviewkit.cli.engine_options import add_engine_flags, add_labels_flag, open_engine

#: ``reviewkit serve``'s own key (a remote engine's key is ``REVIEWKIT_ENGINE_API_KEY``).
API_KEY_ENV = "REVIEWKIT_API_KEY"


def add_parser(sub: Any) -> None:
    p = sub.add_parser("serve", help="serve the seed's HTTP API (POST /api/v1/sentiment/analyze) over the engine")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    add_engine_flags(p)
    p.add_argument("--api-key", default=None,
                   help=f"require 'Authorization: Bearer KEY' on all routes but /health (default: ${API_KEY_ENV}; "
                        "prefer the variable: a flag shows in `ps`)")
    add_labels_flag(p)
    p.add_argument("--no-cache", action="store_true", help="bypass the on-disk result cache")
    p.add_argument("--max-reviews", type=int, default=1000, help="reviews per request; more get 413 (default 1000)")
    p.add_argument("--max-body-bytes", type=int, default=1_000_000, help="body size; larger get 413 (default 1 MB)")
    p.add_argument("--batch-wait-ms", type=float, default=5.0,
                   help="how long a request waits for others to share its engine call (default 5)")
    p.add_argument("--idle-after", type=float, default=10.0, metavar="SECONDS",
                   help="/health reads busy until this long after the last request (default 10)")
    p.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    """Load (or connect to) the engine first, then accept requests; exit 0 after a SIGTERM drain."""
    from reviewkit import serve

    log = logging.getLogger("reviewkit.serve")
    for name in ("reviewkit.serve", "uvicorn.error"):  # one line per request, even without -v
        logging.getLogger(name).setLevel(logging.INFO)
    api_key = args.api_key if args.api_key is not None else os.environ.get(API_KEY_ENV)
    with open_engine(args) as engine:
        application = serve.app(engine, api_key=api_key or "", max_reviews=args.max_reviews,
                                max_body_bytes=args.max_body_bytes, batch_wait_ms=args.batch_wait_ms,
                                idle_after_s=args.idle_after, labels=args.labels, cache=not args.no_cache)
        log.info("serving %s on http://%s:%d (auth %s; at most %d reviews and %d bytes per request)",
                 engine.model_id, args.host, args.port, "on" if api_key else "off", args.max_reviews,
                 args.max_body_bytes)
        if args.host not in ("127.0.0.1", "localhost", "::1") and not api_key:
            log.warning("listening on %s without an API key: anyone who can reach the port can use the engine",
                        args.host)
        try:
            return serve.run(application, args.host, args.port)
        except KeyboardInterrupt:
            return 130
