"""``reviewkit serve``: its flags and what it runs."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Any

from reviewkit.cli.engine_options import add_engine_flags, add_labels_flag, open_engine
from reviewkit.serve import limits as serve_limits

#: ``reviewkit serve``'s own key (a remote engine's key is ``REVIEWKIT_ENGINE_API_KEY``).
API_KEY_ENV = "REVIEWKIT_API_KEY"

log = logging.getLogger("reviewkit.serve")


def add_parser(sub: Any) -> None:
    p = sub.add_parser("serve", help="serve the seed's HTTP API (POST /api/v1/sentiment/analyze) over the engine")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    add_engine_flags(p)
    p.add_argument(
        "--api-key-file",
        default=None,
        metavar="PATH",
        help="require 'Authorization: Bearer KEY' on all routes but /health, KEY being this file's "
        f"first line (default: ${API_KEY_ENV}; unset: no auth)",
    )
    p.add_argument(
        "--api-key",
        default=None,
        help=f"the key itself: avoid, it shows in `ps` to every user of the machine (use ${API_KEY_ENV} "
        "or --api-key-file)",
    )
    add_labels_flag(p)
    p.add_argument("--no-cache", action="store_true", help="bypass the on-disk result cache")
    serve_limits.add_flags(p)
    p.set_defaults(func=cmd_serve)


def read_api_key(args: argparse.Namespace) -> str | None:
    """The server's key: ``--api-key-file``, else ``--api-key`` (with a warning), else ``$REVIEWKIT_API_KEY``."""
    if args.api_key_file is not None and args.api_key is not None:
        raise SystemExit("reviewkit serve: give --api-key-file or --api-key, not both")
    if args.api_key_file is not None:
        try:
            lines = Path(args.api_key_file).read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise SystemExit(f"reviewkit serve: cannot read --api-key-file: {exc}") from None
        key = lines[0].strip() if lines else ""
        if not key:
            raise SystemExit(f"reviewkit serve: --api-key-file {args.api_key_file} is empty")
        return key
    if args.api_key is not None:
        log.warning(
            "--api-key shows the key in `ps` to every user of this machine: use $%s or --api-key-file", API_KEY_ENV
        )
        return args.api_key
    return os.environ.get(API_KEY_ENV)


def cmd_serve(args: argparse.Namespace) -> int:
    """Load (or connect to) the engine first, then accept requests; exit 0 after a SIGTERM drain, 3 if the
    engine died."""
    from reviewkit import serve

    for name in ("reviewkit.serve", "uvicorn.error"):  # one line per request, even without -v
        logging.getLogger(name).setLevel(logging.INFO)
    api_key = read_api_key(args)
    limits = serve_limits.from_args(args)
    with open_engine(args) as engine:
        application = serve.app(
            engine, api_key=api_key or "", labels=args.labels, cache=not args.no_cache, limits=limits
        )
        log.info(
            "serving %s on http://%s:%d (auth %s; at most %d reviews and %d bytes per request)",
            engine.model_id,
            args.host,
            args.port,
            "on" if api_key else "off",
            limits.max_reviews,
            limits.max_body_bytes,
        )
        if args.host not in ("127.0.0.1", "localhost", "::1") and not api_key:
            log.warning(
                "listening on %s without an API key: anyone who can reach the port can use the engine", args.host
            )
        try:
            return serve.run(application, args.host, args.port)
        except KeyboardInterrupt:
            return 130
