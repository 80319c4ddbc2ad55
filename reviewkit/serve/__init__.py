"""``reviewkit serve``: the seed's HTTP API (``POST /api/v1/sentiment/analyze``) over the loaded engine.

    from reviewkit.serve import app, run
    run(app(engine), host="127.0.0.1", port=8000)

Needs the ``serve`` extra (FastAPI, uvicorn); importing ``reviewkit`` does not import it.
"""

from __future__ import annotations

from reviewkit.serve.application import app
from reviewkit.serve.runner import run

__all__ = ["app", "run"]
