"""``reviewkit serve``: the seed's HTTP API (``POST /api/v1/sentiment/analyze``) over the loaded engine.

    from reviewkit.serve import app, run
    run(app(engine), host="127.0.0.1", port=8000)

Needs the ``serve`` extra (FastAPI, uvicorn); importing ``reviewkit`` does not import it.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Limits", "ThreadServer", "app", "run"]


def __getattr__(name: str) -> Any:
    # Lazy, so the command line's parser (reviewkit.cli.serve) needs no FastAPI.
    if name == "app":
        from reviewkit.serve.application import app

        return app
    if name in ("run", "ThreadServer"):
        from reviewkit.serve import runner

        return getattr(runner, name)
    if name == "Limits":
        from reviewkit.serve.limits import Limits

        return Limits
    raise AttributeError(f"module 'reviewkit.serve' has no attribute {name!r}")
