"""``reviewkit serve``: the seed's HTTP API (``POST /api/v1/sentiment/analyze``) over the loaded engine.

    from reviewkit.serve import app, run
    run(app(engine), host="127.0.0.1", port=8000)

Needs the ``serve`` extra (FastAPI, uvicorn); importing ``reviewkit`` does not import it.
"""

from __future__ import annotations

from typing import Any

__all__ = ["app", "run"]


def __getattr__(name: str) -> Any:
    # Lazy, so the command line's parser (reviewkit.cli.serve) needs no FastAPI.
    if name == "app":
        from reviewkit.serve.application import app

        return app
    if name == "run":
        from reviewkit.serve.runner import run

        return run
    raise AttributeError(f"module 'reviewkit.serve' has no attribute {name!r}")
