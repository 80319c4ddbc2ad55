"""The remote engine's local copy of the served model's tokenizer: loading it, and its fingerprint.

Prompts go to the server as token ids, so they are built here with the served model's
tokenizer (checked against the server's on connect); its fingerprint is part of the
result cache's key, so another tokenizer never reuses the scores of the first.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from reviewkit.engines.remote_http import RemoteCheckError


def fingerprint(tokenizer: Any) -> str:
    """A short digest of the tokenizer: its vocabulary size and how it splits the prompts' prefixes."""
    from reviewkit.prompts import default_templates

    digest = hashlib.sha256(str(len(tokenizer)).encode())
    for _, template in sorted(default_templates().items()):
        digest.update(repr(list(tokenizer(template.prefix_text())["input_ids"])).encode())
    return digest.hexdigest()[:12]


def load_tokenizer(name: str) -> Any:
    """The served model's tokenizer, loaded here (``"embedded"``: the packaged model's)."""
    try:
        from transformers import AutoTokenizer
    except ImportError as exc:
        raise ImportError("a remote engine tokenizes locally: pip install 'reviewkit[remote]'") from exc
    path = embedded_copy(name)
    try:
        return AutoTokenizer.from_pretrained(path or name)
    except Exception as exc:  # noqa: BLE001 - transformers raises many kinds
        raise RemoteCheckError(
            f"cannot load the tokenizer of {name!r} here ({type(exc).__name__}): pass "
            "tokenizer=<the served model's Hugging Face id or a local copy of its folder> "
            "to reviewkit.connect"
        ) from None


def embedded_copy(name: str) -> str | None:
    """The local embedded model folder when ``name`` is ``"embedded"`` or a server-side copy of it."""
    if name != "embedded" and (Path(name).exists() or not Path(name).name.startswith("gemma-3-270m-")):
        return None
    try:
        from reviewkit import embedded

        if name != "embedded" and Path(name).name != embedded.model_dir().name:
            return None
        return str(embedded.ensure_converted())
    except ImportError:  # the embedded model's package is not installed here
        return None
